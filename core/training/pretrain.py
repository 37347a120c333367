"""PROD pre-training of the whole backbone on (PROD(clean), clean) crops.

Clean images are held in memory (a few hundred photos, from one or several folders: a pool);
every step draws random crops and degrades each crop with its own random-order chain from
`ProdSampler`. Building a batch (crop, flip, degrade) costs far more than a GPU step, so with
`workers` the crops are built by a pool of processes, one step ahead of the training loop.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from colora.core.data.crops import apply_augment, augment_ops, to_tensor
from colora.core.data.images import is_image_file, load_image
from colora.core.data.prod import ProdSampler, apply_recipe
from colora.core.errors import InvalidInputError, NotFoundError
from colora.core.model.backbone import BackboneConfig, build_backbone, count_parameters
from colora.core.model.weights import save_backbone
from colora.core.training.distributed import World
from colora.core.training.loop import Checkpoint, StepCallback, TrainConfig, TrainResult, fit
from colora.core.training.loop import seconds_per_step as measure_step

MAX_WORKERS = 64


def clean_folders(folders: Path | Sequence[Path]) -> list[Path]:
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def load_clean_images(folders: Path | Sequence[Path], min_side: int) -> list[torch.Tensor]:
    """Every image of at least min_side x min_side in the folders (one pool, in folder then name order)."""
    folders = clean_folders(folders)
    images = []
    for folder in folders:
        if not folder.is_dir():
            raise NotFoundError(f"folder not found: {folder}", hint="give a folder of clean images")
        for f in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
            rgb, _, _ = load_image(f)
            if min(rgb.shape[:2]) >= min_side:
                images.append(to_tensor(rgb).half())
    if not images:
        names = ", ".join(str(f) for f in folders)
        raise InvalidInputError(f"no clean images of at least {min_side}x{min_side} pixels in {names}")
    return images


# A worker process's images: inherited at fork (copy-on-write), never pickled.
_worker_images: list[torch.Tensor] = []


def _start_worker() -> None:
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism


def _build_sample(images: Sequence[torch.Tensor], plan: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    index, top, left, patch, ops, recipe = plan
    clean = apply_augment(images[index][:, top : top + patch, left : left + patch], ops).float()
    return apply_recipe(clean, recipe), clean


def _build_in_worker(plan: tuple) -> tuple[np.ndarray, np.ndarray]:
    x, y = _build_sample(_worker_images, plan)
    return x.numpy(), y.numpy()


class ProdBatches:
    """make_batch for `fit`: random crops of clean images, each degraded by its own chain.

    Every random draw (image, crop, flips, chain and its seeds) is made here, in order, from the
    loop's generator; only the costly building runs in the workers. So a batch is the same with
    or without workers (to float rounding: a worker computes on one thread, this process on
    torch's thread count), and a checkpoint's generator state resumes either way. With workers the
    next step's batch is built while this one trains: its draws are made from a copy of the
    generator and used only if the loop's generator then stands exactly where the copy started.
    Use as a context manager (or call close()) to end the workers.
    """

    def __init__(
        self, images: Sequence[torch.Tensor], sampler: ProdSampler, batch_size: int, patch: int, workers: int = 0
    ):
        if not 0 <= workers <= MAX_WORKERS:
            raise InvalidInputError(f"workers must be between 0 and {MAX_WORKERS}, got {workers}")
        self.images, self.sampler, self.batch_size, self.patch = list(images), sampler, batch_size, patch
        self.pool = None
        self._ahead = None  # (generator state, keep, pending result) of the next step's batch
        if workers:
            global _worker_images
            _worker_images = self.images
            # fork: the workers inherit the images without a copy; they never touch CUDA
            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(workers, initializer=_start_worker)

    def _plans(self, gen: torch.Generator, keep: range | None) -> list[tuple]:
        """`keep`: plan only these samples (every draw is still made, in order: see sample_batch)."""
        plans = []
        for i in range(self.batch_size):
            index = int(torch.randint(len(self.images), (1,), generator=gen))
            h, w = self.images[index].shape[-2:]
            top = int(torch.randint(h - self.patch + 1, (1,), generator=gen))
            left = int(torch.randint(w - self.patch + 1, (1,), generator=gen))
            ops = augment_ops(gen)
            recipe = self.sampler.sample_recipe(gen)  # its steps carry their own seeds: applying draws nothing
            if keep is None or i in keep:
                plans.append((index, top, left, self.patch, ops, recipe))
        return plans

    def __call__(self, step: int, gen: torch.Generator, keep: range | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        state = gen.get_state()
        plans = self._plans(gen, keep)
        if self.pool is None:
            xs, ys = zip(*(_build_sample(self.images, plan) for plan in plans))
            return torch.stack(xs), torch.stack(ys)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[1] == keep and torch.equal(ahead[0], state):
            built = ahead[2].get()
        else:
            built = self.pool.map(_build_in_worker, plans)
        copy_gen = torch.Generator()
        copy_gen.set_state(gen.get_state())
        self._ahead = (gen.get_state(), keep, self.pool.map_async(_build_in_worker, self._plans(copy_gen, keep)))
        return (
            torch.stack([torch.from_numpy(x) for x, _ in built]),
            torch.stack([torch.from_numpy(y) for _, y in built]),
        )

    def close(self) -> None:
        if self.pool is not None:
            if self._ahead is not None:  # let the batch in flight arrive: a worker blocked on a full
                self._ahead[2].wait(timeout=600)  # pipe would never exit, and terminate() would hang
                self._ahead = None
            self.pool.close()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> "ProdBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def seconds_per_step(
    model: torch.nn.Module, batches: ProdBatches, config: TrainConfig, device, steps: int = 10
) -> float:
    """What one pre-training step costs here, now (data included), on a throwaway copy of the model."""
    probe = copy.deepcopy(model)
    return measure_step(probe, dict(probe.named_parameters()), batches, config, device=device, steps=steps)


def pretrain(
    clean_dir: Path | Sequence[Path],
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
    workers: int = 0,
    minutes: float | None = None,
    on_start: Callable[[TrainConfig], None] | None = None,
) -> tuple[torch.nn.Module, TrainResult, dict]:
    """Returns (model, result, recipe) where recipe describes data, sampler and schedule.

    `init` = (a backbone of the same config, its recipe) continues pre-training from its weights:
    one more chunk of a pre-training longer than a session (a fresh schedule on the same data);
    the recipe lists every chunk. `world` (torchrun): data-parallel, config.batch_size per process.
    `workers`: processes that build the batches (0: this one). `minutes`: a time budget instead of
    config.steps (steps measured here on a throwaway copy first). `on_start(config)` is called
    with the run's final config (its step count) just before training starts.
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
    processes = world.size if world is not None else 1
    with ProdBatches(images, sampler, config.batch_size * processes, config.patch_size, workers) as batches:
        if minutes is not None:
            config = _steps_for(minutes, model, batches, config, device, world)
        result = _fit(
            model,
            params,
            batches,
            config,
            backbone_config,
            sampler,
            init,
            device=device,
            checkpoint_path=checkpoint_path,
            resume=resume,
            on_step=on_step,
            world=world,
            on_start=on_start,
        )
    recipe = {
        "method": "PROD (random-order degradation pre-training)",
        "data": {"folder": " + ".join("/".join(f.parts[-2:]) for f in clean_folders(clean_dir)), "images": len(images)},
        "sampler": sampler.describe(),
        "train": {k: v for k, v in config.__dict__.items()},
        "processes": processes,
        "params": count_parameters(model),
        "wall_time_s": round(result.wall_time_s, 1),
    }
    if workers:
        recipe["workers"] = workers
    earlier = [dict(c) for c in (init[1].get("chunks") or [c for c in [_chunk(init[1])] if c])] if init else []
    start_train = init[1].get("train") if init is not None else None
    if earlier and "batch_size" not in earlier[-1] and isinstance(start_train, dict):  # recorded before chunks were
        earlier[-1].update({k: start_train[k] for k in ("batch_size", "patch_size") if k in start_train})
    if init is not None and not earlier:  # not a PROD pre-training (an imported NAFNet): say where it started
        recipe["started_from"] = {
            k: v for k, v in init[1].items() if k in ("imported_from", "checkpoint_key", "sha256")
        }
    recipe["chunks"] = [
        *earlier,
        {
            "steps": config.steps,
            "wall_time_s": recipe["wall_time_s"],
            "seed": config.seed,
            "lr": config.lr,
            "batch_size": config.batch_size * processes,
            "patch_size": config.patch_size,
            "device": torch.device(device).type,
            # divergences the chunk came back from, each halving its learning rate from then on
            **({"recoveries": [asdict(r) for r in result.recoveries]} if result.recoveries else {}),
            **({"skipped_steps": result.skipped_steps} if result.skipped_steps else {}),
        },
    ]
    recipe["total_steps"] = sum(c["steps"] for c in recipe["chunks"])
    recipe["total_wall_time_s"] = round(sum(c.get("wall_time_s") or 0 for c in recipe["chunks"]), 1)
    return model.cpu().eval(), result, recipe


def _steps_for(
    minutes: float, model, batches: ProdBatches, config: TrainConfig, device, world: World | None
) -> TrainConfig:
    """The config with as many steps as `minutes` allow at the speed measured here now (under
    torchrun, the leader's count for every process)."""
    if not 0 < minutes <= 7 * 24 * 60:
        raise InvalidInputError(f"minutes must be between 0 and a week, not {minutes}")
    step_s = seconds_per_step(model, batches, config, device)
    steps = max(20, int(minutes * 60 / step_s))
    if world is not None and world.size > 1:
        steps = int(world.share(str(steps)))
    return replace(config, steps=steps, warmup_steps=min(config.warmup_steps, steps // 10))


def _fit(
    model,
    params,
    batches,
    config: TrainConfig,
    backbone_config: BackboneConfig,
    sampler: ProdSampler,
    init,
    *,
    device,
    checkpoint_path,
    resume,
    on_step,
    world,
    on_start,
) -> TrainResult:
    key = {
        "train": config.to_json(),
        "backbone": backbone_config.to_json(),
        "sampler": sampler.describe(),
        "init": None if init is None else init[1].get("sha256"),
    }
    if world is not None and world.size > 1:  # the global batch differs: resume only with as many processes
        key["processes"] = world.size
    checkpoint = Checkpoint(checkpoint_path, json.dumps(key, sort_keys=True)) if checkpoint_path else None
    if on_start is not None:
        on_start(config)
    return fit(
        model,
        params,
        batches,
        config,
        device=device,
        checkpoint=checkpoint,
        resume=resume,
        on_step=on_step,
        world=world,
    )


def _chunk(recipe: dict) -> dict | None:
    """A recipe without chunks (one run) as the first chunk; None for a backbone that was not pre-trained here."""
    train = recipe.get("train", {})
    if not isinstance(train, dict) or not isinstance(train.get("steps"), int):
        return None
    return {
        "steps": train.get("steps"),
        "wall_time_s": recipe.get("wall_time_s"),
        "seed": train.get("seed"),
        "lr": train.get("lr"),
    }


def save_pretrained(path: Path, model: torch.nn.Module, result: TrainResult, recipe: dict, description: str) -> str:
    return save_backbone(
        path,
        model,
        {
            "pretrained": "true",
            "description": description,
            "recipe": json.dumps(recipe),
            "loss_curve": json.dumps(result.loss_curve),
        },
    )
