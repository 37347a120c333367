"""The wheel installs one top-level import name, `colora`, and every package folder is in it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def declared() -> tuple[list[str], dict[str, str]]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setuptools["packages"], setuptools["package-dir"]


def test_every_package_folder_is_declared():
    packages, dirs = declared()
    found = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert set(packages) == found, sorted(found ^ set(packages))


def test_the_wheel_has_one_top_level_name(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("colora-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"colora"}
    assert "colora/core/weights/prod-medium.safetensors" in names and "colora/cli/fastpath.py" in names
    for starter in (ROOT / "core" / "weights" / "starters").glob("*.safetensors"):  # each with its signature
        for suffix in (".safetensors", ".json"):
            assert f"colora/core/weights/starters/{starter.stem}{suffix}" in names
    assert "colora/core/weights/starters/manifest.json" in names  # without it no starter is installed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "colora = colora.cli.fastpath:run" in zipfile.ZipFile(wheel).read(entry).decode()
