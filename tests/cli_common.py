"""What the command-line tests share: checking a failed command, reading the store through the
command line, small files. The fixtures (`store`, `store_with_task`, `trained`) are in conftest.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import command_paths, err, invoke, ok, out, textured

RANDOM_LABEL = "random init, not pre-trained"


def fails(result, *fragments: str, code: int = 1, stdout_empty: bool = True):
    """Exit code `code`, every fragment in stderr, and no data on stdout."""
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    message = err(result)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in stderr: {message}"
    if code == 1:
        assert "Error: " in message, message
    if stdout_empty:
        assert out(result) == "", f"data on stdout in an error case: {result.stdout}"
    return result


def as_json(result):
    ok(result)
    return json.loads(out(result))


def tasks(home: Path | None = None) -> list[dict]:
    return as_json(invoke("list", "--json", *(("--home", home) if home else ())))


def task_info(name: str, home: Path | None = None) -> dict:
    return as_json(invoke("task", "show", name, "--json", *(("--home", home) if home else ())))


def backbones(home: Path | None = None) -> list[dict]:
    return as_json(invoke("backbone", "list", "--json", *(("--home", home) if home else ())))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under folder."""
    return {p.relative_to(folder).as_posix(): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def save_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured(np.random.default_rng(seed), h, w)).save(path)
    return path


def split_of(home: Path, task: str) -> dict[str, str]:
    """stem -> "train"/"val", read from the store's index."""
    from colora.store.store import Store

    store = Store.open(home)
    try:
        return {p.stem: p.split for p in store.pairs(store.task(task))}
    finally:
        store.engine.dispose()


def all_commands() -> list[tuple[str, ...]]:
    return command_paths()
