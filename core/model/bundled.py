"""The weights shipped inside the package: the backbone (produced by `colora backbone pretrain`)
and the starter adapters trained on it (produced by `colora train`, bench/starters.py)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent.parent / "weights"  # package data: core/weights/
BUNDLED_NAME = "prod-medium"
STARTERS_DIR = BUNDLED_DIR / "starters"
STARTERS_MANIFEST = "manifest.json"  # each starter's and signature's sha256, written by bench/starters.py
STARTER_PREFIX = "starter-"  # task names `starter-<kind>`: never a name a user's own task is likely to take


def bundled_backbone() -> tuple[Path, str] | None:
    path = BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"
    return (path, BUNDLED_NAME) if path.is_file() else None


def bundled_starters() -> list[tuple[str, Path]]:
    """(task name, adapter file) of every starter adapter the package ships, sorted by name."""
    if not STARTERS_DIR.is_dir():
        return []
    return sorted((STARTER_PREFIX + p.stem, p) for p in STARTERS_DIR.glob("*.safetensors") if p.is_file())
