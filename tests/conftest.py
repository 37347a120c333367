"""Every test gets its own store in a tmp dir; tiny images are made here, never read from ../shared.

One trained store (`trained_store`) is built once per session and shared: tests that only read
it use it in place; tests that change it work on a copy (`helpers.copy_store`). Its pairs
folder is never modified.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import FAST_TRAIN, TINY_INIT, invoke, make_pairs, ok


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point COLORA_HOME at a fresh folder so no test touches a real store."""
    home = tmp_path / "colora-home"
    monkeypatch.setenv("COLORA_HOME", str(home))
    monkeypatch.delenv("COLORA_DEBUG", raising=False)
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a busy 2-core machine, several intra-op threads make tiny models many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def wide_console(monkeypatch):
    """Rich reads COLUMNS on every print: keep table cells from being wrapped or cut."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    return make_pairs(tmp_path / "pairs")


@dataclass
class TrainedStore:
    home: Path
    pairs: Path  # 6 noisy/clean pairs of 40 x 32 px: 5 train, 1 val
    train: object  # the CliRunner result of `colora train noise`
    backbone_sha_before: str  # the backbone file's sha256 before training
    steps: int  # what FAST_TRAIN asked for


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> TrainedStore:
    """A store with task 'noise' whose adapter is trained (FAST_TRAIN: uniform rank 2)."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    home, pairs = root / "home", make_pairs(root / "pairs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORA_HOME", str(home))
        mp.delenv("COLORA_DEBUG", raising=False)
        mp.setenv("COLUMNS", "250")
        ok(invoke(*TINY_INIT))
        ok(invoke("task", "add", "noise", pairs))
        before = hashlib.sha256((home / "backbones" / "random-tiny.safetensors").read_bytes()).hexdigest()
        result = ok(invoke("train", "noise", *FAST_TRAIN))
    torch.set_num_threads(threads)
    return TrainedStore(home, pairs, result, before, int(FAST_TRAIN[FAST_TRAIN.index("--steps") + 1]))
