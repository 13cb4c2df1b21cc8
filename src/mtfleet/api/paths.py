"""The data root: every dataset, model and output path a job names over the API lies under it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mtfleet.errors import ApiError, DatasetError, ModelError, MtfleetError, OutputError
from mtfleet.spec import JobSpec

# A Hugging Face hub id: "name" or "owner/name", letters, digits, "-", "_" and ".".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class DataRoot:
    """Resolves the paths of a job spec against the data root and refuses any that leave it."""

    def __init__(self, root: str | Path) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ApiError(f"The data root {path} is not a directory.")
        self.root = path.resolve()

    def contain(self, spec: JobSpec) -> JobSpec:
        """The spec with absolute input, output and model paths, each checked against the root."""
        return spec.model_copy(
            update={
                "input": str(self.path(spec.input, "input", DatasetError)),
                "output": str(self.path(spec.output, "output", OutputError)),
                "model": self.model(spec.model),
            }
        )

    def path(self, value: str, field: str, error: type[MtfleetError]) -> Path:
        """`value` (relative to the root, or absolute) with symlinks resolved, if under the root."""
        given = Path(value)
        joined = given if given.is_absolute() else self.root / given
        resolved = joined.resolve()
        if resolved.is_relative_to(self.root):
            return resolved
        # Without following symlinks the path stays inside: a symlink is what leads out.
        if Path(os.path.normpath(joined)).is_relative_to(self.root):
            raise error(
                f"Field {field}: {value} leads through a symlink to {resolved}, "
                f"outside the data root {self.root}."
            )
        raise error(f"Field {field}: {value} lies outside the data root {self.root}.")

    def model(self, value: str) -> str:
        """A model directory under the root as an absolute path, or a hub id unchanged."""
        if self._names_a_path(value):
            return str(self.path(value, "model", ModelError))
        if Path(value).exists():
            # The cluster would load it relative to its own working directory, outside the root.
            raise ModelError(
                f"Field model: {value} is not under the data root {self.root} but names a "
                "directory of the server; give a path under the data root or a hub id."
            )
        return value

    def _names_a_path(self, value: str) -> bool:
        given = Path(value)
        return (
            given.is_absolute()
            or ".." in given.parts
            or not HUB_ID.match(value)
            or (self.root / given).exists()
            or (self.root / given).is_symlink()
        )
