"""The starter adapters the package ships (core/weights/starters): one per common degradation,
trained on the bundled backbone by bench/starters.py. `colora init` installs them into a new store;
`colora adapter starters` adds the ones a store lacks (made before they shipped, or one removed)
and gives back a starter's signature that `doctor --reindex` dropped.

Every file is untrusted: the manifest (manifest.json, written by bench/starters.py) pins each
adapter's and signature's sha256, sizes are bounded before reading, and a bad file costs only its
own starter."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colora.core.errors import ColoraError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from colora.store.schema import Backbone
    from colora.store.store import Store

MAX_STARTER_BYTES = 64 * 1024 * 1024  # a starter is ~1.3 MB (7 % of the backbone); never read more
MAX_SIGNATURE_BYTES = 64 * 1024  # a signature is ~5 KB of JSON; anything larger is not one
MAX_MANIFEST_BYTES = 64 * 1024  # a few lines per starter
BAD_SIGNATURE = "missing, damaged or not the manifest's"


@dataclass
class StartersReport:
    installed: list[str] = field(default_factory=list)  # tasks added
    present: list[str] = field(default_factory=list)  # already in the store: left as they are
    signatures: list[str] = field(default_factory=list)  # present starters whose dropped signature came back
    problems: list[str] = field(default_factory=list)  # one line per starter (or signature) left out
    backbone_added: str | None = None  # the starters' backbone, installed because the store lacked it


def read_manifest(folder: Path) -> dict:
    """kind -> {"adapter_sha256", "signature_sha256"}, plus the starters' "backbone_sha256"; {} when
    there is no readable manifest (then no starter is installed: nothing unpinned is trusted)."""
    from colora.core.model.bundled import STARTERS_MANIFEST

    file = folder / STARTERS_MANIFEST
    try:
        if not file.is_file() or file.stat().st_size > MAX_MANIFEST_BYTES:
            return {}
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    ok = isinstance(manifest, dict) and isinstance(manifest.get("starters"), dict)
    return manifest if ok else {}


def install_starters(store: Store, report: StartersReport | None = None) -> StartersReport:
    """Each bundled starter as task `starter-KIND` without pairs, checked like any import (and against
    the manifest's sha256), with its degradation signature (KIND.json) so that `restore --task auto`
    can pick it. A starter whose task already exists is left as it is (its signature restored when
    the task holds that very starter and lost it). The store must hold the starters' backbone."""
    from colora.api.adapters import import_adapter
    from colora.core.files import sha256_file
    from colora.core.model.bundled import STARTERS_DIR, bundled_starters

    report = report or StartersReport()
    pinned = read_manifest(STARTERS_DIR).get("starters", {})
    for task, file in bundled_starters():
        kind = file.stem
        entry = pinned.get(kind) if isinstance(pinned.get(kind), dict) else {}
        try:
            if file.stat().st_size > MAX_STARTER_BYTES:
                raise InvalidInputError(f"{file.name} is larger than a starter adapter can be")
            digest = sha256_file(file)
            if digest != entry.get("adapter_sha256"):
                raise InvalidInputError(f"{file.name} does not match the package's starter manifest")
            if _already_there(store, task, digest, report):
                if task in report.signatures and not _install_signature(store, task, file.with_suffix(".json"), entry):
                    report.signatures.remove(task)
                    report.problems.append(f"{task}'s signature ({kind}.json) is {BAD_SIGNATURE}")
                continue
            import_adapter(store, file, task)
        except (ColoraError, OSError) as e:  # a damaged package file: the store and the other starters stay usable
            report.problems.append(f"{task} not installed: {e}")
            continue
        report.installed.append(task)
        if not _install_signature(store, task, file.with_suffix(".json"), entry):
            why = f"its signature ({kind}.json) is {BAD_SIGNATURE}, so `--task auto` leaves it out"
            report.problems.append(f"{task} installed, but {why}")
    return report


def _already_there(store: Store, task: str, digest: str, report: StartersReport) -> bool:
    """True when the store has a task of this name: noted as present, and marked for its signature
    when it holds this very starter (same file sha256) without one."""
    try:
        row = store.adapter(store.task(task))
    except NotFoundError:
        return False
    report.present.append(task)
    if row is not None and row.file_sha256 == digest and not row.signature:
        report.signatures.append(task)
    return True


def _install_signature(store: Store, task: str, file: Path, entry: dict) -> bool:
    """Cache the starter's signature (its training inputs' features: it has no pairs in the store to
    compute them from); False when there is none to cache. The file is untrusted: size bounded,
    pinned by the manifest, parsed, checked by `usable`; a bad or missing one leaves the starter out
    of `--task auto` only."""
    import hashlib

    from colora.core.recycle.signature import usable

    try:
        if not file.is_file() or file.stat().st_size > MAX_SIGNATURE_BYTES:
            return False
        raw = file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry.get("signature_sha256"):
            return False
        sig = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        return False
    if not usable(sig):
        return False
    store.set_signature(store.adapter(store.task(task)), json.dumps(sig))
    return True


def add_starters(store: Store) -> StartersReport:
    """`colora adapter starters`: the bundled starters this store lacks, and the starters' backbone
    first when the store does not have it (under a free name, not made the default)."""
    from colora.core.model.bundled import STARTERS_DIR, bundled_backbone, bundled_starters

    bundled = bundled_backbone()
    manifest = read_manifest(STARTERS_DIR)
    if bundled is None or not bundled_starters() or not manifest:
        raise NotFoundError(
            "this colora package ships no starter adapters (or their manifest is missing or damaged)",
            hint="reinstall colora (`pip install --force-reinstall colora`)",
        )
    report = StartersReport()
    needed = manifest.get("backbone_sha256")
    if not isinstance(needed, str) or store.backbone_by_sha256(needed) is None:
        report.backbone_added = _install_starters_backbone(store, needed).name
    return install_starters(store, report)


def _install_starters_backbone(store: Store, needed) -> Backbone:
    """The bundled backbone, which the starters were trained on, beside the store's own."""
    from colora.api.backbones import install_file
    from colora.core.model.bundled import bundled_backbone
    from colora.core.model.weights import load_backbone

    path, name = bundled_backbone()
    _, meta = load_backbone(path)
    if meta["sha256"] != needed:
        raise InvalidInputError(
            "the package's starter adapters were not trained on its bundled backbone",
            hint="reinstall colora (`pip install --force-reinstall colora`)",
        )
    taken = {b.name for b in store.backbones()}
    return install_file(store, path, name if name not in taken else f"{name}-{needed[:12]}")
