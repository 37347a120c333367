"""What the tests share: tiny generated images, and running `colora` in-process.

`invoke` fails a test on any traceback or exception that escaped the CLI's handler, whatever
the exit code. Images are made here, never read from ../shared.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
runner = CliRunner()

TINY_INIT = ("init", "--random-init", "--config", "tiny")
# a few steps of a uniform plan, so that `train` does not first compute a CoLoRA (FAIG) rank plan
FAST_TRAIN = ("--rank", "2", "--steps", "10", "--patch-size", "16", "--batch-size", "2")


def invoke(*args, input: str | None = None):
    """Run `colora ARGS`; fail on any traceback or exception that escaped the CLI's handler."""
    import os

    from colora.cli.main import app

    db = os.environ.get("COLORA_DB_URL")  # `--db` sets it for the rest of its process: here, one invocation
    try:
        result = runner.invoke(app, [str(a) for a in args], input=input)
    finally:
        if db is None:
            os.environ.pop("COLORA_DB_URL", None)
        else:
            os.environ["COLORA_DB_URL"] = db
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}\n{text}"
    return result


def command_paths() -> list[tuple[str, ...]]:
    """Every leaf command, e.g. ("task", "add"), through click's own API (the root builds commands lazily)."""
    import typer.main

    from colora.cli.main import app

    def walk(command, ctx, path=()):
        if hasattr(command, "list_commands"):
            for name in sorted(command.list_commands(ctx)):
                yield from walk(command.get_command(ctx, name), ctx, path + (name,))
        else:
            yield path

    root = typer.main.get_command(app)
    return list(walk(root, root.make_context("colora", [], resilient_parsing=True)))


def out(result) -> str:
    return ANSI.sub("", result.stdout)


def err(result) -> str:
    return ANSI.sub("", result.stderr)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def copy_store(home: Path, dest: Path) -> Path:
    """A private copy of a store (its pairs stay where they are: tests never change them)."""
    shutil.copytree(home, dest)
    return dest


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, structured clean image (gradients + blobs), uint8 HxWx3."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack(
        [
            np.sin(6 * xx + rng.uniform(0, 3)),
            np.cos(5 * yy + rng.uniform(0, 3)),
            np.sin(4 * (xx + yy) + rng.uniform(0, 3)),
        ],
        -1,
    )
    img = 0.5 + 0.35 * base + 0.1 * rng.standard_normal((h, w, 3)).cumsum(0).cumsum(1) / (h * w) ** 0.5
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_pairs(
    folder: Path,
    n: int = 6,
    size: tuple[int, int] = (40, 32),
    seed: int = 0,
    input_dir: str = "input",
    target_dir: str = "target",
    noise: float = 20.0,
) -> Path:
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
