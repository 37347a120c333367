from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colora.core.data.images import (
    load_image,
    read_image_size,
    save_image,
    verify_image,
)
from colora.core.data.pairs import PairsError, find_pairs, split_pairs, strip_prefix
from colora.core.errors import ConflictError, InvalidInputError, NotFoundError
from colora.core.files import sha256_file

RNG = np.random.default_rng(0)


def rgb8(h=6, w=8) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write(path: Path, arr: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def png_chunks(data: bytes) -> dict[bytes, bytes]:
    chunks, pos = {}, 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        chunks[data[pos + 4 : pos + 8]] = data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    return chunks


def parts(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.rglob("*.part"))


# ---------------------------------------------------------------- images


def test_png_rgb8_round_trip_is_exact(tmp_path):
    src = rgb8()
    rgb, meta, alpha = load_image(write(tmp_path / "a.png", src))
    assert rgb.dtype == np.float32 and rgb.shape == (6, 8, 3) and alpha is None
    assert (meta.format, meta.mode, meta.bit_depth, meta.width, meta.height) == ("PNG", "RGB", 8, 8, 6)
    out = save_image(tmp_path / "b.png", rgb, meta)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), src)


def test_png_gray16_round_trip_keeps_16_bits(tmp_path):
    src = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)
    rgb, meta, _ = load_image(write(tmp_path / "g.png", src))
    assert meta.bit_depth == 16 and meta.grayscale and meta.mode.startswith("I")
    assert np.array_equal(np.rint(rgb[:, :, 1] * 65535).astype(np.uint16), src)
    out = save_image(tmp_path / "o.png", rgb, meta)
    with Image.open(out) as img:
        assert img.mode.startswith("I;16")
        assert np.array_equal(np.asarray(img), src)


def test_png_rgb16_written_as_16_bit_png(tmp_path):
    rgb = RNG.random((4, 5, 3)).astype(np.float32)
    meta = verify_image(write(tmp_path / "seed.png", rgb8(4, 5)))
    meta = type(meta)(**{**meta.__dict__, "bit_depth": 16})
    out = save_image(tmp_path / "o.png", rgb, meta)
    chunks = png_chunks(out.read_bytes())
    assert chunks[b"IHDR"][8:10] == bytes([16, 2])  # 16-bit, colour type RGB
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8)
    pixels = rows.reshape(4, -1)[:, 1:].copy().view(">u2").reshape(4, 5, 3)
    assert np.array_equal(pixels, np.rint(rgb.astype(np.float64) * 65535).astype(np.uint16))
    back, meta2, _ = load_image(out)  # Pillow reads it (at 8-bit precision)
    assert meta2.bit_depth == 16 and np.abs(back - rgb).max() <= 1 / 255 + 1e-6


def test_png_gray16_with_alpha_stays_gray_16_bit(tmp_path):
    rgb, meta, _ = load_image(write(tmp_path / "g.png", RNG.integers(0, 65536, size=(3, 4), dtype=np.uint16)))
    out = save_image(tmp_path / "o.png", rgb, meta, np.full((3, 4), 0.5, np.float32))
    assert png_chunks(out.read_bytes())[b"IHDR"][8:10] == bytes([16, 4])  # 16-bit gray+alpha
    _, meta2, alpha = load_image(out)
    assert meta2.grayscale and meta2.bit_depth == 16 and alpha is not None


def test_rgba_keeps_alpha(tmp_path):
    src = RNG.integers(0, 256, size=(4, 5, 4), dtype=np.uint8)
    rgb, meta, alpha = load_image(write(tmp_path / "a.png", src))
    assert meta.has_alpha and alpha.shape == (4, 5)
    out = save_image(tmp_path / "o.png", rgb, meta, alpha)
    with Image.open(out) as img:
        assert img.mode == "RGBA" and np.array_equal(np.asarray(img), src)


def test_grayscale_written_back_as_L(tmp_path):
    src = RNG.integers(0, 256, size=(4, 5), dtype=np.uint8)
    rgb, meta, _ = load_image(write(tmp_path / "g.png", src))
    assert meta.grayscale and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])
    out = save_image(tmp_path / "o.png", rgb, meta)
    with Image.open(out) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), src)


def test_palette_with_transparency_loads_alpha(tmp_path):
    img = Image.fromarray(rgb8(4, 4)).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    rgb, meta, alpha = load_image(tmp_path / "p.png")
    assert meta.mode == "P" and alpha is not None and rgb.shape == (4, 4, 3)
    out = save_image(tmp_path / "o.png", rgb, meta, alpha)
    with Image.open(out) as back:
        assert back.mode == "RGBA"


def test_jpeg_written_as_jpeg(tmp_path):
    rgb, meta, _ = load_image(write(tmp_path / "a.jpg", rgb8(16, 16), "JPEG"))
    assert meta.format == "JPEG"
    out = save_image(tmp_path / "o.jpg", rgb, meta)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (16, 16)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(rgb8(4, 10))  # 10 wide, 4 high as stored
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "o.jpg"
    img.save(path, "JPEG", exif=exif.tobytes())
    rgb, meta, _ = load_image(path)
    assert rgb.shape == (10, 4, 3) and (meta.width, meta.height) == (4, 10)
    assert read_image_size(path) == (4, 10)
    out = save_image(tmp_path / "r.jpg", rgb, meta)
    with Image.open(out) as back:  # orientation tag gone, so no second rotation
        assert back.size == (4, 10) and back.getexif().get(0x0112) in (None, 1)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_unreadable_files_raise_with_path(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write(path, RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("hello, not an image\n")
    for fn in (load_image, verify_image):
        with pytest.raises(InvalidInputError) as err:
            fn(path)
        assert str(path) in err.value.message and err.value.message.startswith("cannot read image")
        assert "\n" not in err.value.message
    assert err.value.reason == {"empty": "empty file", "truncated": "truncated"}.get(kind, err.value.reason)


def test_missing_image_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        load_image(tmp_path / "nope.png")


def test_save_refuses_overwrite_and_leaves_no_part_files(tmp_path):
    dest = write(tmp_path / "a.png", rgb8())
    before = dest.read_bytes()
    rgb, meta, _ = load_image(dest)
    with pytest.raises(ConflictError) as err:
        save_image(dest, 1 - rgb, meta)
    assert "--overwrite" in err.value.hint
    assert dest.read_bytes() == before and parts(tmp_path) == []
    save_image(dest, 1 - rgb, meta, overwrite=True)
    assert dest.read_bytes() != before and parts(tmp_path) == []


def test_save_failure_removes_part_file(tmp_path):
    meta = verify_image(write(tmp_path / "a.png", rgb8()))
    with pytest.raises(InvalidInputError):
        save_image(tmp_path / "b.png", np.full((6, 8, 3), np.nan, np.float32), meta)
    with pytest.raises(InvalidInputError):
        save_image(tmp_path / "b.png", np.zeros((6, 8), np.float32), meta)
    assert parts(tmp_path) == [] and not (tmp_path / "b.png").exists()


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_no_torch_import():
    code = "import sys, colora.core.data.images, colora.core.data.pairs; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- pairs


def make_pairs(
    root: Path, in_name="input", tg_name="target", stems=("001", "002", "003"), in_prefix="", tg_prefix="", size=(6, 8)
) -> Path:
    for s in stems:
        write(root / in_name / f"{in_prefix}{s}.png", rgb8(*size))
        write(root / tg_name / f"{tg_prefix}{s}.png", rgb8(*size))
    return root


def test_find_pairs_input_target(tmp_path):
    root = make_pairs(tmp_path / "pairs")
    (root / "input" / ".hidden.png").write_bytes(b"junk")
    (root / "input" / "notes.txt").write_text("ignored")
    pairs = find_pairs(root)
    assert [p.stem for p in pairs] == ["001", "002", "003"]
    p = pairs[0]
    assert Path(p.input_path).is_absolute() and p.input_path.endswith("input/001.png")
    assert p.target_path.endswith("target/001.png")
    assert (p.width, p.height) == (8, 6) and p.input_sha256 == sha256_file(p.input_path)


def test_find_pairs_lq_gt(tmp_path):
    root = make_pairs(tmp_path / "p", "LQ", "gt", stems=("b", "a"))
    assert [p.stem for p in find_pairs(root)] == ["a", "b"]


@pytest.mark.parametrize("in_prefix,tg_prefix", [("rain-", "norain-"), ("rain_", "norain_"), ("low", "normal")])
def test_find_pairs_prefixed_names(tmp_path, in_prefix, tg_prefix):
    root = make_pairs(tmp_path / "p", "rainy", "norain", in_prefix=in_prefix, tg_prefix=tg_prefix)
    pairs = find_pairs(root)
    assert [p.stem for p in pairs] == ["001", "002", "003"]
    assert Path(pairs[0].target_path).name == f"{tg_prefix}001.png"


def test_strip_prefix():
    assert strip_prefix("norain-001") == "001" and strip_prefix("Rain_7") == "7"
    assert strip_prefix("low12") == "12" and strip_prefix("rain") == "rain" and strip_prefix("x1") == "x1"


def test_find_pairs_symlink_followed(tmp_path):
    root = make_pairs(tmp_path / "p", stems=("001",))
    real = write(tmp_path / "elsewhere" / "002.png", rgb8())
    (root / "input" / "002.png").symlink_to(real)
    write(root / "target" / "002.png", rgb8())
    assert [p.stem for p in find_pairs(root)] == ["001", "002"]


def test_find_pairs_reports_every_problem(tmp_path):
    root = make_pairs(tmp_path / "p", stems=("001", "002", "003"))
    write(root / "input" / "004.png", rgb8())  # unpaired
    write(root / "input" / "006.png", rgb8())  # unpaired
    write(root / "target" / "005.png", rgb8())  # unpaired
    (root / "target" / "002.png").write_bytes(b"")  # unreadable
    write(root / "target" / "003.png", rgb8(7, 8))  # size mismatch
    write(root / "input" / "001.jpg", rgb8(), "JPEG")  # duplicate stem
    with pytest.raises(PairsError) as err:
        find_pairs(root)
    msg = err.value.message
    assert msg.startswith(f"6 problems in {root}: ") and "\n" not in msg
    assert "duplicate stem 001 in input/ (001.jpg, 001.png)" in msg
    assert "unpaired input/004.png" in msg and "unpaired input/006.png" in msg and "unpaired target/005.png" in msg
    assert "unreadable target/002.png (empty file)" in msg
    assert "size mismatch 003: 8x6 vs 8x7" in err.value.problems
    assert "; and 1 more" in msg and len(err.value.problems) == 6
    assert err.value.hint and "target/" in err.value.hint


def test_find_pairs_truncated_and_single_problem(tmp_path):
    root = make_pairs(tmp_path / "p", stems=("001", "002"), size=(64, 64))
    p = root / "input" / "002.png"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InvalidInputError) as err:
        find_pairs(root)
    assert err.value.message == f"1 problem in {root}: unreadable input/002.png (truncated)"


def test_find_pairs_empty(tmp_path):
    root = tmp_path / "p"
    (root / "input").mkdir(parents=True)
    (root / "target").mkdir()
    with pytest.raises(InvalidInputError) as err:
        find_pairs(root)
    assert err.value.message == f"2 problems in {root}: no images in input/; no images in target/"


def test_find_pairs_missing_and_not_a_folder(tmp_path):
    with pytest.raises(NotFoundError) as err:
        find_pairs(tmp_path / "nope")
    assert str(tmp_path / "nope") in err.value.message
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="not a folder"):
        find_pairs(f)


def test_find_pairs_needs_one_input_and_one_target_dir(tmp_path):
    root = tmp_path / "p"
    for d in ("input", "lq", "stuff"):
        (root / d).mkdir(parents=True)
    with pytest.raises(InvalidInputError) as err:
        find_pairs(root)
    msg = err.value.message
    assert "2 input subfolders (input, lq)" in msg and "no target subfolder" in msg
    assert "(subfolders: input, lq, stuff)" in msg
    assert "gt" in err.value.hint and "degraded" in err.value.hint


# ---------------------------------------------------------------- split


def test_split_deterministic_and_seeded():
    stems = [f"{i:03d}" for i in range(20)]
    a = split_pairs(stems, 0.25, seed=1)
    assert a == split_pairs(list(reversed(stems)), 0.25, seed=1)  # input order does not matter
    assert list(a.values()).count("val") == 5 and list(a) == sorted(stems)
    assert a != split_pairs(stems, 0.25, seed=2)


def test_split_clamps():
    assert split_pairs(["a"], 0.5, 0) == {"a": "train"}
    assert list(split_pairs(["a", "b"], 0.1, 0).values()).count("val") == 1
    assert list(split_pairs(["a", "b"], 0.9, 0).values()).count("train") == 1
    assert set(split_pairs(["a", "b", "c"], 0.0, 0).values()) == {"train"}
    assert split_pairs([], 0.2, 0) == {}


@pytest.mark.parametrize("bad", [-0.1, 0.95, float("nan")])
def test_split_rejects_bad_fraction(bad):
    with pytest.raises(InvalidInputError):
        split_pairs(["a", "b"], bad, 0)
