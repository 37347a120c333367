"""The rooms and what each may import (docs/ARCHITECTURE.md), checked on the source and at run time.

    core/        imports neither store/ nor colora_cli/
    store/       imports no torch (nor any core module that does): `colora list` stays fast
    colora_cli/  command modules hold no tensor code: they call colora_cli.api and print
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE_CORE = {"core.errors", "core.files", "core.text"}  # what store/ may use from core/


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
    bad = {m for m in imports(path) if m.split(".")[0] in ("store", "colora_cli")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("store"), ids=lambda p: str(p.relative_to(ROOT)))
def test_store_imports_no_torch(path):
    mods = imports(path)
    bad = {m for m in mods if m.split(".")[0] in ("torch", "colora_cli", "numpy", "PIL")}
    bad |= {m for m in mods if m.split(".")[0] == "core" and m not in TORCH_FREE_CORE}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "colora_cli").glob("cmd_*.py")), ids=lambda p: p.name)
def test_commands_hold_no_tensor_code(path):
    mods = imports(path)
    bad = {m for m in mods if m.split(".")[0] in ("torch", "numpy", "PIL", "sqlalchemy")}
    bad |= {m for m in mods if m.startswith("core.") and m not in TORCH_FREE_CORE}
    assert not bad, f"{path.name} imports {sorted(bad)}: put that in colora_cli/api"


def test_torch_free_core_modules_are_torch_free():
    code = ("import sys, " + ", ".join(sorted(TORCH_FREE_CORE)) + ", store.store, store.doctor, store.summary; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_listing_imports_no_torch_and_the_fast_path_no_typer(tmp_path):
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "colora_cli", "init", "--random-init", "--config", "tiny", "--home", str(home)],
                   check=True, capture_output=True, timeout=300)
    code = ("import sys; from colora_cli.fastpath import answer; code = answer(['list', '--home', sys.argv[1]]); "
            "print(code, sorted(m for m in ('torch', 'typer', 'sqlalchemy', 'rich', 'pydantic') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "0 []", p.stdout + p.stderr
