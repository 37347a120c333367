"""Training a task's adapter: choose the plan, claim the task, train, index the adapter, validate."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, SEED
from colora.core.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.schema import Adapter, Backbone, Task
    from colora.store.store import Store

QUICK_VAL_PAIRS = 4  # validation pairs scored in the training summary (not recorded; `colora eval` does that)
SELECTION_PAIRS = 8  # validation pairs whose centres pick the best state during training
VALIDATIONS = 10  # about this many validations per run
DEFAULT_STEPS = 500


@dataclass
class TrainOptions:
    steps: int | None = None  # default: DEFAULT_STEPS, or what `minutes` allow
    minutes: float | None = None  # a time budget instead of a step count (steps measured on this machine)
    batch_size: int = 4
    patch_size: int = 96
    lr: float = 4e-3  # bench/recipe.py: +0.12 to +0.18 dB over 2e-3 on rain, σ25 and low light, same time
    loss: str = "l1"
    seed: int = SEED
    rank: int | None = None  # a uniform rank instead of the task's CoLoRA plan
    checkpoint_every: int = 100
    resume: bool = False
    device: str = DEVICE
    # start the LoRA factors from the zoo's fitted mixture (core/recycle/warm_start.py); None: when the
    # zoo has adapters on this backbone (bench/warm_start.py: warm ends higher on every task measured)
    warm_start: bool | None = None


@dataclass
class QuickValidation:
    pairs: int  # scored
    of: int  # validation pairs of the task
    input_psnr: float
    adapter_psnr: float


@dataclass
class TrainOutcome:
    task: str
    adapter: Adapter
    steps_done: int
    resumed_from: int
    wall_time_s: float
    final_loss: float
    adapter_bytes: int
    best_step: int | None = None  # the validated step kept as the adapter (None: no validation pairs)
    best_psnr: float | None = None
    validation: QuickValidation | None = None
    validation_skipped: str | None = None  # why there is no quick validation, when it was skipped
    recoveries: list = field(default_factory=list)  # divergences training came back from (core Recovery)
    skipped_steps: int = 0  # steps whose update was skipped as outliers


def train_task(
    store: Store, name: str, options: TrainOptions | None = None, reporter: Reporter = SILENT
) -> TrainOutcome | None:
    """Train (or, with `resume`, continue) the task's LoRA adapter on the frozen backbone.

    Under `torchrun --nproc-per-node N`, each process trains on its slice of every batch
    (data-parallel, `batch_size` per process); the leader (rank 0) decides, writes and returns the
    outcome, the others return None (core/training/distributed.py)."""
    from colora.api.models import backbone_model
    from colora.api.tasks import checked_pairs
    from colora.core.device import resolve_device
    from colora.core.model.backbone import count_parameters
    from colora.core.model.lora import lora_parameter_count
    from colora.core.training.distributed import join
    from colora.core.training.loop import TrainConfig

    o = options or TrainOptions()
    if o.steps is not None and o.minutes is not None:
        raise InvalidInputError("give --steps or --minutes, not both")
    if o.minutes is not None and not (0 < o.minutes <= 7 * 24 * 60):
        raise InvalidInputError(f"--minutes must be between 0 and a week, not {o.minutes}")
    task = store.task(name)
    dev = resolve_device(o.device)
    world = join(dev)
    if world is not None and not world.leader:
        return _follow(store, task, dev, world)
    store.refuse_if_training(task)
    config = TrainConfig(
        steps=o.steps or DEFAULT_STEPS,
        batch_size=o.batch_size,
        patch_size=o.patch_size,
        lr=o.lr,
        loss=o.loss,
        seed=o.seed,
        checkpoint_every=o.checkpoint_every,
    )
    config.validate()
    resumable = store.resumable_run(task)
    previous = resumable if o.resume else None
    if o.resume and previous is None:
        reporter.note(f"No interrupted run of '{name}' to resume; starting a new one.")
    elif resumable is not None and not o.resume:
        reporter.note(
            f"Starting a new run: the interrupted run {resumable.id} of '{name}' (checkpoint at step "
            f"{_checkpoint_step(store, resumable)}) is abandoned; `--resume` would have continued it."
        )
    backbone_row = store.backbone_by_id(previous.backbone_id) if previous else store.backbone()
    train_pairs = checked_pairs(store, task, "train")
    selection = _selection_pairs(store, task)
    backbone = backbone_model(store, backbone_row)
    # a resumed run keeps its own start (its checkpoint holds the factors; the fit is repeated, same
    # seed, for the adapter's record and in case the checkpoint is gone)
    warm_wanted = ("warm_start" in json.loads(previous.config)) if previous else o.warm_start is not False
    if previous and o.warm_start is True and not warm_wanted:
        reporter.note("--warm-start ignored: the run being resumed started from zero.")
    warm = None
    if warm_wanted:
        from colora.api.recycling import warm_start_deltas

        seed = json.loads(previous.config)["train"]["seed"] if previous else o.seed
        try:
            warm = warm_start_deltas(store, task, backbone_row, backbone.eval(), seed=seed, reporter=reporter)
        except NotFoundError:
            if o.warm_start is True:  # asked for by name: say why it cannot be had
                raise
            # the default on an empty zoo: a cold start, silently
    if previous:
        saved = json.loads(previous.config)
        config = TrainConfig(**saved["train"])
        plan, method, budget, info = (
            saved["rank_plan"],
            saved["plan_method"],
            saved.get("budget"),
            saved.get("plan_info", {}),
        )
    else:
        plan, method, budget, info = choose_plan(store, task, backbone_row, backbone, o.rank, o.seed, dev, reporter)
        config = _schedule(backbone, train_pairs, config, plan, o.minutes, bool(selection), dev, reporter)
    run = store.start_run(
        task,
        backbone_row,
        json.dumps(
            {
                "train": json.loads(config.to_json()),
                "rank_plan": plan,
                "plan_method": method,
                "budget": budget,
                "plan_info": info,
                **({"warm_start": warm[1]} if warm else {}),
            }
        ),
        resume=previous,
    )
    if world is not None:  # the other processes read the run's settings from the store
        world.share(json.dumps({"run": run.id, "resumed": previous is not None}))
    trainable = lora_parameter_count(backbone, plan)
    reporter.note(
        f"Training '{name}' on backbone '{backbone_row.name}' ({backbone_row.label}): {len(train_pairs)} pairs, "
        f"{method} LoRA over {len(plan)} layers, {_count(trainable)} trainable parameters "
        f"({100 * trainable / count_parameters(backbone):.2f}% of the backbone), device {dev.type}"
        + (f", {world.size} processes of batch {config.batch_size}." if world is not None else ".")
    )
    result, adapter = _run_training(
        store,
        task,
        run,
        backbone_row,
        backbone,
        train_pairs,
        selection,
        config,
        plan,
        method,
        budget,
        info,
        dev,
        resumed=previous is not None,
        reporter=reporter,
        world=world,
        warm_start=warm,
    )
    outcome = TrainOutcome(
        name,
        adapter,
        result.steps_done,
        result.resumed_from,
        result.wall_time_s,
        result.final_loss,
        store.path(adapter.path).stat().st_size,
        result.best_step,
        dict(result.val_curve).get(result.best_step),
        recoveries=result.recoveries,
        skipped_steps=result.skipped_steps,
    )
    _quick_validation(store, task, adapter, backbone, dev, outcome)
    return outcome


def _follow(store: Store, task: Task, device, world) -> None:
    """A torchrun process other than the leader: trains its slice of each batch with the run the
    leader started (settings from the store), and writes nothing."""
    from colora.api.models import backbone_model
    from colora.api.tasks import checked_pairs
    from colora.core.training.adapter import train_adapter
    from colora.core.training.loop import TrainConfig

    started = json.loads(world.share(None))
    run = store.run(started["run"])
    saved = json.loads(run.config)
    backbone_row = store.backbone_by_id(run.backbone_id)
    train_adapter(
        backbone_model(store, backbone_row),
        backbone_row.sha256,
        task.name,
        [(p.input_path, p.target_path) for p in checked_pairs(store, task, "train")],
        TrainConfig(**saved["train"]),
        saved["rank_plan"],
        plan_method=saved["plan_method"],
        device=device,
        checkpoint_path=store.path(run.checkpoint_path),
        resume=started["resumed"],
        world=world,
    )
    return None


def _run_training(
    store: Store,
    task: Task,
    run,
    backbone_row: Backbone,
    backbone,
    train_pairs,
    selection,
    config,
    plan,
    method,
    budget,
    info,
    device,
    *,
    resumed: bool,
    reporter: Reporter,
    world=None,
    warm_start=None,
):
    """The training itself, with the run's status kept true whatever happens."""
    from colora.core.model.backbone import count_parameters
    from colora.core.model.lora import lora_parameter_count
    from colora.core.model.weights import save_adapter
    from colora.core.training.adapter import train_adapter
    from colora.store.status import RunStatus

    beat = _Heartbeat(store, run)
    try:
        with reporter.progress(f"train {task.name}", config.steps, loss=True) as update:
            model, meta, result = train_adapter(
                backbone,
                backbone_row.sha256,
                task.name,
                [(p.input_path, p.target_path) for p in train_pairs],
                config,
                plan,
                val_pairs=[(p.input_path, p.target_path) for p in selection],
                plan_method=method,
                plan_info=info,
                device=device,
                checkpoint_path=store.path(run.checkpoint_path),
                resume=resumed,
                on_step=lambda done, total, value: (update(done, value), beat()),
                world=world,
                warm_start=warm_start,
            )
        adapter_rel = store.adapter_relpath(task, run)
        save_adapter(store.path(adapter_rel), model.cpu(), meta)
        store.finish_run(
            run,
            task,
            adapter_rel=adapter_rel,
            trainable_params=lora_parameter_count(backbone, plan),
            backbone_params=count_parameters(backbone),
            plan_method=method,
            budget=budget,
            loss_curve=result.loss_curve,
            steps_done=result.steps_done,
            wall_time_s=result.wall_time_s,
        )
    except KeyboardInterrupt:
        store.mark_run(run, RunStatus.INTERRUPTED)
        if store.path(run.checkpoint_path).exists():
            reporter.note(
                f"Training interrupted; the last checkpoint is kept. Continue with `colora train {task.name} --resume`."
            )
        else:
            reporter.note(
                f"Training interrupted before its first checkpoint; start it again with `colora train {task.name}`."
            )
        raise
    except BaseException as e:
        store.mark_run(run, RunStatus.FAILED, error=str(e)[:500])
        raise
    return result, store.adapter(task)  # re-read: with its backbone row


def _selection_pairs(store: Store, task: Task) -> list:
    """The validation pairs that pick the best state during training (unchanged since `task add`)."""
    from colora.api.tasks import manifest_changes

    pairs = store.pairs(task, "val")[:SELECTION_PAIRS]
    return [] if manifest_changes(pairs) else pairs


def _schedule(backbone, train_pairs, config, plan, minutes: float | None, validated: bool, device, reporter: Reporter):
    """The run's step count (from `minutes`, measured on this machine) and validation interval."""
    from dataclasses import replace

    from colora.core.training.adapter import seconds_per_step

    if minutes is not None:
        step_s = seconds_per_step(
            backbone, [(p.input_path, p.target_path) for p in train_pairs], config, plan, device=device
        )
        steps = max(20, int(minutes * 60 / (step_s * (1.05 if validated else 1.0))))
        reporter.note(f"{minutes:g} min at {step_s:.3f} s a step here: {steps} steps.")
        config = replace(config, steps=steps)
    return replace(config, validate_every=max(10, config.steps // VALIDATIONS) if validated else 0)


def choose_plan(
    store: Store,
    task: Task,
    backbone_row: Backbone,
    backbone,
    rank: int | None,
    seed: int,
    device,
    reporter: Reporter = SILENT,
):
    """(ranks, method, budget, info): uniform with `rank`, else the task's plan, computed if missing."""
    from colora.api.ranking import PlanOptions, compute_plan, stored_plan
    from colora.core.model.lora import uniform_rank_plan

    if rank is not None:
        return uniform_rank_plan(backbone, rank), "uniform", None, {"method": "uniform", "rank": rank}
    stored = stored_plan(task, backbone_row)
    if stored is None:
        reporter.note(f"Task '{task.name}' has no rank plan for this backbone yet; computing it (CoLoRA, FAIG).")
        plan, info = compute_plan(
            store, task, backbone_row, backbone, PlanOptions(seed=seed), device=device, reporter=reporter
        )
        stored = plan.ranks, plan.method, info
    ranks, method, info = stored
    return ranks, method, info.get("budget"), info


def _quick_validation(store: Store, task: Task, adapter: Adapter, backbone, device, outcome: TrainOutcome) -> None:
    """Validation PSNR of the new adapter on at most QUICK_VAL_PAIRS pairs, for the summary; not recorded."""
    from colora.api.models import task_model
    from colora.api.tasks import manifest_changes
    from colora.core.errors import ColoraError
    from colora.core.inference.evaluate import evaluate

    val_pairs = store.pairs(task, "val")
    if not val_pairs:
        return
    used = val_pairs[:QUICK_VAL_PAIRS]
    if manifest_changes(used):
        outcome.validation_skipped = f"validation files of '{task.name}' changed since they were added."
        return
    try:
        model, _ = task_model(store, adapter, backbone)
        results = evaluate(
            {"input": None, "adapter": model}, [(p.stem, p.input_path, p.target_path) for p in used], device=device
        )
    except ColoraError as e:  # the adapter is saved; a summary line must not fail the command
        outcome.validation_skipped = e.message
        return
    outcome.validation = QuickValidation(len(used), len(val_pairs), results["input"][0], results["adapter"][0])


class _Heartbeat:
    """Marks the run alive about once a minute (other machines judge a shared store's runs by it)."""

    def __init__(self, store: Store, run, every_s: float = 60.0):
        import time

        self.store, self.run, self.every_s, self.clock = store, run, every_s, time.monotonic
        self.last = self.clock()

    def __call__(self) -> None:
        if self.clock() - self.last >= self.every_s:
            self.last = self.clock()
            self.store.heartbeat(self.run)


def _checkpoint_step(store: Store, run) -> str:
    from colora.core.files import read_safetensors_header

    try:
        return read_safetensors_header(store.path(run.checkpoint_path))[1].get("step", "?")
    except (OSError, ValueError):
        return "?"


def _count(n: int) -> str:
    from colora.core.text import human_count

    return human_count(n)
