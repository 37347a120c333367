"""Render a colora report (or any local HTML file) to a PNG with headless Chromium.

A check that `colora eval NAME --report DIR` writes a page that looks right in a real browser:
Chromium runs with networking features off, so anything the page tried to fetch from the network
would show up missing.

    python -m bench.report_screenshot reports/rain/index.html -o rain-report.png
    python -m bench.report_screenshot reports/rain             # DIR/index.html -> DIR.png

The browser is `--chromium PATH`, else $CHROMIUM, else the first of chromium, chromium-browser,
google-chrome on PATH (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str:
    """The browser to run: `explicit` (a path or a name on PATH), else $CHROMIUM, else the first of CANDIDATES."""
    tried = (
        [explicit] if explicit else ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(CANDIDATES)
    )
    for name in tried:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(
        "error: no Chromium found (tried " + ", ".join(tried) + "); install it "
        "(Debian/Ubuntu: `apt-get install chromium`) or pass --chromium PATH"
    )


def command(chromium: str, page: Path, png: Path, profile: Path, width: int, height: int) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        page.resolve().as_uri(),
    ]


def screenshot(
    page: Path, png: Path, *, chromium: str, width: int = 1280, height: int = 2000, timeout: float = 120
) -> Path:
    if page.is_dir():
        page = page / "index.html"
    if not page.is_file():
        raise SystemExit(f"error: no such HTML file: {page}")
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="colora-chromium-") as profile:
        try:
            r = subprocess.run(
                command(chromium, page, png, Path(profile), width, height),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(f"error: Chromium did not finish within {timeout:.0f} s") from None
    if r.returncode != 0 or not png.is_file():
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise SystemExit(f"error: Chromium exited with {r.returncode} and wrote no screenshot:\n{tail}")
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="report folder or HTML file")
    ap.add_argument("-o", "--out", type=Path, help="PNG to write (default: next to the report)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--chromium", help="path or name of the Chromium binary")
    args = ap.parse_args()
    chromium = find_chromium(args.chromium)
    out = args.out or (args.page.with_suffix(".png") if args.page.is_dir() else args.page.parent.with_suffix(".png"))
    png = screenshot(args.page, out, chromium=chromium, width=args.width, height=args.height)
    from PIL import Image

    with Image.open(png) as img:
        print(f"{png} ({img.width}x{img.height} px)")


if __name__ == "__main__":
    sys.exit(main())
