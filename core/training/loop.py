"""The training loop, shared by adapter training and backbone pre-training.

It knows nothing about the CLI or the store: progress is a callback, checkpoints go to the
path it is given. A checkpoint holds the trained tensors, AdamW's moments, the data
generator's state, the loss curve and the divergence guard's record (core/training/guard.py), so
a run killed at any moment resumes where its last checkpoint left it and draws the same batches
it would have drawn.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.choices import LOSSES, MAX_BATCH_SIZE, MAX_PATCH_SIZE
from colora.core.errors import InvalidInputError
from colora.core.model.weights import read_tensors, save_tensors_atomic
from colora.core.training.distributed import World, peers_guarded
from colora.core.training.guard import DivergenceGuard, Recovery


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 4
    patch_size: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "l1"
    seed: int = 0
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01
    checkpoint_every: int = 100
    log_every: int = 10
    validate_every: int = 0  # steps between validations (0: none); the best validated state is kept
    # decay of an exponential moving average of the trained tensors (BasicSR's params_ema; 0: none):
    # when set, the average, not the last step's tensors, is what training hands back
    ema: float = 0.0

    def validate(self) -> None:
        positive = {
            "steps": self.steps,
            "batch size": self.batch_size,
            "patch size": self.patch_size,
            "checkpoint every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {value}")
        if self.batch_size > MAX_BATCH_SIZE or self.patch_size > MAX_PATCH_SIZE:
            raise InvalidInputError(
                f"batch size at most {MAX_BATCH_SIZE} and patch size at most {MAX_PATCH_SIZE}, "
                f"got {self.batch_size} and {self.patch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInputError(f"learning rate must be a positive number, got {self.lr}")
        if self.loss not in LOSSES:
            raise InvalidInputError(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if not 0.0 <= self.ema < 1.0:
            raise InvalidInputError(f"the EMA decay must be at least 0 and below 1, got {self.ema}", hint="try 0.999")

    def to_json(self) -> str:
        fields = asdict(self)
        if not self.ema:  # as before EMA existed: older checkpoints still resume
            del fields["ema"]
        return json.dumps(fields, sort_keys=True)


@dataclass
class TrainResult:
    steps_done: int
    loss_curve: list[tuple[int, float]]
    wall_time_s: float
    resumed_from: int = 0
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation score)
    best_step: int | None = None  # the validated step whose parameters were kept (None: no validation)
    recoveries: list[Recovery] = field(default_factory=list)  # divergences this run came back from
    skipped_steps: int = 0  # steps whose update was skipped, their loss far above the recent ones

    @property
    def final_loss(self) -> float:
        return self.loss_curve[-1][1] if self.loss_curve else float("nan")


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    # PSNR loss: minimise -PSNR, i.e. 10*log10(MSE), per image then averaged
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(mse + 1e-8)).mean()


# (step, generator) -> a batch; under torchrun also `keep`: this process's samples of the global batch
BatchFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
StepCallback = Callable[[int, int, float], None]
Validator = Callable[[nn.Module], float]  # a score of the model in eval mode, higher is better (PSNR)


@dataclass
class Best:
    """The best validated parameters so far."""

    step: int
    score: float
    params: dict[str, torch.Tensor]


class Checkpoint:
    """Trained tensors + optimizer moments + generator state (+ the guard's record) in one safetensors file."""

    def __init__(self, path: Path, config_json: str):
        self.path = Path(path)
        self.config_json = config_json

    def save(
        self,
        step: int,
        params: dict[str, nn.Parameter],
        opt: torch.optim.AdamW,
        gen: torch.Generator,
        curve: list,
        wall: float,
        val_curve: list | None = None,
        best: Best | None = None,
        ema: dict[str, torch.Tensor] | None = None,
        guard: str | None = None,
    ) -> None:
        tensors = {f"param.{k}": p.detach().cpu().contiguous() for k, p in params.items()}
        if ema is not None:
            tensors.update({f"ema.{k}": t.detach().cpu().contiguous() for k, t in ema.items()})
        if best is not None:
            tensors.update({f"best.{k}": t.detach().cpu().contiguous() for k, t in best.params.items()})
        index = {id(p): k for k, p in params.items()}
        for p, state in opt.state.items():
            name = index[id(p)]
            for key in ("exp_avg", "exp_avg_sq"):
                tensors[f"adam.{key}.{name}"] = state[key].detach().cpu().contiguous()
            tensors[f"adam.step.{name}"] = torch.as_tensor(state["step"], dtype=torch.float64).reshape(1).cpu()
        tensors["generator_state"] = gen.get_state()
        meta = {
            "step": str(step),
            "config": self.config_json,
            "curve": json.dumps(curve),
            "wall": str(wall),
            "val_curve": json.dumps(val_curve or []),
            "best": json.dumps([best.step, best.score] if best is not None else None),
        }
        if guard is not None:  # the divergence guard's recent losses and recoveries
            meta["guard"] = guard
        save_tensors_atomic(self.path, tensors, meta)

    def load(
        self,
        params: dict[str, nn.Parameter],
        opt: torch.optim.AdamW,
        gen: torch.Generator,
        ema: dict[str, torch.Tensor] | None = None,
    ) -> tuple[int, list, float, list, Best | None, str | None]:
        """Restores params, the optimizer and the generator (and `ema`'s tensors, in place); the last
        value is the divergence guard's saved state (None in checkpoints from before it)."""
        tensors, meta = read_tensors(self.path)
        if meta.get("config") != self.config_json:
            raise InvalidInputError(
                "the checkpoint was written with other training settings",
                hint="resume with the same options (under torchrun, as many processes too), or start over "
                "without --resume",
            )
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(tensors[f"param.{k}"])
        for k, p in params.items():
            if f"adam.exp_avg.{k}" in tensors:
                opt.state[p] = {
                    "step": tensors[f"adam.step.{k}"].reshape(()).to(torch.float32),
                    "exp_avg": torch.empty_like(p).copy_(tensors[f"adam.exp_avg.{k}"]),  # p's memory format
                    "exp_avg_sq": torch.empty_like(p).copy_(tensors[f"adam.exp_avg_sq.{k}"]),
                }
        gen.set_state(tensors["generator_state"])
        if ema is not None:
            with torch.no_grad():
                for k, t in ema.items():
                    t.copy_(tensors[f"ema.{k}"])
        best = json.loads(meta.get("best", "null"))
        if best is not None:
            best = Best(int(best[0]), float(best[1]), {k: tensors[f"best.{k}"] for k in params})
        return (
            int(meta["step"]),
            [tuple(x) for x in json.loads(meta["curve"])],
            float(meta["wall"]),
            [tuple(x) for x in json.loads(meta.get("val_curve", "[]"))],
            best,
            meta.get("guard"),
        )


def fit(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    make_batch: BatchFn,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
    validate: Validator | None = None,
    world: World | None = None,
    score_start: bool = False,
) -> TrainResult:
    """Train `params` (the only tensors that change) of `model` for config.steps steps.

    With `world` (torchrun), this process trains on its slice of each step's global batch of
    config.batch_size * world.size (`make_batch(step, gen, keep=...)`) and gradients are averaged
    across processes; only the leader validates, reports progress and writes checkpoints.
    With `validate` and config.validate_every, the model is scored every so many steps (and at
    the end) and the best-scoring parameters are the ones handed back: a run that overfits its
    few pairs keeps its best point (`score_start`: the starting parameters are a candidate too,
    step 0: a warm start that training only makes worse is kept as it was). Trains in channels_last
    memory format (oneDNN's fast path for convolutions, and a fused per-pixel LayerNorm; see
    bench/speed.py); the model is handed back in the default format.
    """
    config.validate()
    device = torch.device(device)
    model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    start, curve, wall_before, val_curve, best, guard_state = 0, [], 0.0, [], None, None
    ema = {k: p.detach().clone() for k, p in params.items()} if config.ema else None
    if resume and checkpoint is not None and checkpoint.path.exists():
        start, curve, wall_before, val_curve, best, guard_state = checkpoint.load(params, opt, gen, ema)
    leader = world is None or world.leader
    if world is not None:
        world.same_parameters(params.values())
        validate = validate if leader else None
        if ema is not None and start == 0:  # the average starts from the parameters every process shares
            ema = {k: p.detach().clone() for k, p in params.items()}
    if score_start and start == 0 and validate is not None and config.validate_every:
        score = _score(model, validate)
        val_curve.append((0, score))
        best = Best(0, score, {k: p.detach().clone() for k, p in params.items()})
    # every process sees the same global loss, so all of them recover at the same steps
    guard = DivergenceGuard(params, opt, ema, config.loss, start, guard_state)
    t0 = time.perf_counter()
    with peers_guarded(world):  # a process of the job that dies fails the others with one clear error
        window: list[float] = []
        smoothed = None  # EMA of the loss, for the progress bar
        for step in range(start, config.steps):
            for group in opt.param_groups:
                group["lr"] = learning_rate(config, step) * guard.lr_scale
            x, y = (
                make_batch(step, gen) if world is None else make_batch(step, gen, keep=world.shard(config.batch_size))
            )
            x = x.to(device, memory_format=torch.channels_last)
            loss = restoration_loss(model(x), y.to(device), config.loss)
            value = loss.item() if world is None else world.mean(loss)  # the global batch's loss, in every process
            # a divergence puts back a state from before the blow-up: this step then makes no update
            if guard.healthy(step, value):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world is not None:
                    world.average_gradients(params.values())
                opt.step()
                if ema is not None:
                    with torch.no_grad():
                        for k, p in params.items():
                            ema[k].lerp_(p, 1.0 - config.ema)  # ema = decay * ema + (1 - decay) * p
                window.append(value)
                smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            else:
                del loss  # its graph would stay alive through the next forward pass
            done = step + 1
            if (done % config.log_every == 0 or done == config.steps) and window:
                curve.append((done, sum(window) / len(window)))
                window = []
            if (
                validate is not None
                and config.validate_every
                and (done % config.validate_every == 0 or done == config.steps)
            ):
                score = _score(model, validate)
                val_curve.append((done, score))
                if best is None or score > best.score:
                    best = Best(done, score, {k: p.detach().clone() for k, p in params.items()})
            if on_step is not None and leader:
                on_step(done, config.steps, smoothed if smoothed is not None else value)
            if checkpoint is not None and leader and (done % config.checkpoint_every == 0 or done == config.steps):
                wall = wall_before + time.perf_counter() - t0
                checkpoint.save(done, params, opt, gen, curve, wall, val_curve, best, ema, guard.state_json())
    if best is not None and best.step != config.steps:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(best.params[k])
    elif ema is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(ema[k])
    model.to(memory_format=torch.contiguous_format).eval()
    return TrainResult(
        config.steps,
        curve,
        wall_before + time.perf_counter() - t0,
        resumed_from=start,
        val_curve=val_curve,
        best_step=best.step if best is not None else None,
        recoveries=guard.recoveries,
        skipped_steps=guard.skipped,
    )


def _score(model: nn.Module, validate: Validator) -> float:
    model.eval()
    with torch.no_grad():
        score = float(validate(model))
    model.train()
    return score


def seconds_per_step(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    make_batch: BatchFn,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    steps: int = 8,
) -> float:
    """What one step of this training costs here, now (its data included): the median of a few real
    steps of `model`, a throwaway copy the caller made (for a time budget given in minutes)."""
    stamps: list[float] = []
    probe = replace(config, steps=steps, warmup_steps=1, validate_every=0)
    fit(
        model,
        params,
        make_batch,
        probe,
        device=device,
        on_step=lambda done, total, loss: stamps.append(time.perf_counter()),
    )
    gaps = sorted(b - a for a, b in zip(stamps[2:], stamps[3:]))
    return gaps[len(gaps) // 2]
