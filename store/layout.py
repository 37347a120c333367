"""Where the store's files go (every `*_relpath` is built here) and the ONNX cache's digests.

A mixin of `colora.store.store.Store`: it uses the store's `path()` and `session()`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from colora.store.names import validate_slug
from colora.store.schema import (
    Adapter,
    Setting,
    Task,
    TrainRun,
)

ONNX_CACHE = "cache/onnx"
CACHE_DIGEST_KEY = "cache_sha256:"  # + the cache file's path: its sha256 (settings table)
ONNX_NAME = re.compile(r"^([0-9a-f]{12})-([a-z0-9]+)\.onnx$")  # after `<task>-`: <key>-<graph>.onnx


class StoreLayout:
    def backbone_relpath(self, name: str) -> str:
        return f"backbones/{validate_slug(name, 'backbone')}.safetensors"

    def checkpoint_relpath(self, task: Task) -> str:
        return f"tasks/{task.name}/checkpoint.safetensors"

    def adapter_relpath(self, task: Task, run: TrainRun) -> str:
        return f"tasks/{task.name}/adapter-{run.id}.safetensors"

    def new_adapter_relpath(self, task_name: str, kind: str) -> str:
        """A fresh name for an adapter that comes from no training run (kind: imported, recycled)."""
        return f"tasks/{validate_slug(task_name)}/adapter-{kind}-{_stamp()}.safetensors"

    def pretrain_checkpoint_relpath(self, backbone_name: str) -> str:
        return f"pretrain/{validate_slug(backbone_name, 'backbone')}/checkpoint.safetensors"

    def new_meta_adapter_relpath(self) -> str:
        return f"recycle/meta-{_stamp()}.safetensors"

    def onnx_relpath(self, task_name: str, adapter: Adapter, graph: str) -> str:
        """The cached ONNX export of a task's model (derived, rebuilt on demand; not indexed). Named
        after the adapter's and its backbone's file digests: a retrained, re-imported or recycled
        adapter never meets the export of the one it replaced."""
        key = onnx_key(adapter.file_sha256, adapter.backbone.file_sha256)
        return f"{ONNX_CACHE}/{validate_slug(task_name)}-{key}-{graph}.onnx"

    def prune_onnx(self, task_name: str, adapter: Adapter) -> None:
        """Remove the task's cached exports of the adapters it had before `adapter`."""
        folder, prefix = self.path(ONNX_CACHE), f"{validate_slug(task_name)}-"
        key = onnx_key(adapter.file_sha256, adapter.backbone.file_sha256)
        for f in sorted(folder.glob(f"{prefix}*.onnx")) if folder.is_dir() else ():
            m = ONNX_NAME.match(f.name[len(prefix) :])  # not a file of a task named `<task>-...`
            if m and m.group(1) != key and f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)
                self.forget_cache_digest(f"{ONNX_CACHE}/{f.name}")

    # The sha256 of each cached export, recorded when colora writes it and checked before every
    # use (and by `doctor`): a cache file changed by anyone else is never run.

    def cache_digest(self, rel: str) -> str | None:
        with self.session() as s:
            row = s.get(Setting, CACHE_DIGEST_KEY + rel)
            return row.value if row is not None else None

    def record_cache_digest(self, rel: str, sha256: str) -> None:
        key = CACHE_DIGEST_KEY + rel
        try:
            with self.session() as s:
                s.merge(Setting(key=key, value=sha256))
        except SQLIntegrityError:  # another process recorded it between our read and insert: ours is newer
            with self.session() as s:
                s.execute(update(Setting).where(Setting.key == key).values(value=sha256))

    def forget_cache_digest(self, rel: str) -> None:
        with self.session() as s:
            row = s.get(Setting, CACHE_DIGEST_KEY + rel)
            if row is not None:
                s.delete(row)


def onnx_key(adapter_file_sha256: str, backbone_file_sha256: str) -> str:
    return hashlib.sha256(f"{adapter_file_sha256}:{backbone_file_sha256}".encode()).hexdigest()[:12]


def _stamp() -> str:
    """A file-name stamp that sorts by time and never repeats (time to the second plus randomness)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
