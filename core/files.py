"""Files colora writes: atomically (temp name, fsync, rename), with ordinary permissions; and their digests.

Pure Python (no torch), so the store uses the same functions as core.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import ConflictError, NotFoundError

TEMP_SUFFIX = ".part"  # every temporary file colora writes ends so (`colora doctor` knows them)


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
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        if overwrite:
            os.replace(tmp, dest)
        else:
            _link_no_clobber(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


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


def copy_atomic(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    with atomic_write(dest) as tmp:
        shutil.copyfile(source, tmp)
