"""`colora export-onnx` and `colora export-model`: a task's merged model as an ONNX file or a NAFNet checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Home


def export_onnx(
    task: Annotated[str, typer.Argument(help="Task whose model (backbone + adapter, merged) is exported.")],
    file: Annotated[Path, typer.Argument(help="The .onnx file to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the file if it exists.")] = False,
    home: Home = None,
) -> None:
    """Write a task's model (backbone + adapter, merged) as one ONNX file, checked in onnxruntime.

    The graph takes images of any batch, height and width: input `image` (N, 3, H, W), RGB in [0, 1];
    output `restored`, the same shape (clamp it to [0, 1]). Where onnxruntime is installed, the file
    is run on a test image and compared with colora's own output.

    Example: colora export-onnx rain rain.onnx
    """
    from colora.api.exporting import export_onnx_task
    from colora.store.store import Store

    done = export_onnx_task(Store.open(home), task, file, overwrite=overwrite)
    h, w = done.test_size
    check = (
        f"max abs error {done.max_abs_error:.1e} against colora on a {w}x{h} test image (onnxruntime)"
        if done.max_abs_error is not None
        else 'not checked: pip install "colora[onnx]" to run it in onnxruntime'
    )
    output.note(f"Exported the model of '{task}' to {done.path} ({check}).")


def export_model(
    task: Annotated[str, typer.Argument(help="Task whose model (backbone + adapter, merged) is exported.")],
    file: Annotated[
        Path, typer.Argument(help="The file to write: NAME.pth (BasicSR {'params': ...}) or NAME.safetensors.")
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the file (and its card) if they exist.")
    ] = False,
    home: Home = None,
) -> None:
    """Write a task's model as a NAFNet checkpoint that spandrel, chaiNNer and BasicSR load, with a card.

    The adapter is merged into the backbone's weights, saved in the official NAFNet's layout
    (`.pth` as BasicSR saves it, with `params`, or `.safetensors`); FILE.json beside it says the
    task, the backbone and its fingerprint, the architecture, the last validation scores and
    what colora's padding changes at the borders.

    Example: colora export-model rain rain-nafnet.pth
    """
    from colora.api.exporting import export_model_task
    from colora.store.store import Store

    done = export_model_task(Store.open(home), task, file, overwrite=overwrite)
    a = done.arguments
    output.note(
        f"Exported the model of '{task}' to {done.path} (NAFNet width {a['width']}, blocks "
        f"{a['enc_blk_nums']} / {a['middle_blk_num']} / {a['dec_blk_nums']}); card: {done.card}."
    )
