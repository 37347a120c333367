"""Recovering from a training run that diverges, instead of training on from the wreck.

A long run at a high learning rate can blow up after hundreds of quiet steps (measured: a σ25
adapter at lr 4e-3, 2068 steps: gradient norm under 0.08 for 350 steps, 173 at step 375, loss
108 at 410, never back). The guard keeps a few snapshots of the trained tensors, AdamW's moments
and the weight average (on the CPU), taken every `EVERY` steps at steps whose loss was ordinary.

A step whose loss is far above the recent median makes no update: one unlucky batch costs one
step. When the next step is far above it too, or a loss is not finite, the run has diverged: the
guard puts back the newest snapshot at least `MARGIN` steps old (an update can start a blow-up
tens of steps before the loss shows it), halves the learning rate for the rest of the run, and
goes on. Diverging again from the same snapshot goes back one snapshot further. A run with no
such loss is untouched: the guard only copies tensors, so its numbers are the same bit for bit.

Its record (recent losses, recoveries, skipped steps) travels in training checkpoints, so a resumed run judges
losses as the interrupted one did and keeps its lowered rate; snapshots do not (the checkpoint's
own state is the first snapshot of a resumed run).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass

import torch
from torch import nn

from colora.core.errors import InvalidInputError

EVERY = 50  # steps between snapshots
KEEP = 3  # snapshots kept
MARGIN = EVERY  # a snapshot put back is at least this many steps older than the divergence, when one is
FACTOR = 20.0  # a loss this many times the recent median is an outlier (measured at the defaults: < 7x)
SETTLED = 2.0  # a snapshot is only taken at a step whose loss is at most this times the median
HISTORY = 100  # the recent losses the median is taken over
MIN_HISTORY = 20  # before this many losses only a non-finite loss counts as a divergence
MAX_RECOVERIES = 4  # then the learning rate is 1/16 of what was asked: give up with an error


@dataclass(frozen=True)
class Recovery:
    step: int  # the step whose loss showed the divergence
    back_to: int  # the step whose state was put back
    lr_scale: float  # the learning rate's factor from then on


@dataclass(eq=False)  # compared by identity: a snapshot is one moment of one run
class _Snapshot:
    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict
    ema: dict[str, torch.Tensor] | None


def loss_scale(value: float, kind: str) -> float:
    """The loss as a positive error magnitude, so that "far above" is one ratio for every loss:
    the PSNR loss is 10*log10(MSE), so its magnitude is the RMSE, comparable to an L1 error."""
    return 10 ** (value / 20) if kind == "psnr" else value


class DivergenceGuard:
    def __init__(
        self,
        params: dict[str, nn.Parameter],
        opt: torch.optim.Optimizer,
        ema: dict[str, torch.Tensor] | None,
        loss_kind: str,
        start: int,
        saved: str | None = None,
    ):
        """`saved`: `state_json()` of the run this one resumes (None: a new run)."""
        self.params, self.opt, self.ema, self.loss_kind = params, opt, ema, loss_kind
        # skipped: outlier steps that no divergence followed (one unlucky batch each);
        # outlier_before: the previous step's loss was an outlier
        history, self.recoveries, self.skipped, self._outlier_before = (
            _parse_state(saved) if saved else ([], [], 0, False)
        )
        self._history: deque[float] = deque(history, maxlen=HISTORY)
        self._snapshots: list[_Snapshot] = [self._snapshot(start)]
        self._next_snapshot = start + EVERY
        self._last_back_step: int | None = None  # the snapshot the last recovery put back

    @property
    def lr_scale(self) -> float:
        return 0.5 ** len(self.recoveries)

    def healthy(self, step: int, value: float) -> bool:
        """Whether step `step` (0-based, before its update) may update; False: skip its update (an
        outlier, or a divergence whose state was just put back). Raises when recovering no longer helps."""
        scale = loss_scale(value, self.loss_kind) if math.isfinite(value) else math.inf
        median = statistics.median(self._history) if len(self._history) >= MIN_HISTORY else None
        outlier = not math.isfinite(scale) or (median is not None and scale > FACTOR * max(median, 1e-12))
        if outlier:
            if not math.isfinite(scale) or self._outlier_before:
                self._recover(step, value)
                self.skipped -= self._outlier_before  # that step was the divergence's start, not one unlucky batch
                self._outlier_before = False
            else:
                self._outlier_before = True
                self.skipped += 1
            return False
        self._outlier_before = False
        self._history.append(scale)
        if step >= self._next_snapshot and (median is None or scale <= SETTLED * median):
            if len(self._snapshots) == KEEP:
                self._snapshots.pop(0)  # before copying: never KEEP + 1 copies at once
            self._snapshots.append(self._snapshot(step))
            self._next_snapshot = step + EVERY
        return True

    def state_json(self) -> str:
        return json.dumps(
            {
                "history": list(self._history),
                "recoveries": [asdict(r) for r in self.recoveries],
                "skipped": self.skipped,
                "outlier_before": self._outlier_before,
            }
        )

    def _recover(self, step: int, value: float) -> None:
        if len(self.recoveries) >= MAX_RECOVERIES:
            raise InvalidInputError(
                f"training diverged at step {step + 1} (loss is {value:.4g}) after {MAX_RECOVERIES} recoveries "
                f"at ever lower learning rates",
                hint="lower the learning rate with --lr",
            )
        old_enough = [s for s in self._snapshots if step - s.step >= MARGIN] or self._snapshots[:1]
        back = old_enough[-1]
        where = self._snapshots.index(back)
        if back.step == self._last_back_step and where > 0:  # diverged again from it: one further back
            back = self._snapshots[where - 1]
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(back.params[k])
            if self.ema is not None and back.ema is not None:
                for k, t in self.ema.items():
                    t.copy_(back.ema[k])
        # load_state_dict keeps tensors it is given when dtype and device already match: hand it
        # copies, so the snapshot stays as it was for a later recovery
        self.opt.load_state_dict(copy.deepcopy(back.optimizer))
        self.recoveries.append(Recovery(step + 1, back.step, 0.5 ** (len(self.recoveries) + 1)))
        self._snapshots = [s for s in self._snapshots if s.step <= back.step]
        self._last_back_step = back.step
        self._next_snapshot = step + EVERY

    def _snapshot(self, step: int) -> _Snapshot:
        return _Snapshot(
            step,
            {k: _cpu_copy(p.detach()) for k, p in self.params.items()},
            _cpu_copy(self.opt.state_dict()),
            {k: _cpu_copy(t) for k, t in self.ema.items()} if self.ema is not None else None,
        )


def _cpu_copy(obj):
    """A copy of tensors (also inside dicts and lists) in CPU memory: snapshots take no device memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _parse_state(text: str) -> tuple[list[float], list[Recovery], int, bool]:
    """The guard's state from a checkpoint, checked before use: a damaged one is refused, not trusted."""
    try:
        data = json.loads(text)
        history, recoveries = data["history"], data["recoveries"]
        skipped, outlier_before = data.get("skipped", 0), data.get("outlier_before", False)
        ok = (
            type(history) is list
            and len(history) <= HISTORY
            and all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in history)
            and type(recoveries) is list
            and len(recoveries) <= MAX_RECOVERIES
            and all(_recovery_ok(r) for r in recoveries)
            and _count(skipped) is not None
            and type(outlier_before) is bool
        )
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
        ok = False
    if not ok:
        raise InvalidInputError(
            "the checkpoint's record of the run's losses is damaged", hint="start over without --resume"
        )
    # each recovery halved the rate: the factors follow from the order, not from the file
    recovered = [Recovery(r["step"], r["back_to"], 0.5 ** (i + 1)) for i, r in enumerate(recoveries)]
    return [float(v) for v in history], recovered, skipped, outlier_before


def _recovery_ok(r) -> bool:
    steps = (_count(r.get("step")), _count(r.get("back_to"))) if type(r) is dict else (None, None)
    return None not in steps and steps[0] > steps[1]


def _count(value) -> int | None:
    """`value` if it is a plain, plausible step count (not a bool, a float or a 400-digit number)."""
    return value if type(value) is int and 0 <= value < 2**53 else None
