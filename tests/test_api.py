"""`import colora`: the README's Python API example runs as written, and importing is cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import TINY_INIT, invoke, make_pairs, ok

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, isolated_home, capsys):
    ok(invoke(*TINY_INIT))  # colora.init() then finds this store: tiny, so the example runs in seconds
    make_pairs(tmp_path / "pairs", n=6, size=(112, 100), input_dir="rain", target_dir="norain")
    make_pairs(tmp_path / "photos-src", n=2, size=(60, 44))
    (tmp_path / "photos-src" / "input").rename(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"adapter: \d+ bytes after 60 steps", printed)
    assert [line.split()[0] for line in printed.splitlines()[1:4]] == ["input", "backbone", "adapter"]
    assert "restored 2 images" in printed
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["000.png", "001.png"]
    assert "'task': 'rain'" in printed


def test_restore_takes_one_path_or_several(trained_store, tmp_path):
    import colora

    store = colora.open_store(trained_store.home)
    one = colora.restore(store, "noise", str(trained_store.pairs / "input"), tmp_path / "one", engine="torch")
    several = colora.restore(store, "noise", [trained_store.pairs / "input"], tmp_path / "two", engine="torch")
    assert one.restored == several.restored == 6


def test_import_colora_loads_neither_torch_nor_sqlalchemy():
    code = (
        "import sys, colora; print(colora.__version__, "
        "sorted(m for m in ('torch', 'sqlalchemy', 'typer', 'rich') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split(" ", 1)[1].strip() == "[]", p.stdout + p.stderr


def test_python_m_colora_runs_the_command_line():
    p = subprocess.run([sys.executable, "-m", "colora", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("colora ")
