"""Restoring images: checking every input and output first, then one adapter (or, `auto`, the nearest
one per image) over files and folders, with notes on the choices."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import AUTO_CANDIDATES, DEVICE, ENGINE, TILE
from colora.core.errors import ColoraError, ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.store import Store

FAR = 6.0  # a nearest signature farther than this (in within-task spreads) is flagged as a poor match


@dataclass
class AutoChoice:
    image: str
    task: str
    distance: float  # of the chosen task's signature
    runner_up: str  # "name (distance)" or "-": the next nearest signature
    nearest: str = ""  # the nearest signature's task, when the backbone settled on another
    closest: float | None = None  # the nearest signature's distance, when the backbone settled on another

    @property
    def far(self) -> bool:
        """The image resembles no task's training inputs closely (judged by the nearest signature)."""
        return (self.distance if self.closest is None else self.closest) > FAR


@dataclass
class RestoreOutcome:
    jobs: int
    failed: list[tuple[Path, str]]  # (source, why)
    choices: list[AutoChoice] = field(default_factory=list)  # --task auto only
    engine: str = "torch"  # what ran the model: torch, onnxruntime or openvino

    @property
    def restored(self) -> int:
        return self.jobs - len(self.failed)


def restore_images(
    store: Store,
    task: str,
    inputs: list[Path],
    out_dir: Path,
    *,
    overwrite: bool = False,
    tile: int = TILE,
    device: str = DEVICE,
    max_pixels: int | None = None,
    engine: str = ENGINE,
    self_ensemble: bool = False,
    auto_candidates: int = AUTO_CANDIDATES,
    reporter: Reporter = SILENT,
) -> RestoreOutcome:
    """Restore image files and folders into `out_dir` with `task`'s adapter (`auto`: chosen per image).

    Every input is checked (and decoded) and every output path planned before anything is written;
    a file that fails later is reported in the outcome and the others go on. `engine`: torch,
    onnxruntime or openvino (api/exporting.py), or `auto`, the fastest installed one. `self_ensemble`:
    each image is the average of its 8 flips and quarter turns restored (core/inference/ensemble.py).
    `auto_candidates`: with `auto`, how many of the nearest signatures the backbone settles between
    (core/recycle/settle.py); 1 takes the nearest.
    """
    from colora.api.exporting import engine_model, resolve_engine
    from colora.api.models import task_model
    from colora.core.device import resolve_device
    from colora.core.inference.pipeline import restore_many
    from colora.core.inference.tiles import check_tile, restore_tensor
    from colora.core.output_folder import OutputFolder

    check_tile(tile)
    engine = resolve_engine(engine, device, task)
    if task == "auto":
        if auto_candidates < 1:
            raise InvalidInputError(f"--auto-candidates must be at least 1, not {auto_candidates}")
        chooser = AutoChooser(store, tile, self_ensemble, auto_candidates)
    else:
        task_row = store.task(task)
        adapter = store.adapter(task_row)
        if adapter is None:
            raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
        from colora.api.evaluation import harm_of

        harm = harm_of(store, task_row)
        if harm is not None:
            reporter.note(
                f"Warning: at its last evaluation the adapter of '{task}' was {harm:.2f} dB worse than the "
                "unrestored input on its validation pairs; restoring anyway."
            )
    store.refuse_inside(out_dir, "the output folder")
    decoded: dict = {}
    jobs = plan_outputs(inputs, out_dir, overwrite, decoded, max_pixels)
    dev = resolve_device(device)
    if task == "auto":
        chooser.prepare(dev, reporter)
        restore_one = chooser.restore
    else:
        if engine == "torch":
            model = task_model(store, adapter)[0].to(dev)
        else:
            model = engine_model(store, task, adapter, engine, reporter)
        restore_one = lambda src, image: restore_tensor(model, image, tile, self_ensemble=self_ensemble)  # noqa: E731
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ColoraError(
            f"cannot create the output folder {out_dir}: {e.strerror or e}", hint="choose another folder with -o"
        ) from e
    # held open from here on, and checked as held: a folder swapped mid-run is never written into
    with OutputFolder.hold(out_dir) as folder, reporter.progress(f"restore ({task})", len(jobs)) as update:
        store.refuse_inside(folder.real_path, "the output folder")
        failed = restore_many(
            jobs,
            restore_one,
            overwrite=overwrite,
            decoded=decoded,
            max_pixels=max_pixels,
            on_done=lambda done, src, err: update(done),
            folder=folder,
        )
    return RestoreOutcome(len(jobs), failed, chooser.choices if task == "auto" else [], engine)


class AutoChooser:
    """`--task auto`: per image, of the `candidates` adapters whose tasks' training inputs have the
    nearest degradation signatures (core/recycle/signature.py), the one whose restoration of the
    image's central crop the backbone would change least (core/recycle/settle.py); models are
    loaded once per task."""

    def __init__(self, store: Store, tile: int, self_ensemble: bool = False, candidates: int = AUTO_CANDIDATES):
        self.store, self.tile, self.self_ensemble, self.candidates = store, tile, self_ensemble, candidates
        self.backbone_row = store.backbone()
        self.choices: list[AutoChoice] = []
        self.models: dict = {}

    def prepare(self, device, reporter: Reporter = SILENT) -> None:
        from colora.api.models import backbone_model
        from colora.api.recycling import signatures
        from colora.core.model.bundled import STARTER_PREFIX

        self.device = device
        self.backbone = backbone_model(self.store, self.backbone_row).eval()
        self.signatures, skipped = signatures(self.store, self.backbone_row, self.backbone)
        starters = (
            "; `colora adapter starters` gives starters theirs back"
            if any(name.startswith(STARTER_PREFIX) for name in skipped)
            else ""
        )
        if skipped:
            reporter.note(
                "Not candidates for auto (no training pairs or signature to characterise them): "
                f"{', '.join(skipped)}{starters}"
            )
        if not self.signatures:
            raise NotFoundError(
                f"no adapter on backbone '{self.backbone_row.name}' to choose from",
                hint="train one with `colora train NAME` (or build one with `colora adapt NAME`)"
                + (", or run `colora adapter starters`" if starters else ""),
            )
        self.adapters = {a.task.name: a for a in self.store.adapters(self.backbone_row)}

    def restore(self, src: Path, image):
        from colora.core.inference.tiles import restore_tensor
        from colora.core.recycle.signature import image_features, nearest

        ranking = nearest(image_features(image, self.backbone), self.signatures)
        name = ranking[0][0]
        if self.candidates > 1 and len(ranking) > 1:
            from colora.core.recycle.settle import settle

            def on_crop(task: str, crop):
                return self._model(task)(crop[None].to(self.device))[0].float().cpu()

            name, _ = settle(image, [n for n, _ in ranking[: self.candidates]], on_crop, self.backbone)
        distance = dict(ranking)[name]
        runner_up = next((f"{n} ({d:.2f})" for n, d in ranking if n != name), "-")
        self.choices.append(
            AutoChoice(src.name, name, distance, runner_up, *(() if name == ranking[0][0] else ranking[0]))
        )
        return restore_tensor(self._model(name), image, self.tile, self_ensemble=self.self_ensemble)

    def _model(self, name: str):
        from colora.api.models import task_model

        if name not in self.models:
            adapter = self.adapters[name]
            cached = self.backbone if adapter.backbone_id == self.backbone_row.id else None
            self.models[name] = task_model(self.store, adapter, cached)[0].to(self.device)
        return self.models[name]


DECODED_BUDGET = 512 * 2**20  # bytes of decoded pixels `plan_outputs` keeps for the restore


def plan_outputs(
    inputs: list[Path], out_dir: Path, overwrite: bool, decoded: dict | None = None, max_pixels: int | None = None
) -> list[tuple[Path, Path]]:
    """(source, destination) for every image, checked before any work is done.

    Decoded images are put in `decoded` (source -> core.pipeline.Decoded) up to DECODED_BUDGET.
    A plan that will be refused anyway keeps nothing.

    Folders are read at their top level only (so an output folder inside an input folder is
    never read back as input); symlinks are followed, and broken ones are refused like
    unreadable files. Every input is fully decoded here, so a truncated file stops the command
    before anything is written.
    """
    from colora.core.inference.pipeline import decode

    jobs, broken = list_jobs(inputs, out_dir)
    unreadable = [f"broken link {p}" for p in broken]
    hints = []
    budget = DECODED_BUDGET
    for src, _ in jobs:  # a full decode catches empty, truncated and non-image files before any work
        try:
            image = decode(src, max_pixels)
        except ColoraError as e:
            unreadable.append(e.message)
            hints.append(e.hint)
            continue
        if decoded is not None and image.nbytes <= budget:  # kept for the restore: decoded once, not twice
            decoded[src] = image
            budget -= image.nbytes
    if unreadable:
        raise InvalidInputError(
            f"{len(unreadable)} input(s) are not readable images: "
            + "; ".join(unreadable[:3])
            + (f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""),
            hint=next((h for h in hints if h), "remove them from the inputs, or fix them"),
        )
    existing = [d for _, d in jobs if d.exists() or d.is_symlink()]
    if existing and not overwrite:
        raise ConflictError(
            f"{len(existing)} output file(s) already exist, e.g. {existing[0]}",
            hint="pass --overwrite to replace them, or choose another folder with -o",
        )
    return jobs


def list_jobs(inputs: list[Path], out_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(source, destination) for every input image, and the broken links met in folders; names
    checked (no two inputs onto one output, never an input as output), nothing decoded.

    Folders are read at their top level only (so an output folder inside an input folder is
    never read back as input); symlinks are followed.
    """
    from colora.core.data.images import IMAGE_EXTENSIONS, is_image_file

    _check_out_dir(out_dir)
    out_resolved = out_dir.resolve()
    sources: list[Path] = []
    broken: list[Path] = []
    for item in inputs:
        if item.is_symlink() and not item.exists():
            raise NotFoundError(
                f"broken link: {item} (points to {os.readlink(item)})",
                hint="fix the link or leave it out of the inputs",
            )
        if not item.exists():
            raise NotFoundError(f"input not found: {item}", hint="check the path")
        if item.is_dir():
            if item.resolve() == out_resolved:
                raise InvalidInputError(
                    f"the output folder {out_dir} is one of the inputs", hint="choose another folder with -o"
                )
            entries = sorted(p for p in item.iterdir() if is_image_file(p))
            found = [p for p in entries if p.is_file()]  # follows symlinks; subfolders are not read
            broken += [p for p in entries if p.is_symlink() and not p.exists()]
            if not found and not broken:
                raise InvalidInputError(
                    f"no images in folder {item}",
                    hint="colora reads the top level of a folder, files ending in "
                    + ", ".join(sorted(IMAGE_EXTENSIONS)),
                )
            sources += found
        elif is_image_file(item):
            sources.append(item)
        else:
            raise InvalidInputError(
                f"not an image file: {item}", hint="give .png, .jpg, .bmp, .tif or .webp files or folders"
            )
    jobs, seen = [], {}
    for src in sources:
        dst = out_dir / src.name
        if dst.name in seen:
            raise InvalidInputError(
                f"two inputs would both be written as {dst.name}: {seen[dst.name]} and {src}",
                hint="restore them into different output folders",
            )
        seen[dst.name] = src
        if dst.resolve() == src.resolve():
            raise InvalidInputError(
                f"refusing to overwrite the input {src}", hint="choose another output folder with -o"
            )
        jobs.append((src, dst))
    return jobs, broken


def _check_out_dir(out_dir: Path) -> None:
    """The output path, or the first of its parents that exists, must be a folder."""
    for p in (out_dir, *out_dir.absolute().parents):
        if p.exists() or p.is_symlink():
            if p.is_dir():
                return
            where = "" if p == out_dir else f" ({p} is not a folder)"
            raise InvalidInputError(
                f"the output path {out_dir} is not a folder{where}",
                hint="give a folder with -o; it is created if missing",
            )
