"""`colora adapt` and `colora recycle ...`: a task's adapter from the zoo, with no gradient training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from colora.api.recycling import AdaptOptions
from colora.cli import output
from colora.cli.options import Home, command_group
from colora.core.defaults import DISTILL_STEPS, SEED

app = command_group("LoRA Recycle: reuse the zoo of stored adapters for new tasks.")
ADAPT = AdaptOptions()  # the defaults, stated once (colora.api.recycling)


def adapt(
    name: Annotated[str, typer.Argument(help="Task to build an adapter for (its training pairs are the K examples).")],
    meta: Annotated[
        bool,
        typer.Option(
            "--meta",
            help="Predict the mixture with the distilled meta-adapter: one pass of the zoo over a few crops "
            "of the examples, no fitting (see `colora recycle distill`).",
        ),
    ] = False,
    per_stage: Annotated[
        Optional[bool],
        typer.Option(
            "--per-stage/--per-adapter",
            help="One coefficient per adapter and network stage, refined by a few gradient steps, or one per "
            "adapter (closed form only) [default: per stage; per adapter with --meta].",
            show_default=False,
        ),
    ] = None,
    keep_input: Annotated[
        bool,
        typer.Option(
            "--keep-input/--no-keep-input",
            help="Let the mixture lean towards the unrestored input (a mild degradation gets a mild "
            "correction); its coefficient is the share of the backbone's correction taken back. Fitted "
            "mixtures only (--meta predicts the zoo's coefficients alone).",
        ),
    ] = ADAPT.keep_input,
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="Use at most this many training pairs.")] = ADAPT.pairs,
    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps",
            min=0,
            help="Gradient steps refining the coefficients after the closed form [default: 20 per stage, 0 per "
            "adapter].",
        ),
    ] = None,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds",
            min=0.0,
            help="Time budget of the adaptation, loading and saving counted: no refinement step starts that "
            "would end past it (the closed form always runs; --meta ignores it).",
        ),
    ] = ADAPT.seconds,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the crops the coefficients are fitted on.")] = ADAPT.seed,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the task's trained adapter.")] = False,
    home: Home = None,
) -> None:
    """Build a task's adapter from the other tasks' adapters, fitted on its few pairs; no training.

    Example: colora adapt fog   (after `colora task add fog ./four-pairs`)
    """
    from colora.api.recycling import AdaptOptions, adapt_task
    from colora.store.store import Store

    options = AdaptOptions(
        meta=meta,
        per_stage=per_stage,
        keep_input=keep_input,
        pairs=pairs,
        steps=steps,
        seconds=seconds,
        seed=seed,
        replace=replace,
    )
    done = adapt_task(Store.open(home), name, options, output.REPORTER)
    mixture = done.mixture
    if len(mixture.groups) == 1:
        output.table(
            f"Mixture for '{name}'",
            ["adapter", "coefficient"],
            [[n, f"{float(row[0]):+.3f}"] for n, row in zip(mixture.names, mixture.coef)],
        )
    else:  # one column per stage would not fit a terminal: their mean and range
        output.table(
            f"Mixture for '{name}' ({len(mixture.groups)} network stages)",
            ["adapter", "mean", "min", "max"],
            [
                [n, *(f"{float(v):+.3f}" for v in (row.mean(), row.min(), row.max()))]
                for n, row in zip(mixture.names, mixture.coef)
            ],
        )
    fit = mixture.info
    if fit.get("support_mse") is not None:
        before, after = (10 * math.log10(1 / max(fit[k], 1e-12)) for k in ("support_mse_backbone", "support_mse"))
        output.note(
            f"Fit on {done.k} pair(s): support PSNR {before:.2f} -> {after:.2f} dB (crops, backbone -> mixture)."
        )
        planned, ran = fit.get("steps_planned", 0), fit.get("steps", 0)
        if planned and ran < planned:  # the time budget ran out (a slow machine, or many pairs)
            output.note(
                f"Refined in {ran} of {planned} step(s) within --seconds {seconds:g}; a larger budget may fit better."
            )
    output.note(
        f"Recycled adapter for '{name}' from {done.adapters} adapter(s) "
        f"in {done.seconds:.1f} s "
        f"({done.method.split('-')[1]}); {output.human_count(done.trainable_params)} parameters, "
        f"{output.human_bytes(done.adapter_bytes)}."
    )
    output.note(f"Next: colora eval {name}")


@app.command("distill")
def distill(
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training episodes.")] = DISTILL_STEPS,
    clean: Annotated[
        Optional[Path],
        typer.Option(
            "--clean",
            help="Folder of clean photos for the surrogate episodes (default: none, data-free: synthetic "
            "images and inputs inverted from the adapters themselves; no task's pairs are read either way).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the episodes and the network.")] = SEED,
    home: Home = None,
) -> None:
    """Distil the meta-adapter of the current zoo (offline, once per zoo), for `colora adapt NAME --meta`.

    Example: colora recycle distill --steps 400
    """
    from colora.api.recycling import distill_meta
    from colora.store.store import Store

    done = distill_meta(Store.open(home), steps=steps, clean=clean, seed=seed, reporter=output.REPORTER)
    output.note(f"Meta-adapter distilled ({done.surrogate}) in {done.seconds:.0f} s. Next: colora adapt NAME --meta")


@app.command("show")
def show(home: Home = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The distilled meta-adapter, and whether the zoo still matches it.

    Example: colora recycle show
    """
    from colora.api.recycling import meta_status
    from colora.store.store import Store

    record = meta_status(Store.open(home))
    if as_json:
        output.print_json(record)
        return
    output.table(
        "Meta-adapter",
        ["zoo", "episodes", "final loss", "created", "up to date"],
        [
            [
                ", ".join(z["task"] for z in record["zoo"]),
                record["steps"],
                f"{record['final_loss']:.5f}",
                record["created"],
                "yes" if record["up_to_date"] else "no: run `colora recycle distill`",
            ]
        ],
    )
