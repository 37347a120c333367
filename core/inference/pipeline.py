"""Restoring many files: decode, restore, encode; overlapped on threads where there are cores for it.

Measured on a 2-core CPU (bench/speed.py), reader and writer threads *slow a folder down*: the
network already keeps both cores busy, and every moment a codec thread takes a core, PyTorch's
two-thread team waits at its next barrier. So with <= 2 cores the I/O runs in line with the
compute; with more cores one reader and one writer thread overlap it (Pillow releases the GIL
while it decodes and compresses). Images decoded by the caller's up-front check are reused,
within a memory budget, instead of being decoded twice.

A file that fails is reported and skipped; the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from colora.core.errors import ColoraError

if TYPE_CHECKING:
    from colora.core.output_folder import OutputFolder


@dataclass
class Decoded:
    rgb: np.ndarray
    meta: object
    alpha: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + (self.alpha.nbytes if self.alpha is not None else 0)


def decode(src: Path, max_pixels: int | None = None) -> Decoded:
    from colora.core.data.images import load_image

    return Decoded(*load_image(src, max_pixels))


def io_threads() -> bool:
    """Whether to overlap decoding and encoding with compute on threads (see the module doc)."""
    return (os.cpu_count() or 1) > 2


class _Inline:
    """The executor interface, run in the calling thread."""

    def submit(self, fn, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(e)
        return fut

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def restore_many(
    jobs: Sequence[tuple[Path, Path]],
    restore_one: Callable[[Path, torch.Tensor], torch.Tensor],
    *,
    overwrite: bool = False,
    prefetch: int = 2,
    decoded: dict[Path, Decoded] | None = None,
    threads: bool | None = None,
    max_pixels: int | None = None,
    on_done: Callable[[int, Path, str | None], None] | None = None,
    folder: OutputFolder | None = None,
) -> list[tuple[Path, str]]:
    """Restore every (source, destination) job; returns [(source, error message)] for failures.

    `restore_one(source, (3, H, W) tensor in [0, 1], a view of the decoded H x W x 3 pixels)`
    returns the restored tensor, in [0, 1]. `decoded` holds images already decoded by the caller
    (each is used once and dropped). `folder`: the destinations' folder, held open for the run
    (core/output_folder.py): files go in by name through its handle.
    """
    from colora.core.data.images import save_image

    decoded = dict(decoded or {})
    threads = io_threads() if threads is None else threads
    failures: list[tuple[Path, str]] = []
    reader = ThreadPoolExecutor(1, thread_name_prefix="colora-read") if threads else _Inline()
    writer = ThreadPoolExecutor(1, thread_name_prefix="colora-write") if threads else _Inline()
    with reader, writer:
        ahead: dict[int, Future] = {}
        writes: list[tuple[Path, Future]] = []
        done = 0

        def report(src: Path, error: str | None) -> None:
            nonlocal done
            done += 1
            if error is not None:
                failures.append((src, error))
            if on_done:
                on_done(done, src, error)

        def drain(block: bool, keep: int = 0) -> None:
            """Report finished writes; with `block`, wait until at most `keep` are pending."""
            while len(writes) > keep and (block or writes[0][1].done()):
                src, fut = writes.pop(0)
                try:
                    fut.result()
                    report(src, None)
                except ColoraError as e:
                    report(src, e.message)

        def read(j: int) -> Future:
            src = jobs[j][0]
            if src in decoded:
                fut: Future = Future()
                fut.set_result(decoded.pop(src))
                return fut
            return reader.submit(decode, src, max_pixels)

        for i, (src, dst) in enumerate(jobs):
            for j in range(i, min(len(jobs), i + 1 + (prefetch if threads else 0))):
                if j not in ahead:
                    ahead[j] = read(j)
            try:
                img = ahead.pop(i).result()
                # a view, no copy: H x W x 3 memory is the channels_last layout the network runs in
                restored = restore_one(src, torch.from_numpy(img.rgb).permute(2, 0, 1))
                img.rgb = None  # the view holds the pixels while they are needed, and no longer
                out = restored.cpu().numpy().transpose(1, 2, 0)  # already in [0, 1] (restore_tensor clamps)
            except ColoraError as e:  # one bad file must not stop a folder of thousands
                report(src, e.message)
                continue
            writes.append(
                (src, writer.submit(save_image, dst, out, img.meta, img.alpha, overwrite=overwrite, folder=folder))
            )
            drain(block=False)
            drain(block=True, keep=prefetch)  # bounded memory when encoding is the slow side
        drain(block=True)
    return failures
