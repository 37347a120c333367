"""Bad and exotic image inputs for `colora task add` and `colora restore`, end to end.

The corpus is generated here (Pillow / numpy, tiny images). Every refused command must exit 1
with one `Error: ...` line and a hint, no traceback and no "unexpected" error, and must leave
everything as it was: the store (`colora list --json`), the input files (sha256) and the
output side (no output folder, no output files, no `.part` files). Every accepted exotic
format must come back from `restore` with its name, format, upright size and mode family.
docs/IMAGES.md is the table of these behaviours.

A copy of the session's trained store (tiny random backbone, uniform rank 2) is shared by the module;
tests that add tasks to it use their own task names.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ANSI, copy_store, err, invoke, make_pairs, ok, textured

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


ORIENTATION = 0x0112


# ---------------------------------------------------------------- CLI helpers


def fails(result, *fragments: str, hint: str = ""):
    """Exit 1, exactly one `Error:` line holding every fragment, a hint (holding `hint`), nothing on stdout."""
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    message = err(result)
    errors = [line for line in message.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, message
    assert "unexpected" not in errors[0], message
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in: {errors[0]}"
    hints = [line for line in message.splitlines() if line.startswith("Hint: ")]
    assert len(hints) == 1 and hint in hints[0], f"no hint with {hint!r}: {message}"
    assert ANSI.sub("", result.stdout) == "", result.stdout
    return errors[0]


def listing(home: Path) -> list[dict]:
    return json.loads(ANSI.sub("", ok(invoke("list", "--json", "--home", home)).stdout))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 (or link target) of everything under folder, links not followed."""
    digest = {}
    for p in sorted(folder.rglob("*")):
        key = p.relative_to(folder).as_posix()
        if p.is_symlink():
            digest[key] = "-> " + os.readlink(p)
        elif p.is_file():
            digest[key] = sha(p)
    return digest


def part_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.part"))


class Unchanged:
    """`with Unchanged(home, folder, ...)`: the store listing and every file under the folders stay the same."""

    def __init__(self, home: Path, *folders: Path):
        self.home, self.folders = home, folders

    def __enter__(self):
        self.before = listing(self.home), [tree_digest(f) for f in self.folders]
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert listing(self.home) == self.before[0], "the store changed"
            assert [tree_digest(f) for f in self.folders] == self.before[1], "input files changed"


# ---------------------------------------------------------------- corpus


def rgb8(w: int, h: int, seed: int = 0) -> np.ndarray:
    return (
        textured(np.random.default_rng(seed), h, w)
        if min(w, h) > 1
        else np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    )


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def write_png16(path: Path, planes: np.ndarray) -> Path:
    """A 16-bit RGB (HxWx3) or RGBA (HxWx4) PNG; Pillow cannot write these."""
    h, w, c = planes.shape
    rows = np.zeros((h, 1 + w * c * 2), np.uint8)
    rows[:, 1:] = planes.astype(">u2").reshape(h, w * c).view(np.uint8)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + _chunk(b"IEND", b"")
    )
    return path


def png_depth_and_type(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:26]
    return head[24], head[25]


def write_good(folder: Path, kind: str, w: int, h: int, seed: int = 0, stem: str | None = None) -> Path:
    """An accepted image of `kind`, upright size w x h, named `<stem or kind>.<ext>`."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or kind
    rgb = rgb8(w, h, seed)
    rng = np.random.default_rng(seed + 100)
    if kind == "rgb":
        Image.fromarray(rgb).save(path := folder / f"{stem}.png")
    elif kind == "jpeg":
        Image.fromarray(rgb).save(path := folder / f"{stem}.jpg", quality=90)
    elif kind == "gray":
        Image.fromarray(rgb[:, :, 1]).save(path := folder / f"{stem}.png")
    elif kind == "gray16":
        Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(path := folder / f"{stem}.png")
    elif kind == "rgb16":
        path = write_png16(folder / f"{stem}.png", rgb.astype(np.uint16) * 257)
    elif kind == "rgba16":
        alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint16)
        path = write_png16(folder / f"{stem}.png", np.concatenate([rgb, alpha], 2).astype(np.uint16) * 257)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path := folder / f"{stem}.png")
    elif kind == "palette-alpha":
        Image.fromarray(rgb).convert("P").save(path := folder / f"{stem}.png", transparency=0)
    elif kind == "rgba":
        alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], 2)).save(path := folder / f"{stem}.png")
    elif kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path := folder / f"{stem}.jpg", quality=90)
    elif kind == "exif":  # stored h wide and w high, tagged "rotate 90 CW to display": upright w x h
        img = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))
        exif = img.getexif()
        exif[ORIENTATION] = 6
        img.save(path := folder / f"{stem}.jpg", quality=90, exif=exif.tobytes())
    else:
        raise ValueError(kind)
    return path


GOOD_KINDS = ("rgb", "jpeg", "gray", "gray16", "rgb16", "rgba16", "palette", "palette-alpha", "rgba", "cmyk", "exif")

# kind -> (file name, reason in the message)
BAD = {
    "empty": ("empty.png", "empty file"),
    "truncated-png": ("trunc.png", "truncated"),
    "truncated-jpeg": ("trunc.jpg", "truncated"),
    "text-as-png": ("text.png", "not an image, or an unsupported format"),
    "corrupt-png": ("corrupt.png", "corrupt image data"),
    "float-tiff": ("float.tif", "unsupported pixel mode F"),
}


def write_bad(folder: Path, kind: str, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or BAD[kind][0])
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-png":
        Image.fromarray(rgb8(48, 40)).save(path, format="PNG")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated-jpeg":
        Image.fromarray(rgb8(48, 40)).save(path, format="JPEG", quality=90)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "text-as-png":
        path.write_text("hello, I am not an image\n")
    elif kind == "corrupt-png":  # a valid header, then zeros in the middle of the pixel data
        Image.fromarray(rgb8(48, 40)).save(path, format="PNG")
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
        path.write_bytes(bytes(data))
    elif kind == "float-tiff":
        Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32)).save(path, format="TIFF")
    else:
        raise ValueError(kind)
    return path


# ---------------------------------------------------------------- fixtures


@dataclass
class Trained:
    home: Path


@pytest.fixture(scope="module")
def trained(trained_store, tmp_path_factory) -> Trained:
    """A copy of the session's trained store, for this module (its tests add tasks to it)."""
    return Trained(copy_store(trained_store.home, tmp_path_factory.mktemp("bad-inputs") / "home"))


def restore(trained: Trained, *args):
    return invoke("restore", "--task", "noise", "--home", trained.home, *args)


def add(trained: Trained, name: str, folder: Path, *args):
    return invoke("task", "add", name, folder, "--home", trained.home, *args)


def stored_pairs(home: Path, task: str) -> dict[str, tuple[int, int]]:
    from colora.store.store import Store

    store = Store.open(home)
    try:
        return {p.stem: (p.width, p.height) for p in store.pairs(store.task(task))}
    finally:
        store.engine.dispose()


needs_permissions = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their permissions"
)


# ---------------------------------------------------------------- task add: refused


@pytest.mark.parametrize("kind", sorted(BAD))
def test_task_add_refuses_an_unreadable_image(trained, tmp_path, kind):
    pairs = make_pairs(tmp_path / "pairs", n=3, size=(16, 12))
    (pairs / "input" / "001.png").unlink()
    bad = write_bad(pairs / "input", kind, name="001" + Path(BAD[kind][0]).suffix)
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "bad", pairs), "1 problem", f"unreadable input/{bad.name} ({BAD[kind][1]})")
    assert part_files(tmp_path) == []


def test_task_add_lists_every_bad_file_at_once(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    for i, kind in enumerate(sorted(BAD)):
        write_bad(pairs / "input", kind, name=f"x{i}" + Path(BAD[kind][0]).suffix)
        write_good(pairs / "target", "rgb", 16, 12, stem=f"x{i}")
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "bad", pairs), f"{len(BAD)} problems", "unreadable input/x0", "and 1 more")


def test_task_add_duplicate_stems_with_different_extensions(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    write_good(pairs / "input", "jpeg", 16, 12, stem="001")  # next to input/001.png
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "dup", pairs), "duplicate stem 001 in input/ (001.jpg, 001.png)")


def test_task_add_broken_symlink_is_named(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    (pairs / "input" / "001.png").unlink()
    (pairs / "input" / "001.png").symlink_to(tmp_path / "gone.png")
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "broken", pairs), "broken link input/001.png")


def test_task_add_folder_where_an_image_is_expected(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    (pairs / "input" / "001.png").unlink()
    (pairs / "input" / "001.png").mkdir()
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "folder", pairs), "folder with an image name input/001.png/", "unpaired target/001.png")


def test_task_add_file_where_a_folder_is_expected(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    image = pairs / "input" / "000.png"
    (tmp_path / "p2" / "target").mkdir(parents=True)
    (tmp_path / "p2" / "input").write_bytes(b"a file named like the input folder")
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "file", image), "not a folder", "000.png")
        fails(add(trained, "file", pairs, "--val", image), "not a folder", "000.png")
        fails(add(trained, "file", tmp_path / "p2"), "no input subfolder")


def test_task_add_exif_sizes_are_compared_upright(trained, tmp_path):
    pairs = tmp_path / "pairs"
    write_good(pairs / "input", "exif", 16, 12, stem="001")  # stored 12 x 16, upright 16 x 12
    write_good(pairs / "target", "rgb", 12, 16, stem="001")
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "exif", pairs), "size mismatch 001: 16x12 vs 12x16")


@needs_permissions
def test_task_add_unreadable_permissions(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    (pairs / "input" / "001.png").chmod(0)
    try:
        with Unchanged(trained.home, tmp_path / "nothing"):
            fails(add(trained, "perm", pairs), "unreadable input/001.png (Permission denied)")
    finally:
        (pairs / "input" / "001.png").chmod(0o644)


# ---------------------------------------------------------------- task add: accepted


def test_task_add_accepts_exotic_formats_and_trains_on_them(trained, tmp_path):
    """Every accepted format as input and as target (upright sizes), then a short training run."""
    pairs = tmp_path / "pairs"
    for i, kind in enumerate(GOOD_KINDS):
        write_good(pairs / "input", kind, 16, 12, seed=i, stem=f"{i:02d}-{kind}")
        write_good(pairs / "target", GOOD_KINDS[-1 - i], 16, 12, seed=i + 50, stem=f"{i:02d}-{kind}")
    before = tree_digest(pairs)
    ok(add(trained, "exotic", pairs))
    assert set(stored_pairs(trained.home, "exotic").values()) == {(16, 12)}
    assert len(stored_pairs(trained.home, "exotic")) == len(GOOD_KINDS)
    ok(
        invoke(
            "train",
            "exotic",
            "--rank",
            "2",
            "--steps",
            "2",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
            "--home",
            trained.home,
        )
    )
    assert tree_digest(pairs) == before


def test_task_add_accepts_1x1_pairs_and_training_runs(trained, tmp_path):
    """Decision: tiny pairs are accepted; the network pads them and crops are clamped to the image."""
    pairs = tmp_path / "pairs"
    for i in range(2):
        write_good(pairs / "input", "rgb", 1, 1, seed=i, stem=f"{i:03d}")
        write_good(pairs / "target", "rgb", 1, 1, seed=i + 9, stem=f"{i:03d}")
    ok(add(trained, "one-pixel", pairs))
    assert stored_pairs(trained.home, "one-pixel") == {"000": (1, 1), "001": (1, 1)}
    ok(
        invoke(
            "train",
            "one-pixel",
            "--rank",
            "2",
            "--steps",
            "2",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
            "--home",
            trained.home,
        )
    )


def test_task_add_unicode_spaces_and_symlinks(trained, tmp_path):
    pairs = make_pairs(tmp_path / "pairs", n=2, size=(16, 12))
    write_good(pairs / "input", "rgb", 16, 12, seed=3, stem="ünï cödé 01")
    write_good(pairs / "target", "rgb", 16, 12, seed=4, stem="ünï cödé 01")
    elsewhere = write_good(tmp_path / "elsewhere", "rgb", 16, 12, seed=5, stem="real")
    (pairs / "input" / "linked.png").symlink_to(elsewhere)
    write_good(pairs / "target", "rgb", 16, 12, seed=6, stem="linked")
    before = tree_digest(tmp_path)
    ok(add(trained, "unicode", pairs, "--val-fraction", "0"))
    assert set(stored_pairs(trained.home, "unicode")) == {"000", "001", "linked", "ünï cödé 01"}
    assert tree_digest(tmp_path) == before
    # a problem with such a name is reported with the name intact
    (pairs / "target" / "ünï cödé 01.png").write_bytes(b"")
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "unicode2", pairs), "unreadable target/ünï cödé 01.png (empty file)")


# ---------------------------------------------------------------- restore: refused


@pytest.mark.parametrize("kind", sorted(BAD))
def test_restore_refuses_an_unreadable_image_before_writing_anything(trained, tmp_path, kind):
    photos = tmp_path / "photos"
    write_good(photos, "rgb", 20, 16, stem="a")
    bad = write_bad(photos, kind)
    write_good(photos, "jpeg", 20, 16, stem="z")
    dest = tmp_path / "out"
    with Unchanged(trained.home, photos):
        fails(restore(trained, photos, "-o", dest), "1 input(s) are not readable images", bad.name, BAD[kind][1])
        fails(restore(trained, bad, "-o", dest), "not readable images", bad.name, BAD[kind][1])
    assert not dest.exists() and part_files(tmp_path) == []


def test_restore_broken_symlinks(trained, tmp_path):
    photos = tmp_path / "photos"
    write_good(photos, "rgb", 20, 16, stem="a")
    (photos / "gone.png").symlink_to(tmp_path / "nowhere.png")
    dest = tmp_path / "out"
    with Unchanged(trained.home, photos):
        fails(restore(trained, photos, "-o", dest), "not readable images", "broken link", "gone.png")
        fails(restore(trained, photos / "gone.png", "-o", dest), "broken link", "gone.png", "nowhere.png")
    assert not dest.exists()


def test_restore_output_path_that_is_a_file(trained, tmp_path):
    src = write_good(tmp_path / "photos", "rgb", 20, 16, stem="a")
    blocker = tmp_path / "out.png"
    blocker.write_bytes(b"mine")
    with Unchanged(trained.home, tmp_path):
        fails(restore(trained, src, "-o", blocker), "the output path", "is not a folder")
        fails(restore(trained, src, "-o", blocker / "sub"), "is not a folder", "out.png is not a folder")
        fails(restore(trained, src, "-o", src), "is not a folder")  # -o given the input itself
    assert part_files(tmp_path) == []


def test_restore_folder_where_a_file_is_expected(trained, tmp_path):
    folder = tmp_path / "photos" / "x.png"  # a folder with an image name
    folder.mkdir(parents=True)
    with Unchanged(trained.home, tmp_path):
        fails(restore(trained, folder, "-o", tmp_path / "out"), "no images in folder", "x.png")
    assert not (tmp_path / "out").exists()


def test_restore_non_image_extension_is_refused(trained, tmp_path):
    gif = tmp_path / "anim.gif"
    Image.fromarray(rgb8(8, 8)).save(gif)
    with Unchanged(trained.home, tmp_path):
        fails(restore(trained, gif, "-o", tmp_path / "out"), "not an image file", "anim.gif")
    assert not (tmp_path / "out").exists()


def test_restore_never_writes_through_a_link_to_an_input(trained, tmp_path):
    src = write_good(tmp_path / "photos", "rgb", 20, 16, stem="a")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a.png").symlink_to(src)
    with Unchanged(trained.home, tmp_path):
        fails(restore(trained, src, "-o", dest, "--overwrite"), "refusing to overwrite the input")
        fails(restore(trained, src, "-o", dest), "refusing to overwrite the input")


@needs_permissions
def test_restore_unreadable_permissions(trained, tmp_path):
    src = write_good(tmp_path / "photos", "rgb", 20, 16, stem="a")
    src.chmod(0)
    try:
        fails(restore(trained, src.parent, "-o", tmp_path / "out"), "not readable images", "Permission denied")
    finally:
        src.chmod(0o644)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- restore: accepted


def mode_family(img: Image.Image) -> str:
    return {
        "L": "gray",
        "I;16": "gray16",
        "I;16B": "gray16",
        "I": "gray16",
        "LA": "gray+alpha",
        "RGB": "rgb",
        "RGBA": "rgba",
        "P": "palette",
    }.get(img.mode, img.mode)


# kind -> (format, mode family, PNG (bit depth, colour type) or None)
EXPECTED = {
    "rgb": ("PNG", "rgb", (8, 2)),
    "jpeg": ("JPEG", "rgb", None),
    "gray": ("PNG", "gray", (8, 0)),
    "gray16": ("PNG", "gray16", (16, 0)),
    "rgb16": ("PNG", "rgb", (16, 2)),  # Pillow reads 16-bit colour at 8 bits; the file is 16-bit
    "rgba16": ("PNG", "rgba", (16, 6)),
    "palette": ("PNG", "rgb", (8, 2)),  # palettes come back as full RGB (documented)
    "palette-alpha": ("PNG", "rgba", (8, 6)),
    "rgba": ("PNG", "rgba", (8, 6)),
    "cmyk": ("JPEG", "rgb", None),  # converted to RGB, without colour management
    "exif": ("JPEG", "rgb", None),
}


def test_restore_keeps_name_format_size_and_mode_family(trained, tmp_path):
    photos = tmp_path / "photos"
    sources = {kind: write_good(photos, kind, 20, 14, seed=i) for i, kind in enumerate(GOOD_KINDS)}
    dest = tmp_path / "out"
    with Unchanged(trained.home, photos):
        r = ok(restore(trained, photos, "-o", dest))
    assert f"Restored {len(GOOD_KINDS)} image(s)" in err(r)
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in sources.values())
    for kind, src in sources.items():
        fmt, family, png = EXPECTED[kind]
        res_path = dest / src.name
        with Image.open(res_path) as res:
            assert (res.format, mode_family(res), res.size) == (fmt, family, (20, 14)), kind
            assert res.getexif().get(ORIENTATION, 1) == 1, kind  # upright, never rotated twice
            if png:
                assert png_depth_and_type(res_path) == png, kind
            if kind in ("rgba", "palette-alpha", "rgba16"):  # alpha is carried over, not restored
                with Image.open(src) as orig:
                    a_in = np.asarray(orig.convert("RGBA"))[:, :, 3].astype(int)
                assert np.abs(np.asarray(res.convert("RGBA"))[:, :, 3].astype(int) - a_in).max() <= 1, kind
    with Image.open(sources["exif"]) as orig:  # the input still is stored sideways with its tag
        assert orig.size == (14, 20) and orig.getexif()[ORIENTATION] == 6
    assert part_files(tmp_path) == []


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (3, 1), (2, 3), (7, 5)])
def test_restore_images_smaller_than_the_network_multiple(trained, tmp_path, size):
    w, h = size
    photos = tmp_path / "photos"
    sources = [write_good(photos, kind, w, h, seed=1) for kind in ("rgb", "gray16", "rgba")]
    dest = tmp_path / "out"
    with Unchanged(trained.home, photos):
        ok(restore(trained, photos, "-o", dest))
    for src in sources:
        with Image.open(dest / src.name) as res, Image.open(src) as orig:
            assert res.size == (w, h) and mode_family(res) == mode_family(orig)


def test_restore_large_image_through_tiles(trained, tmp_path):
    src = tmp_path / "photos" / "big.png"
    src.parent.mkdir()
    Image.fromarray(textured(np.random.default_rng(7), 500, 700)).save(src)
    dest = tmp_path / "out"
    with Unchanged(trained.home, src.parent):
        ok(restore(trained, src, "-o", dest, "--tile", "128"))  # 6 x 5 overlapping tiles
        ok(restore(trained, src, "-o", tmp_path / "whole", "--tile", "0"))
    with Image.open(dest / "big.png") as res, Image.open(tmp_path / "whole" / "big.png") as whole:
        assert res.format == "PNG" and res.size == (700, 500) and res.mode == "RGB"
        diff = np.abs(np.asarray(res).astype(float) - np.asarray(whole).astype(float))
    # tiles see less context (the channel attention pools per tile), so not bit-equal; but no
    # tile is missing, shifted or visibly seamed
    assert diff.mean() < 1 and diff.max() < 32
    assert part_files(tmp_path) == []


def test_restore_unicode_spaces_duplicate_stems_and_symlinks(trained, tmp_path):
    photos = tmp_path / "my photos"
    write_good(photos, "rgb", 20, 16, seed=1, stem="ünï cödé 01")
    write_good(photos, "rgb", 20, 16, seed=2, stem="001")
    write_good(photos, "jpeg", 20, 16, seed=3, stem="001")
    real = write_good(tmp_path / "elsewhere", "gray", 12, 10, seed=4, stem="real")
    (photos / "linked.png").symlink_to(real)
    dest = tmp_path / "out dir ü"
    with Unchanged(trained.home, photos, real.parent):
        ok(restore(trained, photos, "-o", dest))
        ok(restore(trained, photos / "linked.png", "-o", tmp_path / "single"))
    assert sorted(p.name for p in dest.iterdir()) == ["001.jpg", "001.png", "linked.png", "ünï cödé 01.png"]
    assert not (dest / "linked.png").is_symlink()
    for name, fmt, size in (
        ("001.jpg", "JPEG", (20, 16)),
        ("001.png", "PNG", (20, 16)),
        ("linked.png", "PNG", (12, 10)),
        ("ünï cödé 01.png", "PNG", (20, 16)),
    ):
        with Image.open(dest / name) as res:
            assert (res.format, res.size) == (fmt, size), name
    with Image.open(tmp_path / "single" / "linked.png") as res:
        assert res.mode == "L" and res.size == (12, 10)


def test_restore_output_folder_inside_the_input_folder(trained, tmp_path):
    """Allowed: folders are read at their top level only, so the outputs never become inputs."""
    photos = tmp_path / "photos"
    write_good(photos, "rgb", 20, 16, seed=1, stem="a")
    write_good(photos, "jpeg", 20, 16, seed=2, stem="b")
    dest = photos / "restored"
    ok(restore(trained, photos, "-o", dest))
    inputs = {k: v for k, v in tree_digest(photos).items() if not k.startswith("restored/")}
    fails(restore(trained, photos, "-o", dest), "2 output file(s) already exist", hint="--overwrite")
    r = ok(restore(trained, photos, "-o", dest, "--overwrite"))
    assert "Restored 2 image(s)" in err(r)
    assert sorted(p.name for p in dest.iterdir()) == ["a.png", "b.jpg"]
    assert {k: v for k, v in tree_digest(photos).items() if not k.startswith("restored/")} == inputs
    assert part_files(tmp_path) == []


def test_restore_content_decides_the_format_and_hidden_files_are_ignored(trained, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rgb8(20, 16)).save(photos / "looks-like.png", format="JPEG")  # JPEG bytes, .png name
    (photos / ".hidden.png").write_bytes(b"")  # hidden files are not inputs
    dest = tmp_path / "out"
    with Unchanged(trained.home, photos):
        ok(restore(trained, photos, "-o", dest))
    assert [p.name for p in dest.iterdir()] == ["looks-like.png"]
    with Image.open(dest / "looks-like.png") as res:
        assert res.format == "JPEG" and res.size == (20, 16)


def test_restore_two_inputs_with_one_output_name(trained, tmp_path):
    a = write_good(tmp_path / "a", "rgb", 8, 8, stem="x")
    b = write_good(tmp_path / "b", "rgb", 8, 8, stem="x")
    with Unchanged(trained.home, tmp_path):
        fails(restore(trained, a, b, "-o", tmp_path / "out"), "two inputs would both be written as x.png")
    assert not (tmp_path / "out").exists()


def test_missing_paths(trained, tmp_path):
    with Unchanged(trained.home, tmp_path):
        fails(add(trained, "ghost", tmp_path / "nope"), "folder not found", "nope")
        fails(
            restore(trained, tmp_path / "nope.png", "-o", tmp_path / "out"),
            "input not found",
            "nope.png",
            hint="check the path",
        )
    assert not (tmp_path / "out").exists()
