"""An output folder held open for a whole run: every file goes in through the folder's handle.

A folder checked once by its path can be swapped mid-run (renamed away, a link put in its place,
pointing into the store, say); later files would then land wherever the link points. Held open,
the folder is the one that was checked until the end: names are created, replaced and linked
relative to its handle (openat, renameat, linkat), and a link at the last step of a name is never
followed (the folder itself may be a link the user gave: it is followed once, when it is opened).
Where the platform has no folder handles (Windows), each file re-checks that the path is still the
same folder just before it is written.

    with OutputFolder.hold(out_dir) as folder:
        store.refuse_inside(folder.real_path, "the output folder")
        with folder.atomic_file("a.png", overwrite=False) as fp:
            fp.write(data)
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from colora.core.errors import ConflictError, InvalidInputError
from colora.core.files import TEMP_SUFFIX, atomic_write, current_umask, remove_stale_temps

_HANDLES = hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd and os.link in os.supports_dir_fd
_NAME_CHARS = string.ascii_letters + string.digits


class OutputFolder:
    def __init__(self, path: Path, fd: int | None, identity: tuple[int, int]):
        self.path, self._fd, self._identity = path, fd, identity

    @classmethod
    @contextmanager
    def hold(cls, path: str | os.PathLike) -> Iterator[OutputFolder]:
        """The folder at `path` (which must exist; a link to a folder is followed now, once), held open."""
        path = Path(path)
        fd = None
        try:
            if _HANDLES:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                info = os.fstat(fd)
            else:
                info = os.stat(path)
        except OSError as e:
            raise InvalidInputError(
                f"the output folder {path} cannot be opened ({e.strerror or e})",
                hint="give a real folder with -o",
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(f"the output path {path} is not a folder", hint="give a folder with -o")
        try:
            yield cls(path, fd, (info.st_dev, info.st_ino))
        finally:
            if fd is not None:
                os.close(fd)

    @property
    def real_path(self) -> Path:
        """Where the held folder really is now (its handle's path where the system tells it)."""
        if self._fd is not None:
            try:
                return Path(os.readlink(f"/proc/self/fd/{self._fd}"))
            except OSError:
                pass
        self._check_still_there()
        return self.path.resolve()

    @contextmanager
    def atomic_file(self, name: str, *, overwrite: bool) -> Iterator[BinaryIO]:
        """A binary file to write `name`'s content into; on success it is fsynced, given ordinary
        permissions and renamed into place (overwrite=False: only if `name` does not exist by then,
        else ConflictError). On any error nothing is left behind and `name` is untouched."""
        if "/" in name or os.sep in name or name in ("", ".", ".."):
            raise InvalidInputError(f"{name!r} is not a plain file name")
        if self._fd is None:  # no handles: re-check the path, then write by path
            self._check_still_there()
            with atomic_write(self.path / name, overwrite=overwrite) as tmp, open(tmp, "wb") as fp:
                yield fp
            return
        self._refuse_special(name)
        remove_stale_temps(self._fd, name)
        temp = f".{name}.{''.join(secrets.choice(_NAME_CHARS) for _ in range(8))}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "wb") as fp:
                yield fp
                fp.flush()
                os.fsync(fp.fileno())
                os.fchmod(fp.fileno(), 0o666 & ~current_umask())
            if overwrite:
                self._refuse_special(name)
                os.replace(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
            else:
                try:  # a hard link fails atomically when the name exists: no check-then-write window
                    os.link(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
                except FileExistsError:
                    raise ConflictError(
                        f"{self.path / name} already exists", hint="pass --overwrite to replace it"
                    ) from None
            os.fsync(self._fd)
        finally:
            try:
                os.unlink(temp, dir_fd=self._fd)
            except FileNotFoundError:
                pass

    def _refuse_special(self, name: str) -> None:
        """Only a regular file is ever replaced: never a folder, a link, a FIFO or a device."""
        try:
            mode = os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise InvalidInputError(
                f"{self.path / name} exists and is not a regular file; colora replaces only regular files",
                hint="choose another output folder with -o",
            )

    def _check_still_there(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        if info is None or not stat.S_ISDIR(info.st_mode) or (info.st_dev, info.st_ino) != self._identity:
            raise ConflictError(
                f"the output folder {self.path} was moved or replaced during the run; nothing more is written",
                hint="restore again into a folder nothing else changes",
            )
