"""Sharded datasets: a folder or a glob of data files in one format, mirrored into an output folder."""

from __future__ import annotations

import glob
from pathlib import Path

from mtfleet.data.styles import COMPRESSED_EXTENSIONS, detect_format, format_of
from mtfleet.errors import DatasetError

_GLOB_CHARACTERS = frozenset("*?[")
_MANIFEST_SUFFIX = ".manifest.json"


def dataset_files(input: str | Path) -> tuple[Path, list[Path]]:
    """The root of `input` (a file, a folder or a glob) and its data files, sorted, of one format.

    The root is a file's folder, the folder itself, or a glob's fixed leading folder. Hidden
    files, manifests and files of unknown extensions are skipped; compressed files are refused.
    """
    text = str(input)
    parts = Path(text).parts
    if any(_GLOB_CHARACTERS & set(part) for part in parts):
        fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARACTERS & set(part))
        root = Path(*parts[:fixed]) if fixed else Path()
        if not root.is_dir():
            raise DatasetError(f"{text} matches nothing: folder {root} does not exist.")
        pattern = str(Path(*parts[fixed:]))
        found = [root / name for name in glob.glob(pattern, root_dir=root, recursive=True)]
    else:
        path = Path(text)
        if not path.is_dir():
            if not path.exists():
                raise DatasetError(f"{path} does not exist.")
            return path.parent, [path]
        root = path
        found = list(root.rglob("*"))
    files = sorted(file for file in found if _is_data_file(root, file))
    if not files:
        raise DatasetError(
            f"{text} holds no data file; mtfleet reads .json, .jsonl, .ndjson, .csv, .parquet "
            "and .pq files."
        )
    formats = {file: detect_format(file) for file in files}
    first = files[0]
    for file in files[1:]:
        if formats[file] != formats[first]:
            raise DatasetError(
                f"{text} mixes formats: {first} is {formats[first]} but {file} is "
                f"{formats[file]}; keep one format per dataset."
            )
    return root, files


def mirrored_output(root: Path, file: Path, output_dir: Path) -> Path:
    """Where the output of `file`, one data file under `root`, goes under `output_dir`."""
    return Path(output_dir) / Path(file).relative_to(root)


def _is_data_file(root: Path, file: Path) -> bool:
    relative = file.relative_to(root).parts
    if any(part.startswith(".") for part in relative) or file.name.endswith(_MANIFEST_SUFFIX):
        return False
    known = format_of(file) is not None or file.suffix.lower() in COMPRESSED_EXTENSIONS
    return known and file.is_file()
