"""The starter adapters the package ships (core/weights/starters): one per common degradation,
trained on the bundled backbone by bench/starters.py. `colora init` installs them into a new store;
`colora adapter starters` adds the ones a store lacks (made before they shipped, or one removed)
and gives back a starter's signature that `doctor --reindex` dropped.

Every file is untrusted: the manifest (manifest.json, written by bench/starters.py) pins each
adapter's and signature's sha256 and the backbone they were trained on, sizes are bounded before
reading, and a bad file costs only its own starter."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colora.core.errors import ColoraError, ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from colora.store.schema import Backbone
    from colora.store.store import Store

MAX_STARTER_BYTES = 64 * 1024 * 1024  # a starter is ~1.3 MB (7 % of the backbone); never read more
MAX_SIGNATURE_BYTES = 64 * 1024  # a signature is ~5 KB of JSON; anything larger is not one
MAX_MANIFEST_BYTES = 64 * 1024  # a few lines per starter
BAD_SIGNATURE = "missing, damaged or not the manifest's"
SHA256 = re.compile(r"[0-9a-f]{64}")
REINSTALL = "reinstall colora (`pip install --force-reinstall colora`)"


@dataclass
class StartersReport:
    installed: list[str] = field(default_factory=list)  # tasks added
    present: list[str] = field(default_factory=list)  # the very starter already in the store: left as it is
    signatures: list[str] = field(default_factory=list)  # present starters whose dropped signature came back
    taken: list[str] = field(default_factory=list)  # a task of the starter's name holds another adapter
    problems: list[str] = field(default_factory=list)  # one line per starter (or signature) left out
    backbone_added: str | None = None  # the starters' backbone, installed because the store lacked it
    backbone_is_default: bool = False  # ... and made the default, because the store had none


@dataclass
class Pinned:
    task: str
    file: Path
    adapter_sha256: str
    signature_sha256: str | None


def read_manifest(folder: Path) -> dict | None:
    """{"backbone_sha256": ..., "starters": {kind: {"adapter_sha256", "signature_sha256"}}}, or None
    when there is no sound manifest (then no starter is installed: nothing unpinned is trusted)."""
    from colora.core.model.bundled import STARTERS_MANIFEST

    file = folder / STARTERS_MANIFEST
    try:
        if not file.is_file() or file.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("starters"), dict):
        return None
    backbone = manifest.get("backbone_sha256")
    return manifest if isinstance(backbone, str) and SHA256.fullmatch(backbone) else None


def pinned_starters(report: StartersReport) -> tuple[str, list[Pinned]]:
    """(the starters' backbone sha256, each bundled starter whose file the manifest pins); a file the
    manifest does not pin, or pins to other bytes, is a problem line. Raises when there is no manifest."""
    from colora.core.files import sha256_file
    from colora.core.model.bundled import STARTERS_DIR, bundled_starters

    manifest = read_manifest(STARTERS_DIR)
    if manifest is None:
        raise NotFoundError(
            "the package's starter manifest is missing or damaged: no starter installed", hint=REINSTALL
        )
    found = []
    for task, file in bundled_starters():
        entry = manifest["starters"].get(file.stem)
        entry = entry if isinstance(entry, dict) else {}
        signature = entry.get("signature_sha256")
        try:
            if not isinstance(entry.get("adapter_sha256"), str):
                raise InvalidInputError(f"{file.name} is not listed in the package's starter manifest")
            if file.stat().st_size > MAX_STARTER_BYTES:
                raise InvalidInputError(f"{file.name} is larger than a starter adapter can be")
            if sha256_file(file) != entry["adapter_sha256"]:
                raise InvalidInputError(f"{file.name} does not match the package's starter manifest")
        except (ColoraError, OSError) as e:
            report.problems.append(f"{task} not installed: {e}")
            continue
        found.append(Pinned(task, file, entry["adapter_sha256"], signature if isinstance(signature, str) else None))
    return manifest["backbone_sha256"], found


def install_starters(store: Store, report: StartersReport | None = None) -> StartersReport:
    """Each bundled starter as task `starter-KIND` without pairs, checked like any import (and
    against the manifest's sha256), with its degradation signature (KIND.json) so that `restore
    --task auto` can pick it. A task of that name already there is left as it is (when it holds this
    very starter without its signature, the signature comes back). The store must hold the
    starters' backbone; a manifest that is missing or damaged installs nothing."""
    report = report or StartersReport()
    try:
        _, starters = pinned_starters(report)
    except ColoraError as e:
        report.problems.append(e.message)
        return report
    return _install(store, starters, report)


def _install(store: Store, starters: list[Pinned], report: StartersReport) -> StartersReport:
    from colora.api.adapters import import_adapter

    for s in starters:
        kind = s.file.stem
        try:
            if _already_there(store, s, report):
                if s.task in report.signatures and not _install_signature(store, s):
                    report.signatures.remove(s.task)
                    report.problems.append(f"{s.task}'s signature ({kind}.json) is {BAD_SIGNATURE}")
                continue
            import_adapter(store, s.file, s.task, expected_sha256=s.adapter_sha256)
        except (ColoraError, OSError) as e:  # a damaged package file: the store and the other starters stay usable
            report.problems.append(f"{s.task} not installed: {e}")
            continue
        report.installed.append(s.task)
        if not _install_signature(store, s):
            why = f"its signature ({kind}.json) is {BAD_SIGNATURE}, so `--task auto` leaves it out"
            report.problems.append(f"{s.task} installed, but {why}")
    return report


def _already_there(store: Store, starter: Pinned, report: StartersReport) -> bool:
    """True when the store has a task of the starter's name: present when it holds this very starter
    (marked for its signature when it has none), taken when it holds anything else."""
    try:
        row = store.adapter(store.task(starter.task))
    except NotFoundError:
        return False
    if row is None or row.file_sha256 != starter.adapter_sha256:
        report.taken.append(starter.task)
        return True
    report.present.append(starter.task)
    if not row.signature:
        report.signatures.append(starter.task)
    return True


def _install_signature(store: Store, starter: Pinned) -> bool:
    """Cache the starter's signature (its training inputs' features: it has no pairs in the store to
    compute them from) on the task's adapter, when that adapter is this starter; False when there is
    none to cache. The file is untrusted: size bounded, pinned by the manifest, parsed, checked by
    `usable`; a bad or missing one leaves the starter out of `--task auto` only."""
    import hashlib

    from colora.core.recycle.signature import usable

    file = starter.file.with_suffix(".json")
    try:
        if not file.is_file() or file.stat().st_size > MAX_SIGNATURE_BYTES:
            return False
        raw = file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != starter.signature_sha256:
            return False
        sig = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        return False
    adapter = store.adapter(store.task(starter.task))
    if not usable(sig) or adapter is None or adapter.file_sha256 != starter.adapter_sha256:
        return False
    store.set_signature(adapter, json.dumps(sig))
    return True


def lacks_starters(store: Store) -> bool:
    """The package ships starters and the store has none of their tasks (`init` then hints at the command)."""
    from colora.core.model.bundled import STARTER_PREFIX, bundled_starters

    return bool(bundled_starters()) and not any(t.name.startswith(STARTER_PREFIX) for t in store.tasks())


def add_starters(store: Store) -> StartersReport:
    """`colora adapter starters`: the bundled starters this store lacks, with the starters' backbone
    first when the store does not have it (under a free name; the default only if there is none)."""
    from colora.core.model.bundled import bundled_backbone, bundled_starters

    if bundled_backbone() is None or not bundled_starters():
        raise NotFoundError("this colora package ships no starter adapters", hint=REINSTALL)
    report = StartersReport()
    backbone_sha256, starters = pinned_starters(report)
    if not starters:
        raise InvalidInputError("no starter file matches the package's manifest: none installed", hint=REINSTALL)
    if store.backbone_by_sha256(backbone_sha256) is None:
        had_default = store.default_backbone_name() is not None
        report.backbone_added = _install_starters_backbone(store, backbone_sha256).name
        report.backbone_is_default = not had_default
    return _install(store, starters, report)


def _install_starters_backbone(store: Store, needed: str) -> Backbone:
    """The bundled backbone, which the starters were trained on, beside the store's own."""
    from colora.api.backbones import install_file
    from colora.core.model.bundled import bundled_backbone
    from colora.core.model.weights import load_backbone

    path, name = bundled_backbone()
    _, meta = load_backbone(path)
    if meta["sha256"] != needed:
        raise InvalidInputError(
            "the package's starter adapters were not trained on its bundled backbone", hint=REINSTALL
        )
    taken = {b.name for b in store.backbones()}
    free = next((n for n in (name, f"{name}-{needed[:12]}") if n not in taken), None)
    if free is None:
        raise ConflictError(
            f"backbones named '{name}' and '{name}-{needed[:12]}' hold other weights: no name left for the starters'",
            hint=f"import the bundled backbone under a name of your own (`colora backbone import {path} --name NAME`)",
        )
    return install_file(store, path, free)
