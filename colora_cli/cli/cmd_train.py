"""`colora train`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from colora.api.training import DEFAULT_STEPS, TrainOptions
from colora.cli import output
from colora.cli.options import Device, Home, choice
from colora.core.choices import LOSSES, MAX_BATCH_SIZE, MAX_PATCH_SIZE, MAX_RANK

DEFAULTS = TrainOptions()  # the one place the defaults live: the options below show them


def train(
    name: Annotated[str, typer.Argument(help="Task name.")],
    steps: Annotated[
        Optional[int], typer.Option("--steps", min=1, help=f"Training steps [default: {DEFAULT_STEPS}].")
    ] = None,
    minutes: Annotated[
        Optional[float],
        typer.Option(
            "--minutes",
            min=0.0,
            help="Train for about this many minutes instead (the steps they allow here are measured first).",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help="Patches per step.")
    ] = DEFAULTS.batch_size,
    patch_size: Annotated[
        int, typer.Option("--patch-size", min=8, max=MAX_PATCH_SIZE, help="Side of the random square crops.")
    ] = DEFAULTS.patch_size,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, help="Peak learning rate (AdamW, cosine schedule).")
    ] = DEFAULTS.lr,
    loss: Annotated[choice(LOSSES), typer.Option("--loss", help="The training loss.")] = DEFAULTS.loss,
    seed: Annotated[int, typer.Option("--seed", help="Seed for crops, flips and LoRA init.")] = DEFAULTS.seed,
    rank: Annotated[
        Optional[int],
        typer.Option(
            "--rank",
            min=1,
            max=MAX_RANK,
            help="Uniform LoRA rank for every layer (capped at each layer's full rank), instead of the task's "
            "rank plan (computed by `colora ranks`, or first thing here when missing).",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")
    ] = DEFAULTS.checkpoint_every,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the task's interrupted run from its last checkpoint.")
    ] = False,
    warm_start: Annotated[
        Optional[bool],
        typer.Option(
            "--warm-start/--cold-start",
            help="Start the adapter from the other tasks' adapters, mixed to fit this task's pairs "
            "(as `colora adapt --per-adapter` fits them), or from zero. [default: warm when the store holds other "
            "adapters on this backbone]",
            show_default=False,
        ),
    ] = DEFAULTS.warm_start,
    device: Device = DEFAULTS.device,
    home: Home = None,
) -> None:
    """Train the task's LoRA adapter on the frozen backbone.

    Example: colora train rain --steps 500 --batch-size 4 --patch-size 96
    """
    from colora.api.training import train_task
    from colora.store.store import Store

    options = TrainOptions(
        steps=steps,
        minutes=minutes,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        loss=loss,
        seed=seed,
        rank=rank,
        checkpoint_every=checkpoint_every,
        resume=resume,
        device=device,
        warm_start=warm_start,
    )
    done = train_task(Store.open(home), name, options, output.REPORTER)
    if done is None:  # one of several torchrun processes: the leader reports
        return
    resumed = f" (resumed at step {done.resumed_from})" if done.resumed_from else ""
    output.note(
        f"Trained '{name}': {done.steps_done} steps{resumed} in {done.wall_time_s:.1f} s, "
        f"final loss {done.final_loss:.4f}; adapter {output.human_bytes(done.adapter_bytes)}."
    )
    output.recoveries(done.recoveries, done.skipped_steps)
    if done.best_step is not None:
        output.note(
            f"Kept the state of step {done.best_step} (validation PSNR {done.best_psnr:.2f} dB on the centres "
            "of the validation pairs, the best seen)."
        )
    v = done.validation
    if v is not None:
        output.note(
            f"Validation PSNR {v.adapter_psnr:.2f} dB on {v.pairs} of {v.of} validation pair(s) "
            f"(input {v.input_psnr:.2f} dB, {v.adapter_psnr - v.input_psnr:+.2f}); merged adapter, not recorded."
        )
    elif done.validation_skipped:
        output.note(f"Validation PSNR skipped: {done.validation_skipped}")
    output.note(f"Next: colora eval {name}")
