"""Atomic output: a file appears whole under its name or not at all, and only where it should.

The output's folder is opened once as a directory descriptor; the temporary file is created and
renamed through it, so a symlink planted at the temporary name or swapped in for the folder later
cannot redirect the write. A confined output's folder is opened one component at a time from the
folder it is confined to, following no symlink at any component (`open_folder_beneath`): a folder
swapped for a symlink, even one to a place inside the data root, stops the write.
"""

from __future__ import annotations

import contextlib
import errno
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
        self._name = self.path.name
        self._temporary = f".{self._name}.{secrets.token_hex(8)}.tmp"
        if confine_to is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._folder = os.open(self.path.parent.resolve(), _FOLDER_FLAGS)
            except OSError as error:
                raise OutputError(cannot_write(self.path, error)) from error
        else:
            self._folder = open_folder_beneath(self.path, Path(confine_to))
        if _is_folder(self._name, self._folder):
            os.close(self._folder)
            raise OutputError(f"Cannot write {self.path}: it is a folder.")
        try:
            descriptor = os.open(self._temporary, _TEMPORARY_FLAGS, 0o600, dir_fd=self._folder)
        except OSError as error:
            os.close(self._folder)
            raise OutputError(cannot_write(self.path, error)) from error
        self.handle: BinaryIO = open(descriptor, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        self._done = False
        self._published = False

    def publish(self) -> None:
        """Puts the file under `path` now, while it is still written: a reader sees the bytes
        flushed so far, and the writes after it, through the same file. `commit` then makes it
        durable; `abort` leaves it (whoever reads it must know how far it is written). A reader
        that opened the file before stays on its own: a file published again replaces the name,
        not the bytes it reads."""
        self.handle.flush()
        if self._published:
            return
        os.fchmod(self.handle.fileno(), self._mode())
        os.replace(self._temporary, self._name, src_dir_fd=self._folder, dst_dir_fd=self._folder)
        self._published = True

    def commit(self) -> None:
        """Makes the written bytes durable and puts them under `path`."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            if not self._published:
                os.fchmod(self.handle.fileno(), self._mode())
            self.handle.close()
            if not self._published:
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
        if not self._published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary, dir_fd=self._folder)
        self._close_folder()

    def remove(self) -> None:
        """Removes the temporary file and an existing file under `path`: no output at all."""
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._name, dir_fd=self._folder)
        self.abort()

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


def open_folder_beneath(path: Path, confine_to: Path) -> int:
    """A descriptor of the folder of `path`, walked down to from `confine_to` one component at a
    time without following a symlink at any of them, its missing folders made on the way.

    `path` names the place as the job was checked to write it (absolute, symlinks resolved then);
    a component that has since become a symlink or a file refuses the write.
    """
    root = Path(confine_to)
    outside = OutputError(f"Cannot write {os.path.relpath(path, root)}: it lies outside {root}.")
    try:
        relative = path.parent.relative_to(root)
    except ValueError:
        raise outside from None
    if ".." in relative.parts:
        raise outside
    try:
        folder = os.open(root, _FOLDER_FLAGS)
    except OSError as error:
        raise OutputError(f"Cannot write {path}: {confine_to} is not a folder.") from error
    walked = root
    try:
        for part in relative.parts:
            walked = walked / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=folder)
            following = os.open(part, _FOLDER_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = following
    except OSError as error:
        os.close(folder)
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputError(
                f"Cannot write {path}: {walked} is a symlink or a file, not a folder; no output "
                "is written through a symlink."
            ) from None
        raise OutputError(cannot_write(path, error)) from error
    return folder


def _is_folder(name: str, folder: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
