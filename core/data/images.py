"""Image files in and out, with Pillow and numpy only (no torch: fast CLI paths use this).

Pixels travel as RGB float32 arrays, H x W x 3 in [0, 1], plus an optional alpha plane
(H x W float32 in [0, 1]). `ImageMeta` remembers what the file was, so that a restored image
can be written back in the same format and mode family.

Decisions, in one place:

* EXIF orientation is applied on load (`ImageOps.exif_transpose`): pixels are upright, and
  width/height in the meta are the upright ones. The orientation tag is dropped from the EXIF
  written back, so viewers do not rotate the result a second time.
* Grayscale (1, L, I;16*, I) is replicated to RGB. Palette (P/PA) goes through RGBA when it has
  transparency, else RGB. RGBA/LA (and a tRNS colour key on L/RGB) give a separate alpha.
  CMYK and YCbCr are converted to RGB by Pillow, without colour management; their ICC profile
  is dropped since it would describe the wrong colour space. Float (F), LAB and HSV images are
  refused. Multi-frame files (GIF, TIFF pages) contribute their first frame.
* 16-bit grayscale (I;16, I;16B, I) is divided by 65535, keeping 16-bit precision.
  Pillow decodes 16-bit RGB(A)/LA PNGs to 8 bits (LA as RGBA), so those load at 8-bit precision; the meta
  still says bit_depth=16 (the file's depth) and they are written back as 16-bit PNGs by a
  small built-in writer (Pillow cannot write them), which keeps the restored output's precision.
  16-bit colour TIFFs are written back as 8-bit TIFFs (same Pillow limitation).
* Every read decodes fully (`img.load()`), so truncated files are caught here and not in
  the middle of training. Empty, truncated, corrupt files and non-images raise
  `ImageReadError` (an `InvalidInputError`) "cannot read image <path>: <reason>"; so does an
  image above Pillow's decompression-bomb limit. A missing file raises `NotFoundError`.
* Writing: same format as the original (PNG for formats Pillow cannot write), grayscale back to
  L (I;16 for 16-bit grayscale PNG/TIFF), alpha back where the format holds it (PNG, TIFF,
  WEBP, BMP), palette originals as RGB(A). JPEG and WEBP use quality 95, JPEG with 4:4:4
  chroma (subsampling=0). ICC profile and EXIF are carried over. Writes are atomic
  (`core.files.atomic_write`): a hidden `.<name>.<random>.part` file in the destination folder,
  renamed into place; without `overwrite` an existing output is never replaced, even by a race.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colora.core.errors import ColoraError, ConflictError, InvalidInputError, NotFoundError
from colora.core.files import atomic_write

if TYPE_CHECKING:
    from colora.core.output_folder import OutputFolder

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

_GRAY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"}) | _GRAY16_MODES
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_SUPPORTED_MODES = _GRAY_MODES | _ALPHA_MODES | {"P", "RGB", "RGBX", "CMYK", "YCbCr"}
_WRITABLE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP"})
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP", "BMP"})
_ORIENTATION_TAG = 0x0112
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, the weights Pillow's convert("L") uses

# The largest image colora decodes, checked from the header before any pixel is decoded (a
# 12 KB PNG can claim 10000 x 10000 pixels). 64 MP holds every common camera sensor (61 MP);
# raise it with --max-pixels or $COLORA_MAX_PIXELS. Pillow's own decompression-bomb check is
# replaced by this one, so its raw warning never reaches the terminal.
DEFAULT_MAX_PIXELS = 64_000_000
ENV_MAX_PIXELS = "COLORA_MAX_PIXELS"
Image.MAX_IMAGE_PIXELS = None


def max_pixels(limit: int | None = None) -> int:
    """The pixel limit: `limit` if given, else $COLORA_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if limit is not None:
        return limit
    raw = os.environ.get(ENV_MAX_PIXELS)
    if raw is None:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError(
            f"${ENV_MAX_PIXELS} must be a whole number of pixels, not {raw!r}",
            hint=f"e.g. {ENV_MAX_PIXELS}=100000000 for 100 megapixels",
        )
    return int(raw)


def _check_pixels(path: Path, width: int, height: int, limit: int | None) -> None:
    limit = max_pixels(limit)
    if width * height > limit:
        raise ImageReadError(
            path,
            f"too many pixels ({width}x{height} = {width * height:,}; the limit is {limit:,})",
            hint=f"downscale or crop it, or raise the limit with --max-pixels or ${ENV_MAX_PIXELS}",
        )


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a name colora treats as an image: known extension, not hidden."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


class ImageReadError(InvalidInputError):
    """A file that is not a readable image; `reason` is the short why ("truncated", ...)."""

    def __init__(self, path: str | os.PathLike, reason: str, hint: str | None = None):
        super().__init__(f"cannot read image {path}: {reason}", hint)
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageMeta:
    format: str  # Pillow format name of the file: "PNG", "JPEG", ...
    mode: str  # Pillow mode of the file before any conversion: "L", "RGBA", "I;16", ...
    width: int  # upright (after EXIF orientation)
    height: int
    bit_depth: int  # 8 or 16 bits per sample in the file
    has_alpha: bool
    grayscale: bool  # written back as L / LA / I;16
    icc_profile: bytes | None = field(default=None, repr=False)
    exif: bytes | None = field(default=None, repr=False)  # orientation already removed


# ---------------------------------------------------------------- reading


def _reason(exc: BaseException) -> str:
    """A short, one-line reason from whatever Pillow raised."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or an unsupported format"
    if isinstance(exc, OSError) and exc.strerror:  # errno errors: skip the repeated path
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "truncated" in text.lower():
        return "truncated"
    if "data stream" in text.lower():  # Pillow's "broken/unrecognized data stream ... reading image file"
        return "corrupt image data"
    return text


def _depth_and_gray(path: Path, img: Image.Image) -> tuple[int, bool]:
    """(bits per sample in the file, whether the file is grayscale)."""
    if img.mode in _GRAY16_MODES:
        return 16, True
    gray = img.mode in _GRAY_MODES
    if img.format == "PNG":
        # Pillow hides 16-bit colour PNGs' depth, and opens 16-bit gray+alpha as RGBA:
        # read IHDR's bit depth and colour type (bytes 24 and 25) instead.
        with open(path, "rb") as fp:
            head = fp.read(26)
        if len(head) == 26:
            return (16 if head[24] == 16 else 8), gray or head[25] in (0, 4)
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, 8)
        return (16 if max(bits if isinstance(bits, tuple) else (bits,)) >= 16 else 8), gray
    return 8, gray


def _decode(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """Fully decode `path` (refused first if larger than the pixel limit), apply EXIF orientation;
    the returned image is detached from the file."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"image not found: {p}", hint="check the path")
    if p.is_dir():
        raise ImageReadError(p, "is a folder")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "empty file")
    try:
        with Image.open(p) as img:
            _check_pixels(p, *img.size, max_pixels)
            img.load()  # full decode: this is where truncation shows up
            fmt, mode = img.format or "PNG", img.mode
            if mode not in _SUPPORTED_MODES:
                raise ImageReadError(p, f"unsupported pixel mode {mode}", hint="convert it to an 8- or 16-bit PNG")
            has_alpha = mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info)
            depth, gray = _depth_and_gray(p, img)
            upright = ImageOps.exif_transpose(img)  # a detached copy, orientation tag removed
    except ColoraError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on corrupt data
        raise ImageReadError(p, _reason(exc)) from exc
    icc = upright.info.get("icc_profile") or None
    meta = ImageMeta(
        format=fmt,
        mode=mode,
        width=upright.width,
        height=upright.height,
        bit_depth=depth,
        has_alpha=has_alpha,
        grayscale=gray,
        icc_profile=None if mode in ("CMYK", "YCbCr") else icc,
        exif=upright.info.get("exif") or None,
    )
    return upright, meta


def load_image(
    path: str | os.PathLike, max_pixels: int | None = None
) -> tuple[np.ndarray, ImageMeta, np.ndarray | None]:
    """Read an image: (RGB float32 HxWx3 in [0,1], meta, alpha HxW float32 in [0,1] or None)."""
    img, meta = _decode(path, max_pixels)
    if img.mode in _GRAY16_MODES:
        gray = np.clip(np.asarray(img).astype(np.float32), 0, 65535) / np.float32(65535)
        return np.repeat(gray[:, :, None], 3, axis=2), meta, None
    try:
        arr = np.asarray(img.convert("RGBA" if meta.has_alpha else "RGB"))
    except Exception as exc:
        raise ImageReadError(path, _reason(exc)) from exc
    arr = arr.astype(np.float32) / np.float32(255)
    rgb = np.ascontiguousarray(arr[:, :, :3])
    alpha = np.ascontiguousarray(arr[:, :, 3]) if meta.has_alpha else None
    return rgb, meta, alpha


def verify_image(path: str | os.PathLike, max_pixels: int | None = None) -> ImageMeta:
    """Fully decode `path` and return its meta; raises ImageReadError if it cannot be used."""
    return _decode(path, max_pixels)[1]


def read_image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height), upright, from the header only. Does not detect truncation."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"image not found: {p}", hint="check the path")
    try:
        with Image.open(p) as img:
            w, h = img.size
            _check_pixels(p, w, h, max_pixels)
            if img.format == "PNG":
                # PngImageFile.getexif() decodes the whole image when EXIF is not in the
                # header; an eXIf chunk after the pixel data is rare, so read only the header.
                exif = Image.Exif()
                if "exif" in img.info:
                    exif.load(img.info["exif"])
            else:
                exif = img.getexif()
            orientation = exif.get(_ORIENTATION_TAG, 1)
    except ColoraError:
        raise
    except Exception as exc:
        raise ImageReadError(p, "empty file" if p.stat().st_size == 0 else _reason(exc)) from exc
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ---------------------------------------------------------------- writing


def _checked_planes(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidInputError(f"image data must be H x W x 3, got shape {rgb.shape}")
    if not np.issubdtype(rgb.dtype, np.floating):
        raise InvalidInputError(f"image data must be float in [0, 1], got {rgb.dtype}")
    if not np.isfinite(rgb).all():
        raise InvalidInputError("image data contains NaN or infinite values")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != rgb.shape[:2]:
            raise InvalidInputError(f"alpha must be {rgb.shape[0]} x {rgb.shape[1]}, got shape {alpha.shape}")
        if not np.isfinite(alpha).all():
            raise InvalidInputError("alpha contains NaN or infinite values")
    return rgb, alpha


ROWS_AT_ONCE = 256  # float64 work on big images goes a band of rows at a time: bounded memory


def _quantize(x: np.ndarray, bits: int) -> np.ndarray:
    top = 65535 if bits == 16 else 255
    q = np.empty(x.shape, dtype=np.uint16 if bits == 16 else np.uint8)
    for r in range(0, x.shape[0], ROWS_AT_ONCE):
        band = x[r : r + ROWS_AT_ONCE].astype(np.float64)
        np.clip(band, 0.0, 1.0, out=band)
        band *= top
        q[r : r + ROWS_AT_ONCE] = np.rint(band, out=band)
    return q


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601) in float64, a band of rows at a time."""
    return np.concatenate(
        [rgb[r : r + ROWS_AT_ONCE].astype(np.float64) @ _LUMA for r in range(0, rgb.shape[0], ROWS_AT_ONCE)]
    )


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _write_png16(fp, planes: np.ndarray, meta: ImageMeta) -> None:
    """Minimal 16-bit PNG writer (filter 0, one IDAT), for what Pillow cannot write."""
    h, w, c = planes.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]  # gray, gray+alpha, RGB, RGBA
    rows = np.zeros((h, 1 + w * c * 2), np.uint8)  # first byte of each row: filter type 0
    rows[:, 1:] = planes.astype(">u2").reshape(h, w * c).view(np.uint8)
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if meta.icc_profile:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta.icc_profile)))
    if meta.exif:
        exif = meta.exif[6:] if meta.exif.startswith(b"Exif\x00\x00") else meta.exif
        out.append(_png_chunk(b"eXIf", exif))
    out += [_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_LEVEL)), _png_chunk(b"IEND", b"")]
    fp.write(b"".join(out))


# zlib level of written PNGs: lossless either way; 3 encodes ~3x faster than Pillow's default 6
# for ~4 % larger files (bench/speed.py's folder restore is bound by it on 2 cores)
PNG_LEVEL = 3


def _save_options(fmt: str, meta: ImageMeta) -> dict:
    opts: dict = {}
    if fmt == "JPEG":
        opts.update(quality=95, subsampling=0)  # 4:4:4: restored detail survives in chroma too
    elif fmt == "WEBP":
        opts.update(quality=95)
    elif fmt == "PNG":
        opts.update(compress_level=PNG_LEVEL)
    if meta.icc_profile and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        opts["icc_profile"] = meta.icc_profile
    if meta.exif and fmt in ("JPEG", "PNG", "WEBP"):
        opts["exif"] = meta.exif
    return opts


@contextmanager
def _open_output(dest: Path, overwrite: bool, folder: OutputFolder | None) -> Iterator[BinaryIO]:
    if folder is not None:
        with folder.atomic_file(dest.name, overwrite=overwrite) as fp:
            yield fp
    else:
        with atomic_write(dest, overwrite=overwrite) as tmp, open(tmp, "wb") as fp:
            yield fp


def save_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    meta: ImageMeta,
    alpha: np.ndarray | None = None,
    *,
    overwrite: bool = False,
    folder: OutputFolder | None = None,
) -> Path:
    """Write `rgb` (HxWx3 float in [0,1], clipped) like the original described by `meta`.

    The format is `meta.format` whatever the extension of `path`, so keep the original
    extension. With `folder` (held open for a run, core/output_folder.py), the file is written
    by its name through the folder's handle. Returns the destination path.
    """
    dest = Path(path)
    rgb, alpha = _checked_planes(rgb, alpha)
    if folder is None:
        if dest.is_dir():
            raise InvalidInputError(f"output path is a folder: {dest}", hint="give a file name")
        if dest.exists() and not overwrite:
            raise ConflictError(f"{dest} already exists", hint="pass --overwrite to replace it")
        if not dest.parent.is_dir():
            raise NotFoundError(f"output folder not found: {dest.parent}", hint="create it first")

    fmt = meta.format if meta.format in _WRITABLE_FORMATS else "PNG"
    keep_alpha = alpha is not None and fmt in _ALPHA_FORMATS
    # BMP and WEBP have no gray+alpha mode: such an image goes out as RGBA.
    gray = meta.grayscale and not (keep_alpha and fmt in ("BMP", "WEBP"))
    color = _to_gray(rgb) if gray else rgb  # HxW or HxWx3
    planes = color[:, :, None] if color.ndim == 2 else color
    if keep_alpha:
        planes = np.concatenate([planes, alpha[:, :, None]], axis=2)
    # 16 bits where the file had them and the format can hold them: PNG always (own writer
    # for multi-channel), TIFF only for plain grayscale.
    bits = 16 if meta.bit_depth == 16 and (fmt == "PNG" or (fmt == "TIFF" and planes.shape[2] == 1)) else 8
    q = _quantize(planes, bits)

    try:
        with _open_output(dest, overwrite, folder) as fp:
            if bits == 16 and q.shape[2] > 1:
                _write_png16(fp, q, meta)
            else:
                img = Image.fromarray(q[:, :, 0] if q.shape[2] == 1 else q)
                img.save(fp, format=fmt, **_save_options(fmt, meta))
    except ColoraError:
        raise
    except Exception as exc:
        raise ColoraError(f"cannot write image {dest}: {_reason(exc)}") from exc
    return dest
