"""PROD pre-training of the whole backbone on (PROD(clean), clean) crops.

Clean images are held in memory (a few hundred photos); every step draws random crops and
degrades each crop with its own random-order chain from `ProdSampler`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from core.model.backbone import BackboneConfig, build_backbone, count_parameters
from core.data.crops import apply_augment, augment_ops, to_tensor
from core.errors import InvalidInputError, NotFoundError
from core.data.images import is_image_file, load_image
from core.data.prod import ProdSampler, apply_recipe
from core.training.distributed import World
from core.training.loop import Checkpoint, StepCallback, TrainConfig, TrainResult, fit
from core.model.weights import save_backbone


def load_clean_images(folder: Path, min_side: int) -> list[torch.Tensor]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"folder not found: {folder}", hint="give a folder of clean images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    images = []
    for f in files:
        rgb, _, _ = load_image(f)
        if min(rgb.shape[:2]) >= min_side:
            images.append(to_tensor(rgb).half())
    if not images:
        raise InvalidInputError(f"no clean images of at least {min_side}x{min_side} pixels in {folder}")
    return images


class ProdBatches:
    """make_batch for `fit`: random crops of clean images, each degraded by its own chain."""

    def __init__(self, images: Sequence[torch.Tensor], sampler: ProdSampler, batch_size: int, patch: int):
        self.images, self.sampler, self.batch_size, self.patch = list(images), sampler, batch_size, patch

    def __call__(self, step: int, gen: torch.Generator, keep: range | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`keep`: build only these samples (every draw is still made, in order: see sample_batch)."""
        xs, ys = [], []
        for i in range(self.batch_size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
            h, w = img.shape[-2:]
            top = int(torch.randint(h - self.patch + 1, (1,), generator=gen))
            left = int(torch.randint(w - self.patch + 1, (1,), generator=gen))
            ops = augment_ops(gen)
            recipe = self.sampler.sample_recipe(gen)  # its steps carry their own seeds: applying draws nothing
            if keep is not None and i not in keep:
                continue
            clean = apply_augment(img[:, top : top + self.patch, left : left + self.patch], ops).float()
            xs.append(apply_recipe(clean, recipe))
            ys.append(clean)
        return torch.stack(xs), torch.stack(ys)


def pretrain(
    clean_dir: Path,
    backbone_config: BackboneConfig,
    config: TrainConfig,
    sampler: ProdSampler,
    *,
    device: torch.device | str = "cpu",
    checkpoint_path: Path | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
    init: tuple[torch.nn.Module, dict] | None = None,
    world: World | None = None,
) -> tuple[torch.nn.Module, TrainResult, dict]:
    """Returns (model, result, recipe) where recipe describes data, sampler and schedule.

    `init` = (a backbone of the same config, its recipe) continues pre-training from its weights:
    one more chunk of a pre-training longer than a session (a fresh schedule on the same data);
    the recipe lists every chunk. `world` (torchrun): data-parallel, config.batch_size per process.
    """
    images = load_clean_images(clean_dir, config.patch_size)
    torch.manual_seed(config.seed)
    model = build_backbone(backbone_config, config.seed)
    if init is not None:
        model.load_state_dict(init[0].state_dict())
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    # a checkpoint resumes only the same run: same schedule, size, start and degradations (names and ranges)
    key = {"train": config.to_json(), "backbone": backbone_config.to_json(), "sampler": sampler.describe(),
           "init": None if init is None else init[1].get("sha256")}
    if world is not None and world.size > 1:  # the global batch differs: resume only with as many processes
        key["processes"] = world.size
    checkpoint = Checkpoint(checkpoint_path, json.dumps(key, sort_keys=True)) if checkpoint_path else None
    processes = world.size if world is not None else 1
    batches = ProdBatches(images, sampler, config.batch_size * processes, config.patch_size)
    result = fit(model, params, batches, config, device=device, checkpoint=checkpoint, resume=resume, on_step=on_step,
                 world=world)
    recipe = {
        "method": "PROD (random-order degradation pre-training)",
        "data": {"folder": Path(clean_dir).name, "images": len(images)},
        "sampler": sampler.describe(),
        "train": {k: v for k, v in config.__dict__.items()},
        "processes": world.size if world is not None else 1,
        "params": count_parameters(model),
        "wall_time_s": round(result.wall_time_s, 1),
    }
    earlier = (init[1].get("chunks") or [c for c in [_chunk(init[1])] if c]) if init is not None else []
    if init is not None and not earlier:  # not a PROD pre-training (an imported NAFNet): say where it started
        recipe["started_from"] = {k: v for k, v in init[1].items() if k in ("imported_from", "checkpoint_key", "sha256")}
    recipe["chunks"] = [*earlier, {"steps": config.steps, "wall_time_s": recipe["wall_time_s"], "seed": config.seed,
                                   "lr": config.lr}]
    recipe["total_steps"] = sum(c["steps"] for c in recipe["chunks"])
    recipe["total_wall_time_s"] = round(sum(c.get("wall_time_s") or 0 for c in recipe["chunks"]), 1)
    return model.cpu().eval(), result, recipe


def _chunk(recipe: dict) -> dict | None:
    """A recipe without chunks (one run) as the first chunk; None for a backbone that was not pre-trained here."""
    train = recipe.get("train", {})
    if not isinstance(train, dict) or not isinstance(train.get("steps"), int):
        return None
    return {"steps": train.get("steps"), "wall_time_s": recipe.get("wall_time_s"), "seed": train.get("seed"),
            "lr": train.get("lr")}


def save_pretrained(path: Path, model: torch.nn.Module, result: TrainResult, recipe: dict, description: str) -> str:
    return save_backbone(path, model, {
        "pretrained": "true",
        "description": description,
        "recipe": json.dumps(recipe),
        "loss_curve": json.dumps(result.loss_curve),
    })
