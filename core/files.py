"""Files colora writes: atomically (temp name, fsync, rename), with ordinary permissions; and their digests.

Pure Python (no torch), so the store uses the same functions as core.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from colora.core.errors import ConflictError, IntegrityError, InvalidInputError, NotFoundError

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
TEMP_SUFFIX = ".part"  # every temporary file colora writes ends so (`colora doctor` knows them)
# `.NAME.<8 random characters>.part`: what atomic_write (mkstemp) names its temporary files
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part$")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of colora's own temporary files (and nothing else's)."""
    return bool(_TEMP_NAME.match(name))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so big files do not fill memory."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"file not found: {p}", hint="check the path")
    digest = hashlib.sha256()
    with open(p, "rb") as fp:
        while block := fp.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_write(dest: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; when the body returns, what it wrote there is
    fsynced, given the permissions of an ordinary new file (0666 & ~umask; the writer may have
    replaced the file, so this comes last) and renamed into place. On any error the temporary
    file is removed and `dest` is untouched.

    overwrite=False refuses an existing `dest` at the moment of the rename (a hard link, which
    fails atomically when the name exists) with ConflictError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent, dest.name)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        if overwrite:
            refuse_special(dest)
            os.replace(tmp, dest)
        else:
            _link_no_clobber(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        if e.errno not in _FULL:
            raise
        # a full disk is the destination's, whichever file (a copy's source, say) the error named
        raise OSError(e.errno, e.strerror, str(dest)) from None
    finally:
        tmp.unlink(missing_ok=True)


STALE_TEMP_S = 3600  # a temporary file this old belongs to a writer that was killed (no write takes an hour)


def remove_stale_temps(folder: Path | int, name: str) -> None:
    """Remove what killed writers of `name` left in `folder` (a path, or a folder handle): only
    regular files named as colora names its temporaries for `name`, and only old ones."""
    import time

    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}")
    handle = folder if isinstance(folder, int) else None
    try:
        with os.scandir(folder) as entries:
            stale = [
                e.name
                for e in entries
                if pattern.fullmatch(e.name)
                and e.is_file(follow_symlinks=False)
                and time.time() - e.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S
            ]
        for entry in stale:
            os.unlink(entry if handle is not None else Path(folder) / entry, dir_fd=handle)
    except OSError:
        pass  # tidying is a courtesy: never a reason for the write itself to fail


def real_path_in(root: Path, relative: str) -> Path:
    """`root / relative` (not resolved) where every folder below `root` on the way is a real folder,
    not a link: what colora writes there stays inside `root`. The last part may be missing; if it
    is there, `atomic_write` replaces it only when it is a regular file."""
    path = Path(root)
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        raise InvalidInputError(f"{relative} is not a path inside {root}")
    for part in parts[:-1]:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # made as a real folder by atomic_write
        if not stat.S_ISDIR(mode):
            raise InvalidInputError(f"{path} is not a real folder (a link?); nothing is written through it")
    return path / parts[-1]


def refuse_special(dest: Path) -> None:
    """Only a regular file is ever replaced: never a device, a FIFO, a socket, a folder or a link."""
    try:
        mode = os.lstat(dest).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "not a regular file"
        raise InvalidInputError(
            f"{dest} is {kind}; colora replaces only regular files", hint="choose another destination"
        )


def _link_no_clobber(tmp: Path, dest: Path) -> None:
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise ConflictError(f"{dest} already exists", hint="pass --overwrite to replace it") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a small window, but never a partial file)
        if dest.exists() or dest.is_symlink():
            raise ConflictError(f"{dest} already exists", hint="pass --overwrite to replace it") from None
        os.replace(tmp, dest)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_atomic(
    source: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = True, expected_sha256: str | None = None
) -> None:
    """Copy `source` to `dest` atomically; with `expected_sha256`, the copy is checked before it
    is renamed into place (IntegrityError, and `dest` untouched, when it differs)."""
    with atomic_write(dest, overwrite=overwrite) as tmp:
        shutil.copyfile(source, tmp)
        if expected_sha256 is not None and sha256_file(tmp) != expected_sha256:
            raise IntegrityError(
                f"{Path(source).name} changed since colora wrote it (its sha256 differs from the recorded one)",
                hint="run `colora doctor`; nothing was exported",
            )


MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit


def safetensors_header(data: bytes) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """({tensor: (dtype, shape)}, __metadata__) of a safetensors file's bytes (at least its header),
    read with the standard library (the store re-indexes weight files without torch).
    ValueError for anything that is not a well-formed header."""
    import json

    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError("header length out of range")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("__metadata__ is not a map of strings")
    tensors = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r} has no valid shape")
        tensors[name] = (str(info.get("dtype")), tuple(shape))
    return tensors, dict(meta)


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """`safetensors_header` of a file, reading only its header."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return safetensors_header(head + f.read(min(n, MAX_HEADER_BYTES)))
