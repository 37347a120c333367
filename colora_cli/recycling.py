"""LoRA Recycle's bridge between the store and core: the zoo, signatures, the meta-adapter file."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from core.errors import IntegrityError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.schema import Adapter, Backbone, Task  # noqa: F401
    from store.store import Store  # noqa: F401

META_KEY = "meta_adapter"
SIGNATURE_PAIRS = 16  # training inputs per task that make its signature


def load_zoo(store: Store, backbone_row: Backbone, backbone, *, exclude: str | None = None, dtype=None):
    """ZooAdapters for every trained adapter on this backbone (but `exclude`'s), checked like any adapter."""
    import torch

    from core.recycle.mixture import zoo_adapter
    from core.model.weights import read_adapter_for

    rows = store.zoo(backbone_row, exclude=exclude)
    if not rows:
        raise NotFoundError("the adapter zoo is empty: no other task has a trained adapter on backbone "
                            f"'{backbone_row.name}'", hint="train adapters for other tasks first (`colora train NAME`)")
    zoo = []
    for row in rows:
        tensors, meta = read_adapter_for(backbone_row.sha256, store.path(row.path))
        zoo.append(zoo_adapter(row.task.name, tensors, meta, backbone, dtype or torch.float32))
    return rows, zoo


def task_pairs(store: Store, task: Task, split: str = "train", limit: int | None = None):
    """(input, target) tensors of a task's pairs, checked unchanged since `task add`."""
    from colora_cli.manifest import require_unchanged
    from core.data.crops import load_pair

    rows = store.pairs(task, split)[:limit] if limit else store.pairs(task, split)
    require_unchanged(task.name, rows)
    return [load_pair(p.input_path, p.target_path) for p in rows]


def signatures(store: Store, backbone_row: Backbone, backbone) -> tuple[dict[str, dict], list[str]]:
    """task -> signature for every adapter on this backbone whose task has training pairs (cached in
    the store); and the tasks left out because they have none."""
    import torch

    from core.data.crops import to_tensor
    from core.data.images import load_image
    from core.recycle.signature import EMBEDDING_VERSION, image_features, signature

    found, skipped = {}, []
    for row in store.adapters(backbone_row):
        cached = json.loads(row.signature) if row.signature else None
        if cached and cached.get("version") == EMBEDDING_VERSION:
            found[row.task.name] = cached
            continue
        pairs = store.pairs(row.task, "train")[:SIGNATURE_PAIRS]
        if not pairs:
            skipped.append(row.task.name)
            continue
        embeddings = torch.stack([image_features(to_tensor(load_image(p.input_path)[0]), backbone) for p in pairs])
        sig = signature(embeddings)
        store.set_signature(row, json.dumps(sig))
        found[row.task.name] = sig
    return found, skipped


def recycled_relpath(task: Task) -> str:
    return f"tasks/{task.name}/adapter-recycled-{time.time_ns()}.safetensors"


def save_meta(store: Store, backbone_row: Backbone, net, zoo_rows: list[Adapter], steps: int, curve: list[float]) -> str:
    from core.recycle.meta import meta_metadata
    from core.model.weights import save_tensors_atomic

    rel = f"recycle/meta-{time.time_ns()}.safetensors"
    zoo = [{"task": r.task.name, "file_sha256": r.file_sha256} for r in zoo_rows]
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_tensors_atomic(store.path(rel), state, meta_metadata(backbone_row.sha256, zoo, steps, curve))
    old = json.loads(store.setting(META_KEY) or "null")
    store.set_setting(META_KEY, json.dumps({"path": rel, "backbone_sha256": backbone_row.sha256, "zoo": zoo,
                                            "steps": steps, "final_loss": sum(curve[-20:]) / max(1, len(curve[-20:])),
                                            "created": time.strftime("%Y-%m-%d %H:%M:%S")}))
    if old and old.get("path") != rel:
        store.path(old["path"]).unlink(missing_ok=True)
    return rel


def meta_record(store: Store) -> dict | None:
    return json.loads(store.setting(META_KEY) or "null")


def load_meta_for(store: Store, backbone_row: Backbone, zoo_rows: list[Adapter], target: str):
    """The distilled meta-adapter and the mask of the current zoo (0 for the target task's own adapter).

    Refuses a meta-adapter distilled for another backbone or another set of adapters.
    """
    import torch

    from core.recycle.meta import load_meta
    from core.model.weights import read_tensors

    record = meta_record(store)
    if record is None:
        raise NotFoundError("no meta-adapter yet", hint="distill one with `colora recycle distill`")
    if record["backbone_sha256"] != backbone_row.sha256:
        raise IntegrityError("the meta-adapter was distilled for another backbone",
                             hint="distill it again with `colora recycle distill`")
    current = {r.task.name: r.file_sha256 for r in zoo_rows}
    names = [z["task"] for z in record["zoo"]]
    changed = [z["task"] for z in record["zoo"] if z["task"] != target and current.get(z["task"]) != z["file_sha256"]]
    added = [t for t in current if t not in names]
    if changed or added:
        what = ", ".join(changed + added)
        raise IntegrityError(f"the adapter zoo changed since the meta-adapter was distilled ({what})",
                             hint="distill it again with `colora recycle distill`")
    tensors, metadata = read_tensors(store.path(record["path"]))
    net, _ = load_meta(tensors, metadata)
    mask = torch.tensor([0.0 if n == target else 1.0 for n in names])
    if mask.sum() == 0:
        raise InvalidInputError("the meta-adapter's zoo holds only this task's own adapter")
    return net, names, mask


def check_k(pairs: list, task: str) -> None:
    if not pairs:
        raise InvalidInputError(f"task '{task}' has no training pairs to adapt from",
                                hint=f"add at least one pair: `colora task add {task} FOLDER`")
