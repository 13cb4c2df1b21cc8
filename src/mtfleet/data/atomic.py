"""Atomic output: a file appears whole under its name or not at all, and only where it should.

The output's folder is opened once as a directory descriptor; the temporary file is created and
renamed through it, so a symlink planted at the temporary name or swapped in for the folder later
cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from mtfleet.errors import OutputError

# A temporary file is created readable by its owner only; an output gets the usual mode instead.
NEW_FILE_MODE = 0o644
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_BUFFER = 1 << 20


class AtomicFile:
    """A temporary file beside `path` that `commit` renames over `path` and `abort` removes."""

    def __init__(self, path: str | Path, *, confine_to: Path | None = None) -> None:
        self.path = Path(path)
        folder = _confined_folder(self.path, confine_to)
        if self.path.is_dir():
            raise OutputError(f"Cannot write {self.path}: it is a folder.")
        self._name = self.path.name
        self._temporary = f".{self._name}.{secrets.token_hex(8)}.tmp"
        try:
            self._folder = os.open(folder, _FOLDER_FLAGS)
        except OSError as error:
            raise OutputError(cannot_write(self.path, error)) from error
        try:
            descriptor = os.open(self._temporary, _TEMPORARY_FLAGS, 0o600, dir_fd=self._folder)
        except OSError as error:
            os.close(self._folder)
            raise OutputError(cannot_write(self.path, error)) from error
        self.handle: BinaryIO = open(descriptor, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        self._done = False

    def commit(self) -> None:
        """Makes the written bytes durable and puts them under `path`."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            os.fchmod(self.handle.fileno(), self._mode())
            self.handle.close()
            os.replace(
                self._temporary, self._name, src_dir_fd=self._folder, dst_dir_fd=self._folder
            )
            # The rename is durable only once the folder's entry is on disk.
            os.fsync(self._folder)
        except BaseException as error:
            self.abort()
            if isinstance(error, OSError):
                raise OutputError(cannot_write(self.path, error)) from error
            raise
        self._close_folder()

    def abort(self) -> None:
        """Removes the temporary file; an existing output stays as it was."""
        if self._done:
            return
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temporary, dir_fd=self._folder)
        self._close_folder()

    def _mode(self) -> int:
        try:
            existing = os.stat(self._name, dir_fd=self._folder, follow_symlinks=False)
        except FileNotFoundError:
            return NEW_FILE_MODE
        return stat.S_IMODE(existing.st_mode) if stat.S_ISREG(existing.st_mode) else NEW_FILE_MODE

    def _close_folder(self) -> None:
        self._done = True
        os.close(self._folder)


def write_bytes_atomically(path: Path, content: bytes, *, confine_to: Path | None = None) -> None:
    """Writes `content` to a temporary file beside `path`, then renames it over `path`."""
    output = AtomicFile(path, confine_to=confine_to)
    try:
        output.handle.write(content)
    except BaseException as error:
        output.abort()
        if isinstance(error, OSError):
            raise OutputError(cannot_write(Path(path), error)) from error
        raise
    output.commit()


def cannot_write(path: Path, error: OSError) -> str:
    """One sentence saying why `path` cannot be written."""
    if isinstance(error, FileNotFoundError):
        return f"Cannot write {path}: folder {path.parent} does not exist."
    if isinstance(error, IsADirectoryError):
        return f"Cannot write {path}: it is a folder."
    if isinstance(error, PermissionError):
        return f"Cannot write {path}: permission denied."
    return f"Cannot write {path}: {error.strerror or error}."


def _confined_folder(path: Path, confine_to: Path | None) -> Path:
    """The output's folder with symlinks resolved, checked to lie under `confine_to`."""
    folder = path.parent.resolve()
    if confine_to is not None and not folder.is_relative_to(Path(confine_to).resolve()):
        shown = os.path.relpath(path.parent.resolve() / path.name, Path(confine_to).resolve())
        raise OutputError(f"Cannot write {shown}: it lies outside {confine_to}.")
    return folder
