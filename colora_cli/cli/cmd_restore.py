"""`colora restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from colora.cli import output
from colora.cli.options import Device, Home, MaxPixels, Tile, choice
from colora.core.choices import ENGINES
from colora.core.defaults import AUTO_CANDIDATES, DEVICE, ENGINE, RAY_WORKERS, TILE
from colora.core.errors import InvalidInputError


def restore(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    task: Annotated[
        str,
        typer.Option(
            "--task",
            "-t",
            help="Task whose adapter restores the images; `auto` picks, per image, the adapter "
            "whose training inputs look most alike.",
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing files in the output folder.")
    ] = False,
    tile: Tile = TILE,
    self_ensemble: Annotated[
        bool,
        typer.Option(
            "--self-ensemble",
            help="Restore each image as the average over its 8 flips and quarter turns: 8x the "
            "time, usually a little cleaner (BENCHMARKS.md).",
        ),
    ] = False,
    auto_candidates: Annotated[
        int,
        typer.Option(
            "--auto-candidates",
            min=1,
            max=10,
            help="With --task auto: how many of the nearest adapters by signature each restore the image's "
            "centre, the one whose output the backbone would change least being kept (no gain over the "
            "nearest on the bench zoo since signatures read covariances; hurts JPEG: BENCHMARKS.md). "
            "1: the nearest alone.",
        ),
    ] = AUTO_CANDIDATES,
    max_pixels: MaxPixels = None,
    device: Device = DEVICE,
    engine: Annotated[
        choice(ENGINES),
        typer.Option(
            "--engine",
            help="What runs the model: torch, onnxruntime or openvino (both on the CPU, from an "
            "ONNX export of the task's model cached in the store), or auto: the fastest installed one on the CPU, "
            "torch on a GPU and for --task auto.",
        ),
    ] = ENGINE,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on Ray Data: `local` (a Ray instance on this machine), `auto` (the running "
            "cluster) or ray://HOST:10001. Existing outputs are skipped, so the same command finishes a stopped job.",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="With --ray: restoring actors (one GPU each where there are GPUs).")
    ] = RAY_WORKERS,
    home: Home = None,
) -> None:
    """Restore images with a task's adapter; results keep their names and formats.

    Example: colora restore --task rain photos/ extra.jpg -o restored/   (or --task auto, or --ray local)
    """
    from colora.api.restoring import restore_images
    from colora.store.store import Store

    if ray is not None:
        if overwrite or engine != "auto" or self_ensemble:
            raise InvalidInputError(
                "--ray skips outputs that exist and restores with PyTorch, one pass: it takes "
                "neither --overwrite, --engine nor --self-ensemble",
                hint="leave them out, or restore without --ray",
            )
        return _on_ray(Store.open(home), task, inputs, out_dir, ray, workers, tile, max_pixels, device)
    done = restore_images(
        Store.open(home),
        task,
        inputs,
        out_dir,
        overwrite=overwrite,
        tile=tile,
        device=device,
        max_pixels=max_pixels,
        engine=engine,
        self_ensemble=self_ensemble,
        auto_candidates=auto_candidates,
        reporter=output.REPORTER,
    )
    if done.choices:
        output.table(
            "Adapters chosen (--task auto)",
            ["image", "task", "distance", "next best"],
            [
                [c.image, c.task + (" (far)" if c.far else "") + _settled(c), f"{c.distance:.2f}", c.runner_up]
                for c in done.choices
            ],
        )
        if any(c.far for c in done.choices):
            output.note(
                "Images marked (far) resemble no task's training inputs closely; for a new degradation, "
                "`colora task add NAME FOLDER` with a few pairs and `colora adapt NAME`."
            )
    output.note(
        f"Restored {done.restored} image(s) into {out_dir}" + (f" ({done.engine})" if done.engine != "torch" else "")
    )
    _refuse_failures(done.failed, done.jobs)


def _on_ray(store, task, inputs, out_dir, address, workers, tile, max_pixels, device) -> None:
    from colora.api.cluster import restore_on_ray

    done = restore_on_ray(
        store,
        task,
        inputs,
        out_dir,
        address=address,
        workers=workers,
        tile=tile,
        max_pixels=max_pixels,
        device=device,
        reporter=output.REPORTER,
    )
    output.note(
        f"Ray: {done.done} restored, {done.skipped} skipped (already there), {len(done.failed)} failed, into {out_dir}"
    )
    _refuse_failures(done.failed, done.jobs)


def _refuse_failures(failed: list, jobs: int) -> None:
    if failed:
        msgs = [f"{src.name} ({msg})" for src, msg in failed]
        raise InvalidInputError(
            f"{len(failed)} of {jobs} image(s) could not be restored: "
            + "; ".join(msgs[:3])
            + (f"; and {len(failed) - 3} more" if len(failed) > 3 else ""),
            hint="fix or remove those files and restore them again",
        )


def _settled(choice) -> str:
    """Why the pick is not the nearest signature: the backbone settled on it."""
    return f" (settled; nearest: {choice.nearest})" if choice.nearest else ""
