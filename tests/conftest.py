"""Every test gets its own store in a tmp dir; tiny images are made here, never read from ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_pairs, textured  # noqa: F401  (re-exported for older test modules)


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
