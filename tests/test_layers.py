"""The rooms and what each may import (docs/ARCHITECTURE.md), checked on the source and at run time.

    core/        (colora.core) imports neither colora.store nor colora.api / colora.cli
    store/       (colora.store) imports no torch (nor any core module that does): `colora list` stays fast
    colora_cli/  (colora: the API, colora.api, colora.cli) command modules hold no tensor code: they
                 call colora.api and print
Every import is absolute and under the one name `colora` (no bare `core` or `store`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE_CORE = {
    "colora.core.errors",
    "colora.core.files",
    "colora.core.text",
    "colora.core.choices",
    "colora.core.defaults",
}  # what store/ may use from core/
CLI_SIDE = ("colora.api", "colora.cli")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def files(room: str) -> list[Path]:
    return sorted((ROOT / room).rglob("*.py"))


@pytest.mark.parametrize("path", files("core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_neither_the_store_nor_the_cli(path):
    bad = {m for m in imports(path) if m.startswith(("colora.store", *CLI_SIDE)) or m == "colora"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("store"), ids=lambda p: str(p.relative_to(ROOT)))
def test_store_imports_no_torch(path):
    mods = imports(path)
    bad = {m for m in mods if m.split(".")[0] in ("torch", "numpy", "PIL") or m.startswith(CLI_SIDE) or m == "colora"}
    bad |= {m for m in mods if m.startswith("colora.core") and m not in TORCH_FREE_CORE}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "colora_cli" / "cli").glob("cmd_*.py")), ids=lambda p: p.name)
def test_commands_hold_no_tensor_code(path):
    mods = imports(path)
    bad = {m for m in mods if m.split(".")[0] in ("torch", "numpy", "PIL", "sqlalchemy")}
    bad |= {m for m in mods if m.startswith("colora.core") and m not in TORCH_FREE_CORE}
    assert not bad, f"{path.name} imports {sorted(bad)}: put that in colora.api"


def test_torch_free_core_modules_are_torch_free():
    code = (
        "import sys, "
        + ", ".join(sorted(TORCH_FREE_CORE))
        + ", colora, colora.store.store, colora.store.doctor, colora.store.summary; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_listing_imports_no_torch_and_the_fast_path_no_typer(tmp_path):
    home = tmp_path / "home"
    subprocess.run(
        [sys.executable, "-m", "colora", "init", "--random-init", "--config", "tiny", "--home", str(home)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import sys; from colora.cli.fastpath import answer; code = answer(['list', '--home', sys.argv[1]]); "
        "print(code, sorted(m for m in ('torch', 'typer', 'sqlalchemy', 'rich', 'pydantic') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "0 []", p.stdout + p.stderr


@pytest.mark.parametrize("room", ["colora_cli", "core", "store", "tests", "bench", "examples"])
def test_every_import_is_under_the_one_name(room):
    """No bare `core`, `store` or `colora_cli` imports: they would find another distribution's package."""
    bad = [
        f"{p.relative_to(ROOT)}: {m}"
        for p in files(room)
        for m in imports(p)
        if m.split(".")[0] in ("core", "store", "colora_cli")
    ]
    assert not bad, bad
