"""Training one task's adapter on the frozen backbone, and evaluating it."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from core.backbone import NAFNet, count_parameters
from core.data import PairSet, load_pair
from core.lora import inject_lora, lora_parameter_count, lora_layers
from core.metrics import psnr, ssim
from core.restore import DEFAULT_TILE, restore_tensor
from core.train import Checkpoint, StepCallback, TrainConfig, TrainResult, fit
from core.weights import AdapterMeta


def train_adapter(
    backbone: NAFNet,
    backbone_sha256: str,
    task: str,
    train_pairs: Sequence[tuple[str, str]],
    config: TrainConfig,
    rank_plan: dict[str, int],
    *,
    plan_method: str = "uniform",
    plan_info: dict | None = None,
    lora_mode: str = "weight",
    device: torch.device | str = "cpu",
    checkpoint_path: Path | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
) -> tuple[nn.Module, AdapterMeta, TrainResult]:
    """LoRA on a copy of `backbone` (which is left untouched); returns the adapted model."""
    config.validate()
    model = copy.deepcopy(backbone)
    inject_lora(model, rank_plan, alpha=None, mode=lora_mode)
    params = {
        f"{path}.lora_{ab}": getattr(layer, f"lora_{ab}")
        for path, layer in lora_layers(model).items() for ab in "AB"
    }
    data = PairSet.from_files(train_pairs)
    model.to(device)
    checkpoint = Checkpoint(checkpoint_path, _checkpoint_key(config, rank_plan, backbone_sha256)) if checkpoint_path else None
    result = fit(
        model, params, lambda step, gen: data.sample_batch(config.batch_size, config.patch_size, gen),
        config, device=device, checkpoint=checkpoint, resume=resume, on_step=on_step,
    )
    meta = AdapterMeta(
        task=task, backbone_sha256=backbone_sha256, rank_plan=dict(rank_plan), alpha=None,
        lora_mode=lora_mode, plan_method=plan_method,
        extra={"steps": config.steps, "train_pairs": len(train_pairs), "config": config.to_json(),
               "trainable_params": lora_parameter_count(backbone, rank_plan),
               "backbone_params": count_parameters(backbone), "plan_info": plan_info or {}},
    )
    return model, meta, result


def _checkpoint_key(config: TrainConfig, plan: dict[str, int], sha: str) -> str:
    """A checkpoint only resumes the exact same run."""
    return json.dumps({"config": config.to_json(), "plan": plan, "backbone": sha}, sort_keys=True)


@torch.no_grad()
def evaluate(
    models: dict[str, nn.Module | None],
    pairs: Sequence[tuple[str, str, str]],
    *,
    device: torch.device | str = "cpu",
    tile: int = DEFAULT_TILE,
    on_pair: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[float, float, list]]:
    """PSNR/SSIM per subject over (stem, input, target) pairs; a None model scores the input itself.

    Returns subject -> (mean psnr, mean ssim, [[stem, psnr, ssim], ...]).
    """
    from core.fast import for_inference

    per: dict[str, list] = {name: [] for name in models}
    models = {name: None if m is None else for_inference(m.to(device).eval()) for name, m in models.items()}
    for i, (stem, inp, tgt) in enumerate(pairs):
        x, y = load_pair(inp, tgt)
        for name, m in models.items():
            out = x if m is None else restore_tensor(m, x, tile).cpu()
            per[name].append([stem, psnr(out, y), ssim(out, y)])
        if on_pair:
            on_pair(i + 1, len(pairs))
    return {
        name: (sum(r[1] for r in rows) / len(rows), sum(r[2] for r in rows) / len(rows), rows)
        for name, rows in per.items()
    }
