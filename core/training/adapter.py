"""Training one task's adapter on the frozen backbone."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from colora.core.data.crops import PairSet, load_pair
from colora.core.model.backbone import NAFNet, count_parameters
from colora.core.model.lora import inject_lora, lora_layers, lora_parameter_count
from colora.core.model.weights import AdapterMeta
from colora.core.training.distributed import World
from colora.core.training.loop import Checkpoint, StepCallback, TrainConfig, TrainResult, Validator, fit
from colora.core.training.loop import seconds_per_step as measure_step


def train_adapter(
    backbone: NAFNet,
    backbone_sha256: str,
    task: str,
    train_pairs: Sequence[tuple[str, str]],
    config: TrainConfig,
    rank_plan: dict[str, int],
    *,
    val_pairs: Sequence[tuple[str, str]] = (),
    plan_method: str = "uniform",
    plan_info: dict | None = None,
    lora_mode: str = "weight",
    device: torch.device | str = "cpu",
    checkpoint_path: Path | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
    world: World | None = None,
    warm_start: tuple[dict[str, torch.Tensor], dict] | None = None,
) -> tuple[nn.Module, AdapterMeta, TrainResult]:
    """LoRA on a copy of `backbone` (which is left untouched); returns the adapted model.

    With `val_pairs` and config.validate_every, the adapter is scored on them during training and
    the best-scoring state is the one returned (see `fit`). `world` (torchrun): data-parallel,
    config.batch_size per process.

    `warm_start` (per-layer deltas, a record for the metadata): the LoRA factors start from the
    deltas' rank-r approximations (core/recycle/warm_start.py) instead of zero.
    """
    config.validate()
    model, params = _lora_model(backbone, rank_plan, lora_mode, config.seed)
    warm_record = None
    if warm_start is not None:
        from colora.core.recycle.warm_start import warm_start_lora

        kept = warm_start_lora(model, warm_start[0])
        warm_record = {**warm_start[1], "energy_kept": round(sum(kept.values()) / max(1, len(kept)), 4)}
    data = PairSet.from_files(train_pairs)
    model.to(device)
    processes = world.size if world is not None else 1
    key = _checkpoint_key(config, rank_plan, backbone_sha256, processes)
    checkpoint = Checkpoint(checkpoint_path, key) if checkpoint_path else None
    validate = psnr_validator([load_pair(a, b) for a, b in val_pairs], device) if val_pairs else None
    result = fit(
        model,
        params,
        lambda step, gen, keep=None: data.sample_batch(config.batch_size * processes, config.patch_size, gen, keep),
        config,
        device=device,
        checkpoint=checkpoint,
        resume=resume,
        on_step=on_step,
        validate=validate,
        world=world,
        score_start=warm_start is not None,
    )
    extra = {
        "steps": config.steps,
        "train_pairs": len(train_pairs),
        "config": config.to_json(),
        "trainable_params": lora_parameter_count(backbone, rank_plan),
        "backbone_params": count_parameters(backbone),
        "plan_info": plan_info or {},
    }
    if warm_record is not None:
        extra["warm_start"] = warm_record
    if processes > 1:
        extra["processes"] = processes  # data-parallel: the global batch was batch_size * processes
    if result.recoveries:  # divergences the run came back from, at a lower learning rate
        extra["recoveries"] = [asdict(r) for r in result.recoveries]
    if result.skipped_steps:
        extra["skipped_steps"] = result.skipped_steps
    if result.best_step is not None:
        extra |= {"best_step": result.best_step, "val_curve": result.val_curve, "val_pairs": len(val_pairs)}
    meta = AdapterMeta(
        task=task,
        backbone_sha256=backbone_sha256,
        rank_plan=dict(rank_plan),
        alpha=None,
        lora_mode=lora_mode,
        plan_method=plan_method,
        extra=extra,
    )
    return model, meta, result


def _lora_model(backbone: NAFNet, rank_plan: dict[str, int], lora_mode: str, seed: int):
    """(a copy of the backbone with LoRA layers, its trainable tensors by name)."""
    model = copy.deepcopy(backbone)
    with torch.random.fork_rng(devices=[]):  # LoRA A's initialisation follows the run's seed, nothing else does
        torch.manual_seed(seed)
        inject_lora(model, rank_plan, alpha=None, mode=lora_mode)
    params = {
        f"{path}.lora_{ab}": getattr(layer, f"lora_{ab}") for path, layer in lora_layers(model).items() for ab in "AB"
    }
    return model, params


VALIDATION_CROP = 256  # validation scores the centre of each pair (at most this a side): cheap, steady


def psnr_validator(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], device) -> Validator:
    """Mean PSNR of the model on the centres of (input, target) pairs, in the training format."""
    from colora.core.data.crops import center_crop
    from colora.core.inference.metrics import psnr

    crops = [
        (
            center_crop(x, VALIDATION_CROP)[None].to(device).contiguous(memory_format=torch.channels_last),
            center_crop(y, VALIDATION_CROP)[None],
        )
        for x, y in pairs
    ]

    def score(model: nn.Module) -> float:
        return sum(psnr(model(x).clamp(0, 1).cpu(), y) for x, y in crops) / len(crops)

    return score


def seconds_per_step(
    backbone: NAFNet,
    train_pairs: Sequence[tuple[str, str]],
    config: TrainConfig,
    rank_plan: dict[str, int],
    *,
    lora_mode: str = "weight",
    device="cpu",
    steps: int = 8,
) -> float:
    """What one training step of this adapter costs here, now: the median of a few real steps on a
    throwaway copy (for a training budget given in minutes)."""
    model, params = _lora_model(backbone, rank_plan, lora_mode, config.seed)
    data = PairSet.from_files(train_pairs)
    return measure_step(
        model,
        params,
        lambda step, gen: data.sample_batch(config.batch_size, config.patch_size, gen),
        config,
        device=device,
        steps=steps,
    )


def _checkpoint_key(config: TrainConfig, plan: dict[str, int], sha: str, processes: int = 1) -> str:
    """A checkpoint only resumes the exact same run (the same number of processes too: it sets the batch)."""
    key = {"config": config.to_json(), "plan": plan, "backbone": sha}
    if processes > 1:  # single-process keys stay as they were
        key["processes"] = processes
    return json.dumps(key, sort_keys=True)
