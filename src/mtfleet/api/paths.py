"""The data root: every dataset, model and output path a job names over the API lies under it.

The server's own files (the state dir with the job store and the jobs' work files) are not a
job's to read or write, even where they lie under the root. Errors name paths as the client gave
them or relative to the root: never the root itself, nor where a symlink points.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from mtfleet.data import dataset_files
from mtfleet.errors import ApiError, DatasetError, ModelError, MtfleetError, OutputError
from mtfleet.spec import JobSpec

# A Hugging Face hub id: "name" or "owner/name", letters, digits, "-", "_" and ".".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# The SQLite job store's file and the files SQLite keeps beside it.
STORE_NAME = re.compile(r"jobs\.db(?:-wal|-shm|-journal)?", re.IGNORECASE)
TEXT_FIELDS = ("input", "output", "model", "src_lang")


class DataRoot:
    """Resolves the paths of a job spec against the data root and refuses any that leave it or
    reach into the server's `private` folders."""

    def __init__(
        self,
        root: str | Path,
        private: Iterable[Path | None] = (),
        *,
        allow_hardlinks: bool = False,
    ) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ApiError(f"The data root {path} is not a directory.")
        self.root = path.resolve()
        self.private = [Path(folder).resolve() for folder in private if folder is not None]
        self.allow_hardlinks = allow_hardlinks

    def contain(self, spec: JobSpec) -> JobSpec:
        """The spec with absolute input, output and model paths, each checked against the root."""
        check_text(spec)
        dataset = self.path(spec.input, "input", DatasetError)
        # A folder or a glob names many files: each of them must be the root's too.
        for file in dataset_files(dataset)[1]:
            self._check_links(file, self.path(str(file), "input", DatasetError))
        output = self.path(spec.output, "output", OutputError)
        # Each target's own output, {tgt_lang} filled in, is confined as the template is.
        for target in spec.targets():
            self._check_output_name(self.path(spec.output_for(target), "output", OutputError))
        return spec.model_copy(
            update={"input": str(dataset), "output": str(output), "model": self.model(spec.model)}
        )

    def path(self, value: str, field: str, error: type[MtfleetError]) -> Path:
        """`value` (relative to the root, or absolute) with symlinks resolved, if under the root
        and outside the server's private folders."""
        given = Path(value)
        joined = given if given.is_absolute() else self.root / given
        try:
            resolved = joined.resolve()
        except (OSError, RuntimeError):  # a symlink loop, a name too long for the file system
            raise error(f"Field {field}: {value} cannot be resolved to a file.") from None
        if not resolved.is_relative_to(self.root):
            # Without following symlinks the path stays inside: a symlink is what leads out.
            if Path(os.path.normpath(joined)).is_relative_to(self.root):
                raise error(
                    f"Field {field}: {value} leads through a symlink outside the data root."
                )
            raise error(f"Field {field}: {value} lies outside the data root.")
        if any(resolved.is_relative_to(folder) for folder in self.private):
            raise error(
                f"Field {field}: {value} lies in the server's state directory, which holds the "
                "job store and the jobs' work files; choose a path outside it."
            )
        return resolved

    def model(self, value: str) -> str:
        """A model directory under the root as an absolute path, or a hub id unchanged.

        Only the root is looked at, never the server's working directory: whether a directory
        exists anywhere else changes no answer.
        """
        try:
            names_a_path = self._names_a_path(value)
        except OSError as error:  # a name too long for the file system
            raise ModelError(
                f"Field model: {value} cannot be resolved to a file ({error.strerror})."
            ) from None
        if names_a_path:
            return str(self.path(value, "model", ModelError))
        return value

    def _check_links(self, given: Path, file: Path) -> None:
        """A file with other hard links may be one outside the root under a name inside it."""
        if not self.allow_hardlinks and file.stat().st_nlink > 1:
            raise DatasetError(
                f"Field input: {given} has other hard links, which may be files outside the data "
                "root; copy it, or start the server with mtfleet serve --allow-hardlinks."
            )

    def _check_output_name(self, output: Path) -> None:
        for part in output.relative_to(self.root).parts:
            if STORE_NAME.fullmatch(part):
                raise OutputError(
                    f"Field output: {part} is the name of the job store's file; choose another."
                )

    def relative(self, message: str) -> str:
        """`message` with the data root's absolute path left out of the paths it names."""
        if self.root == Path(self.root.anchor):
            return message  # a root of "/" hides nothing, and every "/" is not it
        return message.replace(f"{self.root}{os.sep}", "").replace(str(self.root), ".")

    def _names_a_path(self, value: str) -> bool:
        given = Path(value)
        return (
            given.is_absolute()
            or ".." in given.parts
            or not HUB_ID.match(value)
            or (self.root / given).exists()
            or (self.root / given).is_symlink()
        )


def check_text(spec: JobSpec) -> None:
    """Paths, names and field paths are printable text: no control characters, null bytes or
    lone surrogates, which no file system, store or JSON answer takes back faithfully."""
    named = [(field, getattr(spec, field)) for field in TEXT_FIELDS]
    named += [("tgt_lang", code) for code in spec.targets()]
    named += [("fields", path) for path in spec.fields]
    for field, value in named:
        if value is not None:
            check_printable(field, value)


def check_printable(field: str, value: str) -> None:
    """`value`, given for `field`, holds no control character, null byte or lone surrogate."""
    for character in value:
        if unicodedata.category(character) in ("Cc", "Cs"):
            raise ApiError(
                f"Field {field}: holds the character U+{ord(character):04X}, which no path "
                "or name may hold.",
                400,
            )


def not_found_locally(model: str) -> ModelError:
    """The API reads hub models from its machine's cache only: trying the hub blocked a request
    for 25 s where the network is closed."""
    return ModelError(
        f"Model {model!r} is not found locally: the API checks hub models without the "
        "network; put it in the Hugging Face cache of the API's machine, or give a model "
        "directory under the data root."
    )
