"""Sharing adapters: a task's adapter out of the store as a file, a file into a task."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from core.model.weights import AdapterMeta
    from store.schema import Adapter, Backbone
    from store.store import Store


def export_adapter(store: Store, task: str, file: Path, *, overwrite: bool = False) -> Adapter:
    """Copy a task's adapter out of the store (it carries its rank plan and backbone fingerprint)."""
    from core.files import copy_atomic

    adapter = store.adapter(store.task(task))
    if adapter is None:
        raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
    store.refuse_inside(file, "the destination")
    if Path(file).exists() and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    copy_atomic(store.path(adapter.path), file)
    return adapter


@dataclass
class Imported:
    meta: AdapterMeta
    backbone: Backbone


def import_adapter(store: Store, file: Path, task: str, *, replace: bool = False) -> Imported:
    """Add an adapter file to a task (created, without pairs, if missing), all or nothing, after
    checking its metadata, backbone, layer paths, ranks, shapes, dtypes and merged values. A task's
    trained adapter is replaced only with `replace`."""
    from colora_cli.api.models import backbone_model
    from core.files import copy_atomic, sha256_file
    from core.model.lora import adapter_deltas, lora_parameter_count
    from core.model.weights import read_adapter
    from store.names import validate_slug

    validate_slug(task)
    file = Path(file)
    if file.suffix.lower() != ".safetensors":
        raise InvalidInputError(f"{file.name} is not a .safetensors file", hint="colora loads weights only from safetensors")
    digest = sha256_file(file)
    tensors, meta = read_adapter(file, digest)  # the bytes checked below are the bytes with this sha256
    backbone_row = store.backbone_by_sha256(meta.backbone_sha256)
    if backbone_row is None:
        raise NotFoundError(f"the adapter was trained on backbone {meta.backbone_sha256[:12]}, which this store does not have",
                            hint="import that backbone first with `colora backbone import FILE --name NAME`")
    backbone = backbone_model(store, backbone_row)
    adapter_deltas(backbone, meta.rank_plan, meta.alpha, tensors)  # plan paths, shapes, dtypes, finite merged weights
    _refuse_trained(store, task, replace)  # early (the store checks again when it indexes)
    rel = store.new_adapter_relpath(task, "imported")
    copy_atomic(file, store.path(rel))
    if sha256_file(store.path(rel)) != digest:
        store.path(rel).unlink(missing_ok=True)
        raise ConflictError(f"{file.name} changed while it was being imported", hint="import it again")
    store.add_adapter(task, backbone_row, rel, trainable_params=lora_parameter_count(backbone, meta.rank_plan),
                      plan_method=meta.plan_method, budget=meta.budget, recycled=meta.recycled, replace_trained=replace)
    return Imported(meta, backbone_row)


def _refuse_trained(store: Store, task: str, replace: bool) -> None:
    try:
        current = store.adapter(store.task(task))
    except NotFoundError:
        return
    if current is not None and not current.recycled and not replace:
        raise ConflictError(f"task '{task}' already has a trained adapter",
                            hint="pass --replace to replace it (its file is removed), or choose another task")
