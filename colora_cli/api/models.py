"""Store rows -> models: the one way a backbone, an adapter or a task's model is loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and SQLAlchemy load only where a model is built
    from colora.core.model.weights import AdapterMeta
    from colora.store.schema import Adapter, Backbone
    from colora.store.store import Store


def backbone_model(store: Store, row: Backbone):
    """The backbone's NAFNet (frozen, eval mode), its file checked against the recorded sha256."""
    from colora.core.model.weights import load_backbone

    model, _ = load_backbone(store.path(row.path), expected_sha256=row.sha256, expected_file_sha256=row.file_sha256)
    return model


def adapter_file(store: Store, adapter: Adapter) -> tuple[dict, AdapterMeta]:
    """An indexed adapter's tensors and metadata, refused unless made for its backbone and unchanged
    since it was stored (its file's sha256)."""
    from colora.core.model.weights import read_adapter_for

    return read_adapter_for(adapter.backbone.sha256, store.path(adapter.path), adapter.file_sha256)


def task_model(store: Store, adapter: Adapter, backbone=None):
    """(inference graph of backbone + adapter, the adapter's metadata), for eval, restore and compare.

    The adapter's deltas go straight into the graph (core.model.fast): no copy of the backbone, no
    LoRA layers. `backbone`: the adapter's backbone model when already loaded (it is not changed).
    """
    from colora.core.model.fast import FastNAFNet

    backbone, deltas, meta = task_parts(store, adapter, backbone)
    return FastNAFNet(backbone, deltas), meta


def task_parts(store: Store, adapter: Adapter, backbone=None):
    """(the backbone in eval mode, the adapter's weight deltas by module path, its metadata): what a
    task's model is built from, here or in an ONNX export (api/exporting.py)."""
    from colora.core.model.lora import adapter_deltas

    if backbone is None:
        backbone = backbone_model(store, adapter.backbone)
    tensors, meta = adapter_file(store, adapter)
    return backbone.eval(), adapter_deltas(backbone, meta.rank_plan, meta.alpha, tensors), meta
