"""`colora train`."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from colora_cli import output
from colora_cli.options import Device, Home
from core.errors import ColoraError, ConflictError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store, pid_alive  # noqa: F401


def train(
    name: Annotated[str, typer.Argument(help="Task name.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patches per step.")] = 4,
    patch_size: Annotated[int, typer.Option("--patch-size", min=8, help="Side of the random square crops.")] = 96,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (AdamW, cosine schedule).")] = 2e-3,
    loss: Annotated[str, typer.Option("--loss", help="l1 or psnr.")] = "l1",
    seed: Annotated[int, typer.Option("--seed", help="Seed for crops, flips and LoRA init.")] = 0,
    rank: Annotated[Optional[int], typer.Option("--rank", min=1, help="Uniform LoRA rank for every layer, instead of the task's rank plan (computed by `colora ranks`, or first thing here when missing).")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the task's interrupted run from its last checkpoint.")] = False,
    device: Device = "auto",
    home: Home = None,
) -> None:
    """Train the task's LoRA adapter on the frozen backbone.

    Example: colora train rain --steps 500 --batch-size 4 --patch-size 96
    """
    import torch

    from colora_cli.loading import load_store_backbone
    from colora_cli.manifest import require_unchanged
    from core.training.adapter import train_adapter
    from core.model.backbone import count_parameters
    from core.device import resolve_device
    from core.model.lora import lora_parameter_count
    from core.training.loop import TrainConfig
    from core.model.weights import save_adapter
    from store.store import Store

    store = Store.open(home)
    task = store.task(name)
    _refuse_concurrent_run(store, task)
    dev = resolve_device(device)
    config = TrainConfig(steps=steps, batch_size=batch_size, patch_size=patch_size, lr=lr, loss=loss, seed=seed,
                         checkpoint_every=checkpoint_every)
    config.validate()
    previous = store.resumable_run(task) if resume else None
    if resume and previous is None:
        output.note(f"No interrupted run of '{name}' to resume; starting a new one.")
    backbone_row = store.backbone_by_id(previous.backbone_id) if previous else store.backbone()
    if previous:
        saved = json.loads(previous.config)
        config = TrainConfig(**saved["train"])
        plan, method, budget = saved["rank_plan"], saved["plan_method"], saved.get("budget")
        info = saved.get("plan_info", {})
    else:
        plan = None
    train_pairs = store.pairs(task, "train")
    require_unchanged(name, train_pairs)
    backbone = load_store_backbone(store, backbone_row)
    if plan is None:
        plan, method, budget, info = _choose_plan(store, task, backbone_row, backbone, rank, seed, dev)
    torch.manual_seed(config.seed)  # LoRA A initialisation
    if previous:
        run = previous
        store.mark_run(run, "running", pid=os.getpid())
    else:
        run = store.start_run(task, backbone_row, json.dumps({"train": json.loads(config.to_json()),
                                                              "rank_plan": plan, "plan_method": method,
                                                              "budget": budget, "plan_info": info}))
    trainable = lora_parameter_count(backbone, plan)
    output.note(
        f"Training '{name}' on backbone '{backbone_row.name}' ({backbone_row.label}): {len(train_pairs)} pairs, "
        f"{method} LoRA over {len(plan)} layers, {output.human_count(trainable)} trainable parameters "
        f"({100 * trainable / count_parameters(backbone):.2f}% of the backbone), device {dev.type}."
    )
    try:
        with output.progress(f"train {name}", config.steps, loss=True) as update:
            model, meta, result = train_adapter(
                backbone, backbone_row.sha256, name, [(p.input_path, p.target_path) for p in train_pairs], config, plan,
                plan_method=method, plan_info=info, device=dev, checkpoint_path=store.path(run.checkpoint_path),
                resume=previous is not None, on_step=lambda done, total, value: update(done, value),
            )
        adapter_rel = store.adapter_relpath(task, run)
        save_adapter(store.path(adapter_rel), model.cpu(), meta)
        store.finish_run(run, task, adapter_rel=adapter_rel, trainable_params=trainable,
                         backbone_params=count_parameters(backbone), rank_plan=plan, plan_method=method,
                         budget=budget, loss_curve=result.loss_curve, steps_done=result.steps_done, wall_time_s=result.wall_time_s)
    except KeyboardInterrupt:
        store.mark_run(run, "interrupted")
        output.note(f"Training interrupted; the last checkpoint is kept. Continue with `colora train {name} --resume`.")
        raise
    except BaseException as e:
        store.mark_run(run, "failed", error=str(e)[:500])
        raise
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    output.note(
        f"Trained '{name}': {result.steps_done} steps{resumed} in {result.wall_time_s:.1f} s, "
        f"final loss {result.final_loss:.4f}; adapter {output.human_bytes(store.path(adapter_rel).stat().st_size)}."
    )
    _quick_validation(store, task, model, dev)
    output.note(f"Next: colora eval {name}")


QUICK_VAL_PAIRS = 4


def _quick_validation(store: Store, task, model, device) -> None:
    """Validation PSNR of the new (merged) adapter on at most QUICK_VAL_PAIRS pairs, for the summary; not recorded."""
    from colora_cli.manifest import manifest_changes
    from core.inference.evaluate import evaluate
    from core.model.lora import merge_all

    val_pairs = store.pairs(task, "val")
    if not val_pairs:
        return
    used = val_pairs[:QUICK_VAL_PAIRS]
    if manifest_changes(used):
        output.note(f"Validation PSNR skipped: validation files of '{task.name}' changed since they were added.")
        return
    merge_all(model)
    try:
        results = evaluate({"input": None, "adapter": model}, [(p.stem, p.input_path, p.target_path) for p in used],
                           device=device)
    except ColoraError as e:  # the adapter is saved; a summary line must not fail the command
        output.note(f"Validation PSNR skipped: {e.message}")
        return
    psnr_in, psnr_adapter = results["input"][0], results["adapter"][0]
    output.note(f"Validation PSNR {psnr_adapter:.2f} dB on {len(used)} of {len(val_pairs)} validation pair(s) "
                f"(input {psnr_in:.2f} dB, {psnr_adapter - psnr_in:+.2f}); merged adapter, not recorded.")


def _choose_plan(store: Store, task, backbone_row, backbone, rank: int | None, seed: int, device):
    """(ranks, method, budget, info): uniform with --rank, else the task's plan, computed if missing."""
    from colora_cli.ranking import compute_plan, stored_plan
    from core.model.lora import uniform_rank_plan

    if rank is not None:
        return uniform_rank_plan(backbone, rank), "uniform", None, {"method": "uniform", "rank": rank}
    stored = stored_plan(task, backbone_row)
    if stored is None:
        output.note(f"Task '{task.name}' has no rank plan for this backbone yet; computing it (CoLoRA, FAIG).")
        plan, info = compute_plan(store, task, backbone_row, backbone, seed=seed, device=device)
        stored = plan.ranks, plan.method, info
    ranks, method, info = stored
    return ranks, method, info.get("budget"), info


def _refuse_concurrent_run(store: Store, task) -> None:
    from store.store import pid_alive
    run = store.last_run(task)
    if run and run.status == "running" and run.pid and run.pid != os.getpid() and pid_alive(run.pid):
        raise ConflictError(f"task '{task.name}' is already being trained (process {run.pid})",
                            hint="wait for it to finish, or stop it and use --resume")
