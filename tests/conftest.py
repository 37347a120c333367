"""Every test gets its own store in a tmp dir; tiny images are made here, never read from ../shared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point COLORA_HOME at a fresh folder so no test touches a real store."""
    home = tmp_path / "colora-home"
    monkeypatch.setenv("COLORA_HOME", str(home))
    monkeypatch.delenv("COLORA_DEBUG", raising=False)
    return home


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, structured clean image (gradients + blobs), uint8 HxWx3."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 3)), np.cos(5 * yy + rng.uniform(0, 3)),
                     np.sin(4 * (xx + yy) + rng.uniform(0, 3))], -1)
    img = 0.5 + 0.35 * base + 0.1 * rng.standard_normal((h, w, 3)).cumsum(0).cumsum(1) / (h * w) ** 0.5
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_pairs(folder: Path, n: int = 6, size: tuple[int, int] = (40, 32), seed: int = 0,
               input_dir: str = "input", target_dir: str = "target", noise: float = 20.0) -> Path:
    """n (noisy, clean) PNG pairs: a simple, learnable degradation."""
    rng = np.random.default_rng(seed)
    (folder / input_dir).mkdir(parents=True, exist_ok=True)
    (folder / target_dir).mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        clean = textured(rng, h, w)
        noisy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / target_dir / f"{i:03d}.png")
        Image.fromarray(noisy).save(folder / input_dir / f"{i:03d}.png")
    return folder


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
