"""A full disk under the store: one line naming what could not be written, nothing half-written,
the store as it was (a real, tiny tmpfs; skipped where this process may not mount one)."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid

import pytest
import torch

from colora.core.model.weights import save_tensors_atomic
from helpers import FAST_TRAIN, TINY_INIT, err, invoke, make_pairs, ok


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int = 0) -> None:
    """Take all the disk's free space but `leave` bytes."""
    free = os.statvfs(disk)
    with open(disk / f"filler-{uuid.uuid4().hex}", "wb") as f:
        f.write(b"\0" * max(0, free.f_bavail * free.f_frsize - leave))


def leftovers(root) -> list[str]:
    return [p.name for p in root.rglob("*.part")]


def test_weights_on_a_full_disk_name_their_destination_and_leave_nothing(small_disk):
    fill(small_disk)
    dest = small_disk / "adapter.safetensors"
    with pytest.raises(OSError) as raised:
        save_tensors_atomic(dest, {"w": torch.zeros(50_000)}, {})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(dest)
    assert not dest.exists() and leftovers(small_disk) == []


def test_import_and_train_on_a_full_disk_are_one_line_and_lose_nothing(small_disk, tmp_path, monkeypatch):
    home = small_disk / "home"
    monkeypatch.setenv("COLORA_HOME", str(home))
    ok(invoke(*TINY_INIT))
    ok(invoke("task", "add", "noise", make_pairs(tmp_path / "pairs")))
    ok(invoke("backbone", "export", "random-tiny", tmp_path / "b.safetensors"))
    before = ok(invoke("list", "--json")).stdout

    fill(small_disk, leave=40 * 1024)  # room for the index's pages, not for a backbone's 86 KB
    r = invoke("backbone", "import", tmp_path / "b.safetensors", "--name", "copy")
    assert r.exit_code == 1 and f"No space left on device: {home / 'backbones'}" in err(r)
    fill(small_disk)
    r = invoke("train", "noise", *FAST_TRAIN)
    assert r.exit_code == 1 and ("No space left on device" in err(r) or "the disk under the store" in err(r))
    assert "unexpected" not in err(r) and "Traceback" not in err(r)
    assert leftovers(home) == []

    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    assert ok(invoke("list", "--json")).stdout == before
    assert "is consistent" in err(ok(invoke("doctor")))
    ok(invoke("train", "noise", *FAST_TRAIN))  # with room again, the same command just works
