"""The backbone shipped inside the package (produced by `colora backbone pretrain`)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent.parent / "weights"  # package data: core/weights/
BUNDLED_NAME = "prod-medium"


def bundled_backbone() -> tuple[Path, str] | None:
    path = BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"
    return (path, BUNDLED_NAME) if path.is_file() else None
