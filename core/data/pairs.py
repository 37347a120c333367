"""Finding (degraded, clean) image pairs in a folder, for `colora task add NAME FOLDER`.

Layout: FOLDER holds exactly one input subfolder (degraded images; a name from
`INPUT_DIR_NAMES`) and exactly one target subfolder (clean images; `TARGET_DIR_NAMES`), matched
case-insensitively. Only their top level is read: nested folders, hidden files (".*") and
files without an image extension are ignored; symlinks to files are followed. Broken symlinks
and folders with an image name ("001.png/") are reported as problems.

Matching rule, in two fixed steps:

1. Pair files whose stems are equal ("001.png" <-> "001.jpg").
2. Also key every stem with a known folder name stripped from its front (case-insensitive,
   longest name first, followed by "-", "_" or nothing, leaving something behind):
   "rain-001" -> "001", "norain_001" -> "001", "low1" -> "1", "normal1" -> "1".
   The stripped keys are used, for both folders, only if they pair strictly more files
   than step 1. A pair's `stem` is the key it was matched on.

`find_pairs` validates everything (duplicate stems, unpaired files, unreadable images by full
decode, size mismatches) and reports all problems in one `PairsError`, so the user fixes the
folder in one go instead of one error per run.

No torch here: `task add` should not pay for importing it.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from colora.core.data.images import ImageMeta, ImageReadError, is_image_file, verify_image
from colora.core.errors import InvalidInputError, NotFoundError
from colora.core.files import sha256_file

INPUT_DIR_NAMES = (
    "input",
    "inputs",
    "lq",
    "degraded",
    "low",
    "noisy",
    "rain",
    "rainy",
    "blur",
    "blurry",
    "hazy",
    "haze",
)
TARGET_DIR_NAMES = ("target", "targets", "gt", "groundtruth", "clean", "hq", "high", "norain", "sharp", "normal")
_PREFIXES = sorted(INPUT_DIR_NAMES + TARGET_DIR_NAMES, key=len, reverse=True)
_SHOWN = 5  # problems spelled out in the message; the rest are in PairsError.problems
MAX_VAL_FRACTION = 0.9


@dataclass(frozen=True)
class PairRecord:
    stem: str
    input_path: str  # absolute
    target_path: str  # absolute
    width: int  # upright, equal for input and target
    height: int
    input_sha256: str
    target_sha256: str


class PairsError(InvalidInputError):
    """Everything wrong with a pairs folder; `problems` lists each one."""

    def __init__(self, message: str, hint: str | None, problems: list[str]):
        super().__init__(message, hint)
        self.problems = problems


def strip_prefix(stem: str) -> str:
    """`stem` without a leading known folder name and separator ("norain-001" -> "001")."""
    low = stem.casefold()
    for prefix in _PREFIXES:
        if low.startswith(prefix):
            rest = stem[len(prefix) :]
            if rest[:1] in ("-", "_"):
                rest = rest[1:]
            if rest:
                return rest
    return stem


def _role_dirs(folder: Path) -> tuple[Path, Path]:
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    inputs = [d for d in subdirs if d.name.casefold() in INPUT_DIR_NAMES]
    targets = [d for d in subdirs if d.name.casefold() in TARGET_DIR_NAMES]
    if len(inputs) == 1 and len(targets) == 1:
        return inputs[0], targets[0]

    def count(role: str, found: list[Path]) -> str:
        if not found:
            return f"no {role} subfolder"
        return f"{len(found)} {role} subfolders ({', '.join(d.name for d in found)})"

    wrong = [count(r, f) for r, f in (("input", inputs), ("target", targets)) if len(f) != 1]
    names = [d.name for d in subdirs]
    seen = ", ".join(names[:8]) + (f", and {len(names) - 8} more" if len(names) > 8 else "")
    raise InvalidInputError(
        f"{' and '.join(wrong)} in {folder} (subfolders: {seen or 'none'})",
        hint=f"put the degraded images in one subfolder named one of {', '.join(INPUT_DIR_NAMES)}; "
        f"the clean ones in one named one of {', '.join(TARGET_DIR_NAMES)}",
    )


def _list_images(d: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, broken symlinks, folders) with an image name at the top level of `d`, sorted."""
    files, broken, folders = [], [], []
    for entry in sorted(d.iterdir()):
        if not is_image_file(entry):
            continue
        if entry.is_file():  # follows symlinks
            files.append(entry)
        elif entry.is_symlink() and not entry.exists():
            broken.append(entry)
        elif entry.is_dir():  # "001.png/": its partner would otherwise be reported as unpaired only
            folders.append(entry)
    return files, broken, folders


def _group(files: list[Path], key) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        groups[key(f.stem)].append(f)
    return groups


def find_pairs(folder: str | Path) -> list[PairRecord]:
    """All (input, target) pairs in `folder`, sorted by stem; raises PairsError listing every problem."""
    root = Path(folder).expanduser().absolute()
    if not root.exists():
        raise NotFoundError(f"folder not found: {root}", hint="check the path of the pairs folder")
    if not root.is_dir():
        raise InvalidInputError(f"not a folder: {root}", hint="give a folder holding an input/ and a target/ subfolder")
    in_dir, tg_dir = _role_dirs(root)
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731 - messages name paths like input/004.png

    (in_files, in_broken, in_folders), (tg_files, tg_broken, tg_folders) = _list_images(in_dir), _list_images(tg_dir)
    plain = _group(in_files, str), _group(tg_files, str)
    stripped = _group(in_files, strip_prefix), _group(tg_files, strip_prefix)
    n_plain = len(plain[0].keys() & plain[1].keys())
    n_stripped = len(stripped[0].keys() & stripped[1].keys())
    in_groups, tg_groups = stripped if n_stripped > n_plain else plain

    problems: list[str] = []
    for d, files in ((in_dir, in_files), (tg_dir, tg_files)):
        if not files:
            problems.append(f"no images in {rel(d)}/")
    problems += [f"broken link {rel(p)}" for p in in_broken + tg_broken]
    problems += [f"folder with an image name {rel(p)}/" for p in in_folders + tg_folders]
    for d, groups in ((in_dir, in_groups), (tg_dir, tg_groups)):
        for key in sorted(groups):
            if len(groups[key]) > 1:
                names = ", ".join(p.name for p in groups[key])
                problems.append(f"duplicate stem {key} in {rel(d)}/ ({names})")
    if in_files and tg_files:  # with one side empty, "no images" already says it all
        for mine, other in ((in_groups, tg_groups), (tg_groups, in_groups)):
            problems += [f"unpaired {rel(p)}" for key in sorted(mine.keys() - other.keys()) for p in mine[key]]

    metas: dict[Path, ImageMeta] = {}
    for p in in_files + tg_files:
        try:
            metas[p] = verify_image(p)
        except ImageReadError as exc:
            problems.append(f"unreadable {rel(p)} ({exc.reason})")

    pairs: list[tuple[str, Path, Path]] = []
    for key in sorted(in_groups.keys() & tg_groups.keys()):
        if len(in_groups[key]) != 1 or len(tg_groups[key]) != 1:
            continue  # already reported as a duplicate
        src, dst = in_groups[key][0], tg_groups[key][0]
        if src in metas and dst in metas:
            a, b = metas[src], metas[dst]
            if (a.width, a.height) != (b.width, b.height):
                problems.append(f"size mismatch {key}: {a.width}x{a.height} vs {b.width}x{b.height}")
            else:
                pairs.append((key, src, dst))

    if problems:
        n = len(problems)
        shown = "; ".join(problems[:_SHOWN]) + (f"; and {n - _SHOWN} more" if n > _SHOWN else "")
        raise PairsError(
            f"{n} problem{'s' if n != 1 else ''} in {root}: {shown}",
            hint=f"each image in {rel(in_dir)}/ needs one readable partner of the same size and "
            f"name in {rel(tg_dir)}/; fix or remove the files listed, then run again",
            problems=problems,
        )
    return [
        PairRecord(
            stem=key,
            input_path=str(src),
            target_path=str(dst),
            width=metas[src].width,
            height=metas[src].height,
            input_sha256=sha256_file(src),
            target_sha256=sha256_file(dst),
        )
        for key, src, dst in pairs
    ]


def split_pairs(stems: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Assign each stem to "train" or "val", deterministically for a given seed.

    The validation count is n * val_fraction rounded half up, then clamped so that at least
    one pair trains and, when n >= 2 and val_fraction > 0, at least one validates.
    """
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction <= MAX_VAL_FRACTION:
        raise InvalidInputError(
            f"validation fraction must be between 0 and {MAX_VAL_FRACTION}, got {val_fraction}", hint="try 0.2"
        )
    order = sorted(stems)
    if len(set(order)) != len(order):
        raise InvalidInputError("duplicate stems given to split_pairs")
    n = len(order)
    n_val = math.floor(n * val_fraction + 0.5)
    if n >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    # Shuffle the sorted list, not the caller's order, so only the seed decides the split.
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return {s: ("val" if s in val else "train") for s in sorted(order)}
