"""Training one task's adapter on the frozen backbone."""
from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from core.data.crops import PairSet
from core.model.backbone import NAFNet, count_parameters
from core.model.lora import inject_lora, lora_layers, lora_parameter_count
from core.model.weights import AdapterMeta
from core.training.loop import Checkpoint, StepCallback, TrainConfig, TrainResult, fit


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
    with torch.random.fork_rng(devices=[]):  # LoRA A's initialisation follows the run's seed, nothing else does
        torch.manual_seed(config.seed)
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
