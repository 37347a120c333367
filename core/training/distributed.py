"""Data-parallel training under `torchrun` (torch.distributed: gloo on CPUs, nccl on GPUs).

colora does not wrap the model in DistributedDataParallel: the trained tensors are few (an
adapter's LoRA factors) or, in pre-training, a small net, so averaging their gradients after each
backward with all-reduce is as fast and keeps `fit` one loop for one and for many processes.

A step's global batch is the per-process batch times the number of processes. Every process
draws the whole step's crop positions, flips and degradation recipes from the same seeded
generator (cheap numbers) and builds only its own slice of crops (the costly part); so N
processes with batch B train exactly as one process with batch N*B, and the generator state in a
checkpoint is every process's state (any of them can resume from it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from colora.core.errors import ConflictError


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes checkpoints, weights and the store's rows."""
        return self.rank == 0

    def shard(self, batch_size: int) -> range:
        """This process's samples of a global batch of `batch_size * size`."""
        return range(self.rank * batch_size, (self.rank + 1) * batch_size)

    def average_gradients(self, params) -> None:
        """One all-reduce of every gradient flattened into one buffer (a LoRA has hundreds of small
        tensors: one collective each would cost more than the step)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: torch.Tensor) -> float:
        total = value.detach().double().reshape(1)  # on the model's device (nccl reduces GPU tensors)
        dist.all_reduce(total)
        return float(total.item() / self.size)

    def same_parameters(self, params) -> None:
        """Every process starts from the leader's parameters."""
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def share(self, text: str | None) -> str:
        """The leader's `text` (JSON: what it decided, e.g. a rank plan) in every process."""
        box = [text]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        dist.barrier()


@contextmanager
def peers_guarded(world: World | None) -> Iterator[None]:
    """A collective that fails because another process of the job died, as one clear error."""
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        if world is None or not (isinstance(e, dist.DistError) or "gloo" in text.lower() or "nccl" in text.lower()):
            raise
        first = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
        raise ConflictError(
            f"another process of this torchrun job stopped ({first.strip()[:160]})",
            hint="run the same command again with --resume (as many processes)",
        ) from None


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> World | None:
    """The process group torchrun prepared (joined on first use), or None for a single process."""
    if not launched():
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())
