"""Restoring many files: decode ahead and encode behind on threads while the model computes.

Pillow releases the GIL while it decodes and compresses, so with one reader and one writer
thread the network rarely waits for the disk or the codec. A file that fails is reported and
skipped; the others go on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import ColoraError


@dataclass
class Decoded:
    rgb: np.ndarray
    meta: object
    alpha: np.ndarray | None


def _decode(src: Path) -> Decoded:
    from core.images import load_image

    return Decoded(*load_image(src))


def restore_many(
    jobs: Sequence[tuple[Path, Path]],
    restore_one: Callable[[Path, torch.Tensor], torch.Tensor],
    *,
    overwrite: bool = False,
    prefetch: int = 2,
    on_done: Callable[[int, Path, str | None], None] | None = None,
) -> list[tuple[Path, str]]:
    """Restore every (source, destination) job; returns [(source, error message)] for failures.

    `restore_one(source, (3, H, W) tensor in [0, 1])` returns the restored tensor.
    """
    from core.data import to_numpy, to_tensor
    from core.images import save_image

    failures: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="colora-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="colora-write") as writer:
        ahead: dict[int, Future] = {}
        writes: list[tuple[int, Path, Future]] = []
        done = 0

        def report(i: int, src: Path, error: str | None) -> None:
            nonlocal done
            done += 1
            if error is not None:
                failures.append((src, error))
            if on_done:
                on_done(done, src, error)

        def drain(block: bool, keep: int = 0) -> None:
            """Report finished writes; with `block`, wait until at most `keep` are pending."""
            while len(writes) > keep and (block or writes[0][2].done()):
                i, src, fut = writes.pop(0)
                try:
                    fut.result()
                    report(i, src, None)
                except ColoraError as e:
                    report(i, src, e.message)

        for i, (src, dst) in enumerate(jobs):
            for j in range(i, min(len(jobs), i + 1 + prefetch)):
                if j not in ahead:
                    ahead[j] = reader.submit(_decode, jobs[j][0])
            try:
                img = ahead.pop(i).result()
                restored = restore_one(src, to_tensor(img.rgb))
                out = to_numpy(restored.cpu())
            except ColoraError as e:  # one bad file must not stop a folder of thousands
                report(i, src, e.message)
                continue
            writes.append((i, src, writer.submit(save_image, dst, out, img.meta, img.alpha, overwrite=overwrite)))
            drain(block=False)
            drain(block=True, keep=prefetch)  # bounded memory when encoding is the slow side
        drain(block=True)
    return failures
