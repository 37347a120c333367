"""A task's merged model as ONNX: a file for the user (`colora export-onnx`), and the cached
exports that `colora restore --engine onnxruntime|openvino` runs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.choices import ENGINES
from colora.core.errors import ConflictError, IntegrityError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.schema import Adapter
    from colora.store.store import Store

ENGINE_CHOICES = ENGINES
# `auto` on the CPU: the first of these that is installed, else torch. bench/speed.py `--only engines`
# (2-core CPU, one thread), against colora's own graph: OpenVINO 1.51x at 512² and 1.53x tiled
# 2000x1500, ONNX Runtime 1.46x and 1.41x, both within 5e-7 of it; OpenVINO's graph also exports
# in under a second where ONNX Runtime's takes 10-30 s (core/inference/engines.py).
AUTO_ORDER = ("openvino", "onnxruntime")


@dataclass
class OnnxExport:
    path: Path
    max_abs_error: float | None  # |onnxruntime - colora| on the test image; None without onnxruntime
    test_size: tuple[int, int]  # (height, width) of the test image


def export_onnx_task(store: Store, task: str, file: Path, *, overwrite: bool = False) -> OnnxExport:
    """Write the task's model (backbone + adapter, merged) as one ONNX file: any batch, height and
    width; input `image` (N, 3, H, W) in [0, 1], output `restored` (not clamped). Where onnxruntime
    is installed, the file is run on a test image of an odd size and compared with colora's output."""
    from colora.api.models import task_parts
    from colora.core.inference.engines import (
        OnnxRuntimeEngine,
        export_onnx,
        installed,
        max_abs_error,
        merged_nafnet,
        probe_image,
    )
    from colora.core.model.fast import FastNAFNet

    adapter = _adapter(store, task)
    file = Path(file)
    _destination(store, file, overwrite, "give the path of the .onnx file to write")
    backbone, deltas, _ = task_parts(store, adapter)
    export_onnx(merged_nafnet(backbone, deltas), file, overwrite=overwrite)
    probe = probe_image()
    error = None
    if installed("onnxruntime"):
        error = max_abs_error(OnnxRuntimeEngine(file), FastNAFNet(backbone, deltas), probe)
        if not _exact(error):
            file.unlink(missing_ok=True)
            raise _inexact("onnxruntime", error)
    return OnnxExport(file, error, tuple(probe.shape[-2:]))


@dataclass
class ModelExport:
    path: Path
    card: Path  # the JSON card beside it
    arguments: dict  # the official NAFNet's constructor arguments for the file


# What differs from the official NAFNet, in the card: the weights are the same layout, the padding may not be.
PADDING_NOTE = {
    "replicate": (
        "colora pads an image whose sides are not a multiple of {m} by repeating its last row and "
        "column; the official NAFNet (and spandrel) pads with zeros. Where a side needs padding, the "
        "last few rows or columns can differ; elsewhere the outputs agree within float rounding."
    ),
    "zeros": "colora pads with zeros, as the official NAFNet does: the outputs agree within float rounding.",
}


def export_model_task(store: Store, task: str, file: Path, *, overwrite: bool = False) -> ModelExport:
    """Write the task's model (backbone + adapter, merged) as a BasicSR-layout NAFNet checkpoint
    (.pth with `params`, or .safetensors) that spandrel / chaiNNer / BasicSR load, and a JSON card
    beside it (FILE.json): task, backbone and its fingerprint, the architecture, last validation
    scores, and what the padding changes."""
    import json

    from colora import __version__
    from colora.api.models import task_parts
    from colora.core.files import atomic_write
    from colora.core.inference.engines import merged_nafnet
    from colora.core.interop.basicsr import EXPORT_SUFFIXES, nafnet_arguments, save_checkpoint

    file = Path(file)
    card = file.with_name(file.name + ".json")
    if file.suffix.lower() not in EXPORT_SUFFIXES:
        raise InvalidInputError(
            f"{file.name}: write a .pth or .safetensors file",
            hint="name the file NAME.pth (BasicSR, chaiNNer) or NAME.safetensors",
        )
    adapter = _adapter(store, task)
    for dest in (file, card):
        _destination(store, dest, overwrite, "give the path of the file to write")
    backbone, deltas, meta = task_parts(store, adapter)
    model = merged_nafnet(backbone, deltas)
    config = backbone.config
    scores = {}
    task_row = store.task(task)
    for subject in ("input", "adapter"):
        last = store.last_eval(task_row, subject)
        if last is not None and (subject == "input" or last.adapter_id == adapter.id):
            scores[subject] = {"psnr": round(last.psnr, 3), "ssim": round(last.ssim, 4)}
    arguments = nafnet_arguments(config)
    info = {
        "task": task,
        "format": "NAFNet, BasicSR layout" + (" ({'params': state_dict})" if file.suffix.lower() == ".pth" else ""),
        "architecture": {"name": "NAFNet", **arguments},
        "input": "RGB in [0, 1], (N, 3, H, W), any H and W; clamp the output to [0, 1]",
        "backbone": adapter.backbone.name,
        "backbone_sha256": meta.backbone_sha256,
        "adapter": {"plan": adapter.plan_method, "recycled": adapter.recycled, "file_sha256": adapter.file_sha256},
        "validation": scores or "not evaluated (run `colora eval " + task + "`)",
        "padding": PADDING_NOTE["replicate" if config.pad_mode == "replicate" else "zeros"].format(m=config.multiple),
        "colora_version": __version__,
    }
    header = {"format": "nafnet", "task": task, "backbone_sha256": meta.backbone_sha256}
    with atomic_write(card, overwrite=overwrite) as tmp:  # renamed into place only after the model is
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        save_checkpoint(file, model, overwrite=overwrite, metadata=header)
    return ModelExport(file, card, arguments)


def _destination(store: Store, file: Path, overwrite: bool, hint: str) -> None:
    """A file the user asked for, checked before the work that fills it: outside the store, not a
    folder, replaced only with `overwrite` and only when it is a regular file (atomic_write checks
    that again at the rename)."""
    from colora.core.files import refuse_special

    store.refuse_inside(file, "the destination")
    if file.is_dir():
        raise InvalidInputError(f"{file} is a folder", hint=hint)
    if (file.exists() or file.is_symlink()) and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    if overwrite:
        refuse_special(file)


def resolve_engine(engine: str, device: str, task: str) -> str:
    """`--engine` as the engine that will run: `auto` is the fastest installed one on the CPU
    (AUTO_ORDER) and PyTorch on a GPU or for `--task auto`; an explicit engine must be installed."""
    from colora.core.inference.engines import installed, require

    if engine not in ENGINE_CHOICES:
        raise InvalidInputError(
            f"unknown engine {engine!r}; use one of {', '.join(ENGINE_CHOICES)}",
            hint="leave out --engine: auto runs the fastest one installed",
        )
    if engine == "auto":
        if task == "auto" or _gpu(device):
            return "torch"
        return next((e for e in AUTO_ORDER if installed(e)), "torch")
    if engine != "torch":
        if task == "auto":
            raise InvalidInputError(
                f"--task auto restores with PyTorch only, not --engine {engine}",
                hint="leave out --engine (or pass --engine torch), or name the task",
            )
        if device == "cuda":
            raise InvalidInputError(
                f"--engine {engine} runs on the CPU, but --device cuda was asked for",
                hint="pass --device cpu, or --engine torch for the GPU",
            )
        require(engine)
    return engine


def _gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def engine_model(store: Store, task: str, adapter: Adapter, engine: str, reporter: Reporter = SILENT):
    """The task's model run by `engine` (onnxruntime or openvino) from its cached ONNX export, made
    on first use. The engine loads a private copy whose sha256 matches the one recorded when the
    export was cached (a cache file changed by anyone else is exported again, never run), and it is
    checked against colora's own graph on a test image before it is used. Where the store cannot
    keep the export (read-only, disk full), it is made for this run only."""
    from colora.api.models import task_parts
    from colora.core.inference.engines import GRAPHS, build_graph, export_onnx, load_engine, max_abs_error
    from colora.core.model.fast import FastNAFNet

    backbone, deltas, _ = task_parts(store, adapter)
    ours = FastNAFNet(backbone, deltas)
    rel = store.onnx_relpath(task, adapter, GRAPHS[engine])
    with tempfile.TemporaryDirectory(prefix="colora-onnx-") as scratch:
        local = Path(scratch, Path(rel).name)  # what the engine loads: checked, and nobody else's to change
        for fresh in (False, True):
            if fresh or not _verified_copy(store, rel, local):
                reporter.note(f"Exporting the model of '{task}' to ONNX for {engine} (once per adapter) ...")
                local.unlink(missing_ok=True)
                export_onnx(build_graph(GRAPHS[engine], backbone, deltas), local)
                _keep(store, task, adapter, rel, local, reporter)
            try:
                runner = load_engine(engine, local)  # holds the model in memory: the file may go
            except InvalidInputError:
                if fresh:
                    raise
                continue  # a damaged cache file
            error = max_abs_error(runner, ours)
            if _exact(error):
                return runner
        raise _inexact(engine, error)


def _verified_copy(store: Store, rel: str, local: Path) -> bool:
    """Copy the cached export to `local` when it is a regular file whose sha256 is the recorded one."""
    import os
    import shutil
    import stat

    from colora.core.files import sha256_file

    cached, recorded = store.path(rel), store.cache_digest(rel)
    try:
        if recorded is None or not stat.S_ISREG(os.lstat(cached).st_mode):
            return False
        shutil.copyfile(cached, local)
    except OSError:
        return False
    return sha256_file(local) == recorded


def _keep(store: Store, task: str, adapter: Adapter, rel: str, local: Path, reporter: Reporter) -> None:
    """Cache a fresh export in the store with its sha256, where the store can keep it: written only
    through real folders of the store onto a regular file (a link planted in the cache is never
    followed), and recorded in the index. Anything in the way (a link, a FIFO, a full disk, a
    read-only database role, another process) leaves the export used for this run only."""
    from colora.core.errors import ColoraError
    from colora.core.files import copy_atomic, real_path_in, sha256_file

    if store.read_only:
        return  # a store this process may not write caches nothing
    digest = sha256_file(local)
    try:
        copy_atomic(local, real_path_in(store.root, rel), expected_sha256=digest)
        store.record_cache_digest(rel, digest)
        store.prune_onnx(task, adapter)
    except (OSError, ColoraError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        reporter.note(f"Could not keep the export in the store's cache ({why}); it is used for this run only.")


def _exact(error: float) -> bool:
    from colora.core.inference.engines import EXACT

    return error <= EXACT


def _inexact(engine: str, error: float) -> IntegrityError:
    from colora.core.inference.engines import EXACT

    return IntegrityError(
        f"{engine} computes the exported model differently from colora (max abs error "
        f"{error:.2g} on a test image, at most {EXACT:g} allowed)",
        hint="restore with --engine torch, and report this with your engine's version",
    )


def _adapter(store: Store, task: str) -> Adapter:
    adapter = store.adapter(store.task(task))
    if adapter is None:
        raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
    return adapter
