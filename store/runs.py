"""Training runs: claiming a task for one process at a time, heartbeats, finishing a run.

A mixin of `colora.store.store.Store`: it uses the store's `session()`, `path()` and layout.
"""

from __future__ import annotations

import json
import os

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from colora.core.errors import ConflictError, NotFoundError
from colora.store.processes import as_utc, run_alive, this_host
from colora.store.schema import (
    Adapter,
    Backbone,
    Task,
    TrainRun,
    utcnow,
)
from colora.store.status import RunStatus


class TrainingRuns:
    def start_run(self, task: Task, backbone: Backbone, config: str, *, resume: TrainRun | None = None) -> TrainRun:
        """Claim the task for this process: a new run, or `resume` continued.

        Refused when another live process trains the task. The check and the claim are one
        transaction that first takes the write lock (an UPDATE of the task row), so two
        processes starting at once cannot both pass the check.
        """
        with self.session() as s:
            locked = s.execute(update(Task).where(Task.id == task.id).values(name=Task.name))  # the write lock
            if locked.rowcount == 0:
                raise _removed(task)
            self._refuse_live_run(s, task)
            if resume is not None:
                run = s.get_one(TrainRun, resume.id)
                run.status, run.pid, run.error = RunStatus.RUNNING, os.getpid(), None
                run.host, run.heartbeat_at = this_host(), self._now(s)
                return run
            # a fresh run reuses the task's checkpoint file: earlier unfinished runs can no longer resume
            for old in s.scalars(
                select(TrainRun).where(TrainRun.task_id == task.id, TrainRun.status != RunStatus.DONE)
            ):
                old.status, old.checkpoint_path = RunStatus.ABANDONED, None
            run = TrainRun(
                task_id=task.id,
                backbone_id=backbone.id,
                status=RunStatus.RUNNING,
                config=config,
                checkpoint_path=self.checkpoint_relpath(task),
                pid=os.getpid(),
                host=this_host(),
                heartbeat_at=self._now(s),
            )
            s.add(run)
            s.flush()
            return run

    def refuse_if_training(self, task: Task) -> None:
        """An early, read-only form of `start_run`'s check (before minutes of work that it would waste)."""
        with self.session() as s:
            self._refuse_live_run(s, task)

    def heartbeat(self, run: TrainRun) -> None:
        """A sign of life of this run, on the database's clock, for machines that cannot probe its
        process (store/processes.py). Refused when the run is no longer running: another process
        took the task over after judging this one dead, and this one must stop."""
        with self.session() as s:
            done = s.execute(
                update(TrainRun)
                .where(TrainRun.id == run.id, TrainRun.status == RunStatus.RUNNING)
                .values(heartbeat_at=self._now(s))
            )
            if done.rowcount == 0 and s.get(TrainRun, run.id) is None:
                raise ConflictError(
                    f"the task of training run {run.id} was removed (its machine looked dead to the "
                    "others); this one stops",
                    hint="add the task again with `colora task add` to train it",
                )
            if done.rowcount == 0:
                raise ConflictError(
                    f"training run {run.id} was taken over by another process (its machine looked "
                    "dead to the others); this one stops",
                    hint="see `colora list` for the task",
                )

    def database_time(self) -> str:
        with self.session() as s:
            return self._now(s)

    def _now(self, s: Session) -> str:
        """The database's clock (UTC, ISO): every machine of a team judges heartbeats by one clock."""
        if not self.url:
            return utcnow()
        return as_utc(s.scalar(text("SELECT CURRENT_TIMESTAMP"))).isoformat(timespec="seconds")

    def _refuse_live_run(self, s: Session, task: Task, *, doing: str = "train") -> None:
        now = self._now(s)
        for other in s.scalars(
            select(TrainRun).where(TrainRun.task_id == task.id, TrainRun.status == RunStatus.RUNNING)
        ):
            mine = other.pid == os.getpid() and other.host in (None, this_host())
            alive = run_alive(other.pid, other.host, other.heartbeat_at, now=now, shared=bool(self.url))
            if other.pid and not mine and alive:
                where = "" if other.host in (None, this_host()) else f" on {other.host}"
                if doing == "remove":
                    raise ConflictError(
                        f"task '{task.name}' is being trained (process {other.pid}{where}); it is not removed",
                        hint="wait for the training to finish, or stop it (Ctrl-C), then remove the task",
                    )
                raise ConflictError(
                    f"task '{task.name}' is already being trained (process {other.pid}{where})",
                    hint="wait for it to finish, or stop it and use --resume",
                )

    def resumable_run(self, task: Task) -> TrainRun | None:
        """The latest unfinished run of this task whose checkpoint file exists."""
        with self.session() as s:
            run = s.scalar(select(TrainRun).where(TrainRun.task_id == task.id).order_by(TrainRun.id.desc()))
        if run and run.status != RunStatus.DONE and run.checkpoint_path and self.path(run.checkpoint_path).exists():
            return run
        return None

    def mark_run(self, run: TrainRun, status: RunStatus, *, error: str | None = None) -> None:
        with self.session() as s:
            row = s.get(TrainRun, run.id)
            if row is None:  # its task was removed meanwhile (by a process that judged this one dead)
                return
            row.status = status
            row.error = error

    def finish_run(
        self,
        run: TrainRun,
        task: Task,
        *,
        adapter_rel: str,
        trainable_params: int,
        backbone_params: int,
        plan_method: str,
        budget: float | None,
        loss_curve: list,
        steps_done: int,
        wall_time_s: float,
    ) -> Adapter:
        """Index the adapter file (already in place) and close the run, in one transaction."""
        with self.session() as s:
            row = s.get(TrainRun, run.id)
            if row is None:  # the task was removed meanwhile: nothing may be left of this run
                self.path(adapter_rel).unlink(missing_ok=True)
                if run.checkpoint_path:
                    self.path(run.checkpoint_path).unlink(missing_ok=True)
                raise _removed(task)
            if row.status != RunStatus.RUNNING:  # taken over meanwhile: its adapter must not replace the new one
                self.path(adapter_rel).unlink(missing_ok=True)
                raise ConflictError(
                    f"training run {run.id} was taken over by another process; its result is dropped",
                    hint="see `colora list` for the task",
                )
            adapter, old_file = self._replace_adapter(
                s,
                task,
                run.backbone_id,
                adapter_rel,
                trainable_params=trainable_params,
                backbone_params=backbone_params,
                plan_method=plan_method,
                budget=budget,
            )
            row.status, row.adapter_id, row.finished_at = RunStatus.DONE, adapter.id, utcnow()
            row.loss_curve, row.steps_done, row.wall_time_s = json.dumps(loss_curve), steps_done, wall_time_s
            row.checkpoint_path = None
        if old_file and old_file != adapter_rel:
            self.path(old_file).unlink(missing_ok=True)
        if run.checkpoint_path:
            self.path(run.checkpoint_path).unlink(missing_ok=True)
        return adapter

    def run(self, run_id: int) -> TrainRun:
        with self.session() as s:
            run = s.get(TrainRun, run_id)
        if run is None:
            raise NotFoundError(f"no training run {run_id} in the store")
        return run

    def last_run(self, task: Task) -> TrainRun | None:
        with self.session() as s:
            return s.scalar(select(TrainRun).where(TrainRun.task_id == task.id).order_by(TrainRun.id.desc()))


def _removed(task: Task) -> ConflictError:
    return ConflictError(
        f"task '{task.name}' was removed while this training ran; its result is dropped",
        hint=f"add the task again (`colora task add {task.name} FOLDER`) to train it",
    )
