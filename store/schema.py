"""The index: SQLAlchemy 2.0 typed ORM over the tables that store/migrations.py creates."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import Enum, ForeignKey, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from colora.store.status import RunStatus


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    pass


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Backbone(Base):
    __tablename__ = "backbones"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(Text)  # fingerprint of the tensors
    file_sha256: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)  # relative to the store root
    config: Mapped[str] = mapped_column(Text)
    params: Mapped[int]
    pretrained: Mapped[bool]
    description: Mapped[str] = mapped_column(Text)
    recipe: Mapped[str | None] = mapped_column(Text)
    loss_curve: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int]
    created_at: Mapped[str] = mapped_column(Text, default=utcnow)

    @property
    def label(self) -> str:
        return self.description if self.pretrained else "random init, not pre-trained"


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    folder: Mapped[str] = mapped_column(Text)
    val_folder: Mapped[str | None] = mapped_column(Text)
    val_fraction: Mapped[float | None]
    split_seed: Mapped[int]
    rank_plan: Mapped[str | None] = mapped_column(Text)  # JSON {module path: rank}
    rank_plan_method: Mapped[str | None] = mapped_column(Text)
    rank_plan_info: Mapped[str | None] = mapped_column(Text)  # JSON: budget, scores, settings
    created_at: Mapped[str] = mapped_column(Text, default=utcnow)

    pairs: Mapped[list["Pair"]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )
    adapter: Mapped["Adapter | None"] = relationship(back_populates="task", passive_deletes=True)

    def plan(self) -> dict[str, int] | None:
        return json.loads(self.rank_plan) if self.rank_plan else None


class Pair(Base):
    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    stem: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(Text)
    input_path: Mapped[str] = mapped_column(Text)  # absolute: the user's files stay where they are
    target_path: Mapped[str] = mapped_column(Text)
    width: Mapped[int]
    height: Mapped[int]
    input_sha256: Mapped[str] = mapped_column(Text)
    target_sha256: Mapped[str] = mapped_column(Text)
    task: Mapped[Task] = relationship(back_populates="pairs")


class Adapter(Base):
    __tablename__ = "adapters"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id"))
    path: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int]
    trainable_params: Mapped[int]
    backbone_params: Mapped[int]
    plan_method: Mapped[str] = mapped_column(Text)
    recycled: Mapped[bool] = mapped_column(default=False)
    budget: Mapped[float | None]  # fraction of the backbone's parameters the plan was allowed
    signature: Mapped[str | None] = mapped_column(Text, default=None)  # JSON, see core/recycle/signature.py
    created_at: Mapped[str] = mapped_column(Text, default=utcnow)
    task: Mapped[Task] = relationship(back_populates="adapter")
    backbone: Mapped[Backbone] = relationship()


class TrainRun(Base):
    __tablename__ = "train_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id"))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    status: Mapped[RunStatus] = mapped_column(
        Enum(
            RunStatus,
            native_enum=False,
            create_constraint=False,
            length=None,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    config: Mapped[str] = mapped_column(Text)
    loss_curve: Mapped[str | None] = mapped_column(Text)
    steps_done: Mapped[int] = mapped_column(default=0)
    wall_time_s: Mapped[float | None]
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(Text)  # the machine the process runs on
    heartbeat_at: Mapped[str | None] = mapped_column(Text)  # last sign of life (start, checkpoints)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[str] = mapped_column(Text, default=utcnow)
    finished_at: Mapped[str | None] = mapped_column(Text)


class EvalResult(Base):
    __tablename__ = "eval_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id"))
    subject: Mapped[str] = mapped_column(Text)  # input | backbone | adapter
    psnr: Mapped[float]
    ssim: Mapped[float]
    n_pairs: Mapped[int]
    per_pair: Mapped[str] = mapped_column(Text)  # JSON [[stem, psnr, ssim], ...]
    created_at: Mapped[str] = mapped_column(Text, default=utcnow)


class MetaAdapter(Base):
    """LoRA Recycle's distilled meta-adapter (one per store: a new one replaces the old)."""

    __tablename__ = "meta_adapters"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str | None] = mapped_column(Text)  # None: moved from a store of colora 0.1
    backbone_sha256: Mapped[str] = mapped_column(Text)  # the backbone it was distilled on
    zoo: Mapped[str] = mapped_column(Text)  # JSON [{task, file_sha256}, ...]: the adapters it mixes, in order
    steps: Mapped[int]
    final_loss: Mapped[float]
    created_at: Mapped[str] = mapped_column(Text, default=utcnow)

    def zoo_list(self) -> list[dict]:
        return json.loads(self.zoo)
