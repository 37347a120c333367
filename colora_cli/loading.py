"""Loading store weights into models (the bridge between store rows and core)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.schema import Adapter, Backbone  # noqa: F401
    from store.store import Store  # noqa: F401


def load_store_backbone(store: Store, backbone: Backbone):
    from core.model.weights import load_backbone

    model, _ = load_backbone(store.path(backbone.path), expected_sha256=backbone.sha256)
    return model


def load_store_adapter(store: Store, adapter: Adapter, *, merge: bool = True):
    """(backbone model, adapted model); the adapted one merged for fast inference."""
    import copy

    from core.model.lora import merge_all
    from core.model.weights import apply_adapter

    backbone = load_store_backbone(store, adapter.backbone)
    model = copy.deepcopy(backbone)
    apply_adapter(model, adapter.backbone.sha256, store.path(adapter.path))
    if merge:
        merge_all(model)
    model.eval()
    return backbone, model


def load_fast_adapter(store: Store, adapter: Adapter, backbone=None):
    """The adapter merged into the backbone, as an inference-only FastNAFNet (same numbers, faster).

    `backbone`: the adapter's backbone, already loaded (it is not changed).
    """
    from core.model.fast import FastNAFNet
    from core.model.lora import adapter_deltas
    from core.model.weights import read_adapter_for

    if backbone is None:
        backbone = load_store_backbone(store, adapter.backbone)
    tensors, meta = read_adapter_for(adapter.backbone.sha256, store.path(adapter.path))
    return FastNAFNet(backbone.eval(), adapter_deltas(backbone, meta.rank_plan, meta.alpha, tensors))
