"""Installing backbones into a store (shared by `init` and `backbone` commands)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.schema import Backbone  # noqa: F401
    from store.store import Store  # noqa: F401


def install_random(store: Store, config_name: str, seed: int, name: str | None = None) -> Backbone:
    from core.model.backbone import PRESETS, build_backbone, count_parameters
    from core.errors import InvalidInputError
    from core.model.weights import save_backbone

    if config_name not in PRESETS:
        raise InvalidInputError(f"unknown backbone config {config_name!r}; use one of {', '.join(PRESETS)}")
    model = build_backbone(PRESETS[config_name], seed)
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        path = Path(tmp) / "backbone.safetensors"
        sha = save_backbone(path, model, {"pretrained": "false", "seed": str(seed)})
        return store.add_backbone(
            name or f"random-{config_name}", path, sha256=sha, config=model.config.to_json(),
            params=count_parameters(model), pretrained=False,
            description="random init, not pre-trained", recipe={"seed": seed, "config": config_name},
        )


def install_file(store: Store, path: Path, name: str, *, make_default: bool = False) -> Backbone:
    """A backbone safetensors file (bundled or user-supplied), validated before it is copied."""
    from core.model.backbone import count_parameters
    from core.model.weights import load_backbone

    model, meta = load_backbone(path)
    pretrained = meta.get("pretrained", "false") == "true"
    return store.add_backbone(
        name, path, sha256=meta["sha256"], config=model.config.to_json(), params=count_parameters(model),
        pretrained=pretrained, description=meta.get("description", "imported backbone"),
        recipe=json.loads(meta["recipe"]) if "recipe" in meta else None,
        loss_curve=json.loads(meta["loss_curve"]) if "loss_curve" in meta else None,
        make_default=make_default,
    )


def install_bundled(store: Store) -> Backbone:
    from core.model.bundled import bundled_backbone

    path, name = bundled_backbone()
    return install_file(store, path, name, make_default=True)
