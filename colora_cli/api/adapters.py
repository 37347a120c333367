"""Sharing adapters: a task's adapter out of the store as a file (colora's) or a folder (PEFT's),
a file or a PEFT folder into a task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colora.core.choices import ADAPTER_FORMATS
from colora.core.defaults import ADAPTER_FORMAT
from colora.core.errors import ConflictError, IntegrityError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.core.model.weights import AdapterMeta
    from colora.store.schema import Adapter, Backbone
    from colora.store.store import Store


FORMATS = ADAPTER_FORMATS


def export_adapter(
    store: Store, task: str, file: Path, *, overwrite: bool = False, format: str = ADAPTER_FORMAT
) -> Adapter:
    """Copy a task's adapter out of the store (it carries its rank plan and backbone fingerprint),
    as colora's safetensors file or, with format "peft", as a Hugging Face PEFT LoRA folder."""
    from colora.core.files import copy_atomic

    if format not in FORMATS:
        raise InvalidInputError(f"unknown adapter format {format!r}; use one of {', '.join(FORMATS)}")
    adapter = store.adapter(store.task(task))
    if adapter is None:
        raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
    store.refuse_inside(file, "the destination")
    if format == "peft":
        from colora.api.models import adapter_file
        from colora.core.interop.peft import write_peft

        write_peft(Path(file), *adapter_file(store, adapter), overwrite=overwrite)
        return adapter
    if Path(file).exists() and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    copy_atomic(store.path(adapter.path), file, overwrite=overwrite, expected_sha256=adapter.file_sha256)
    return adapter


@dataclass
class Imported:
    meta: AdapterMeta
    backbone: Backbone


def import_adapter(
    store: Store,
    file: Path,
    task: str,
    *,
    replace: bool = False,
    backbone: str | None = None,
    expected_sha256: str | None = None,
) -> Imported:
    """Add an adapter file (or a PEFT LoRA folder) to a task (created, without pairs, if missing),
    all or nothing, after checking its metadata, backbone, layer paths, ranks, shapes, dtypes and
    merged values. A task's trained adapter is replaced only with `replace`. `backbone`: the
    backbone a PEFT adapter made outside colora was trained on (default: the store's default).
    `expected_sha256`: the file's pinned digest (a starter's): the bytes read must be those."""
    from colora.api.models import backbone_model
    from colora.core.files import copy_atomic, sha256_file
    from colora.core.model.lora import adapter_deltas, lora_parameter_count
    from colora.core.model.weights import read_adapter
    from colora.store.names import validate_slug

    validate_slug(task)
    file = Path(file)
    if not file.exists():
        raise NotFoundError(f"{file} not found", hint="give an adapter .safetensors file or a PEFT adapter folder")
    if file.is_dir() or file.name == "adapter_config.json":
        return _import_peft(store, file if file.is_dir() else file.parent, task, replace=replace, backbone=backbone)
    if file.suffix.lower() != ".safetensors":
        raise InvalidInputError(
            f"{file.name} is not a .safetensors file", hint="colora loads weights only from safetensors"
        )
    digest = sha256_file(file)
    if expected_sha256 is not None and digest != expected_sha256:
        raise IntegrityError(f"{file.name} is not the file its manifest pins", hint="reinstall colora")
    tensors, meta = read_adapter(file, digest)  # the bytes checked below are the bytes with this sha256
    backbone_row = store.backbone_by_sha256(meta.backbone_sha256)
    if backbone_row is None:
        raise NotFoundError(
            f"the adapter was trained on backbone {meta.backbone_sha256[:12]}, which this store does not have",
            hint="import that backbone first with `colora backbone import FILE --name NAME`",
        )
    backbone = backbone_model(store, backbone_row)
    adapter_deltas(backbone, meta.rank_plan, meta.alpha, tensors)  # plan paths, shapes, dtypes, finite merged weights
    _refuse_trained(store, task, replace)  # early (the store checks again when it indexes)
    rel = store.new_adapter_relpath(task, "imported")
    copy_atomic(file, store.path(rel))
    if sha256_file(store.path(rel)) != digest:
        store.path(rel).unlink(missing_ok=True)
        raise ConflictError(f"{file.name} changed while it was being imported", hint="import it again")
    store.add_adapter(
        task,
        backbone_row,
        rel,
        trainable_params=lora_parameter_count(backbone, meta.rank_plan),
        plan_method=meta.plan_method,
        budget=meta.budget,
        recycled=meta.recycled,
        replace_trained=replace,
    )
    return Imported(meta, backbone_row)


def _import_peft(store: Store, folder: Path, task: str, *, replace: bool, backbone: str | None) -> Imported:
    """A PEFT LoRA folder, converted to a colora adapter file in the store."""
    import torch

    from colora.api.models import backbone_model
    from colora.core.interop.peft import read_peft
    from colora.core.model.lora import adapter_deltas, lora_parameter_count
    from colora.core.model.weights import AdapterMeta, save_tensors_atomic

    tensors, plan, meta, digest = read_peft(folder)
    if meta is not None and backbone is not None and store.backbone(backbone).sha256 != meta.backbone_sha256:
        raise ConflictError(
            f"the adapter in {folder.name} was made by colora for backbone {meta.backbone_sha256[:12]}, "
            f"not for '{backbone}'",
            hint="leave out --backbone: colora's own exports name theirs",
        )
    if meta is not None:
        backbone_row = store.backbone_by_sha256(meta.backbone_sha256)
        if backbone_row is None:
            raise NotFoundError(
                f"the adapter was trained on backbone {meta.backbone_sha256[:12]}, which this store does not have",
                hint="import that backbone first with `colora backbone import FILE --name NAME`",
            )
    else:  # made by PEFT: the config does not say which weights it was trained on
        backbone_row = store.backbone(backbone)
        meta = AdapterMeta(
            task=task,
            backbone_sha256=backbone_row.sha256,
            rank_plan=plan,
            plan_method="peft",
            trained=f"PEFT LoRA adapter {folder.name}",
            extra={"peft_sha256": digest},
        )
    meta = AdapterMeta.from_metadata(meta.to_metadata(), folder.name)  # what a later load will accept, checked now
    model = backbone_model(store, backbone_row)
    adapter_deltas(model, meta.rank_plan, meta.alpha, tensors)  # plan paths, shapes, dtypes, finite merged weights
    _refuse_trained(store, task, replace)
    rel = store.new_adapter_relpath(task, "imported")
    save_tensors_atomic(
        store.path(rel), {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, meta.to_metadata()
    )
    store.add_adapter(
        task,
        backbone_row,
        rel,
        trainable_params=lora_parameter_count(model, meta.rank_plan),
        plan_method=meta.plan_method,
        budget=meta.budget,
        recycled=meta.recycled,
        replace_trained=replace,
    )
    return Imported(meta, backbone_row)


def _refuse_trained(store: Store, task: str, replace: bool) -> None:
    try:
        current = store.adapter(store.task(task))
    except NotFoundError:
        return
    if current is not None and not current.recycled and not replace:
        raise ConflictError(
            f"task '{task}' already has a trained adapter",
            hint="pass --replace to replace it (its file is removed), or choose another task",
        )
