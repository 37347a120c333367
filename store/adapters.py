"""Adapters in the index: a task's adapter, the zoo, indexing and replacing adapter files,
evaluation rows and LoRA Recycle's meta-adapter.

A mixin of `colora.store.store.Store`: it uses the store's `session()`, `path()` and layout.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, joinedload

from colora.core.errors import ConflictError
from colora.core.files import sha256_file
from colora.store.names import validate_slug
from colora.store.schema import (
    Adapter,
    Backbone,
    EvalResult,
    MetaAdapter,
    Task,
)


class AdapterIndex:
    def adapter(self, task: Task) -> Adapter | None:
        with self.session() as s:
            return s.scalar(select(Adapter).options(joinedload(Adapter.backbone)).where(Adapter.task_id == task.id))

    def zoo(self, backbone: Backbone, *, exclude: str | None = None) -> list[Adapter]:
        """Trained (not recycled) adapters on `backbone`, by task name: what LoRA Recycle mixes."""
        with self.session() as s:
            rows = s.scalars(
                select(Adapter)
                .options(joinedload(Adapter.task), joinedload(Adapter.backbone))
                .where(Adapter.backbone_id == backbone.id, Adapter.recycled.is_(False))
            )
            return sorted((a for a in rows if a.task.name != exclude), key=lambda a: a.task.name)

    def adapters(self, backbone: Backbone) -> list[Adapter]:
        """Every adapter on `backbone` (trained, imported or recycled), by task name."""
        with self.session() as s:
            rows = s.scalars(
                select(Adapter)
                .options(joinedload(Adapter.task), joinedload(Adapter.backbone))
                .where(Adapter.backbone_id == backbone.id)
            )
            return sorted(rows, key=lambda a: a.task.name)

    def set_signature(self, adapter: Adapter, signature: str) -> None:
        with self.session() as s:
            row = s.get(Adapter, adapter.id)
            if row is not None and row.file_sha256 == adapter.file_sha256:
                row.signature = signature

    def add_adapter(
        self,
        task: Task | str,
        backbone: Backbone,
        adapter_rel: str,
        *,
        trainable_params: int,
        plan_method: str,
        budget: float | None,
        recycled: bool = False,
        replace_trained: bool = True,
    ) -> Adapter:
        """Index an adapter file (already in place) that did not come from a training run (imported,
        recycled), all or nothing: in one transaction the task is created if `task` is a name the
        store does not have, and a trained adapter is replaced only with `replace_trained`. If
        anything refuses or fails, no row is written and the file is removed."""
        try:
            try:
                adapter, old_file = self._index_adapter(
                    task, backbone, adapter_rel, trainable_params, plan_method, budget, recycled, replace_trained
                )
            except SQLIntegrityError:  # another command created the same task a moment ago: once more
                adapter, old_file = self._index_adapter(
                    task, backbone, adapter_rel, trainable_params, plan_method, budget, recycled, replace_trained
                )
        except BaseException:
            self.path(adapter_rel).unlink(missing_ok=True)
            raise
        if old_file and old_file != adapter_rel:
            self.path(old_file).unlink(missing_ok=True)
        return adapter

    def _index_adapter(
        self,
        task: Task | str,
        backbone: Backbone,
        adapter_rel: str,
        trainable_params: int,
        plan_method: str,
        budget: float | None,
        recycled: bool,
        replace_trained: bool,
    ) -> tuple[Adapter, str | None]:
        with self.session() as s:
            if isinstance(task, str):
                row = s.scalar(select(Task).where(Task.name == validate_slug(task)))
                if row is None:
                    row = Task(name=task, folder="(imported adapter)", val_folder=None, val_fraction=None, split_seed=0)
                    s.add(row)
                    s.flush()
                task = row
            old = s.scalar(select(Adapter).where(Adapter.task_id == task.id))
            if old is not None and not old.recycled and not replace_trained:
                raise ConflictError(
                    f"task '{task.name}' already has a trained adapter",
                    hint="pass --replace to replace it (its file is removed), or choose another task",
                )
            return self._replace_adapter(
                s,
                task,
                backbone.id,
                adapter_rel,
                trainable_params=trainable_params,
                backbone_params=backbone.params,
                plan_method=plan_method,
                budget=budget,
                recycled=recycled,
            )

    def _replace_adapter(
        self, s: Session, task: Task, backbone_id: int, adapter_rel: str, **fields
    ) -> tuple[Adapter, str | None]:
        """A task has one current adapter: the new row replaces the old one (whose file the caller removes)."""
        path = self.path(adapter_rel)
        old = s.scalar(select(Adapter).where(Adapter.task_id == task.id))
        old_file = old.path if old is not None else None
        if old is not None:
            s.delete(old)
            s.flush()
        adapter = Adapter(
            task_id=task.id,
            backbone_id=backbone_id,
            path=adapter_rel,
            file_sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            **fields,
        )
        s.add(adapter)
        s.flush()
        return adapter, old_file

    def backbone_by_sha256(self, sha256: str) -> Backbone | None:
        with self.session() as s:
            return s.scalar(select(Backbone).where(Backbone.sha256 == sha256).order_by(Backbone.id))

    def record_eval(
        self, task: Task, backbone: Backbone, adapter: Adapter | None, results: dict[str, tuple[float, float, list]]
    ) -> dict[str, EvalResult]:
        """results: subject -> (mean psnr, mean ssim, [[stem, psnr, ssim], ...]); returns the rows written."""
        rows = {
            subject: EvalResult(
                task_id=task.id,
                adapter_id=adapter.id if adapter and subject == "adapter" else None,
                backbone_id=backbone.id,
                subject=subject,
                psnr=psnr,
                ssim=ssim,
                n_pairs=len(per_pair),
                per_pair=json.dumps(per_pair),
            )
            for subject, (psnr, ssim, per_pair) in results.items()
        }
        with self.session() as s:
            s.add_all(rows.values())
        return rows

    def last_eval(self, task: Task, subject: str) -> EvalResult | None:
        with self.session() as s:
            return s.scalar(
                select(EvalResult)
                .where(EvalResult.task_id == task.id, EvalResult.subject == subject)
                .order_by(EvalResult.id.desc())
            )

    def meta_adapter(self) -> MetaAdapter | None:
        with self.session() as s:
            return s.scalar(select(MetaAdapter).order_by(MetaAdapter.id.desc()))

    def set_meta_adapter(
        self, rel: str, *, backbone_sha256: str, zoo: list[dict], steps: int, final_loss: float
    ) -> MetaAdapter:
        """Index a meta-adapter file (already in place); it replaces the previous one, whose file is removed."""
        with self.session() as s:
            old = list(s.scalars(select(MetaAdapter)))
            for row in old:
                s.delete(row)
            meta = MetaAdapter(
                path=rel,
                file_sha256=sha256_file(self.path(rel)),
                backbone_sha256=backbone_sha256,
                zoo=json.dumps(zoo),
                steps=steps,
                final_loss=final_loss,
            )
            s.add(meta)
        for row in old:
            if row.path != rel:
                self.path(row.path).unlink(missing_ok=True)
        return meta
