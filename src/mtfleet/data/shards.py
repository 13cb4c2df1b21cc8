"""Sharded datasets: a folder or a glob of data files in one format, mirrored into an output folder."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from mtfleet.data.styles import COMPRESSED_EXTENSIONS, detect_format, format_of
from mtfleet.errors import DatasetError

_GLOB_CHARACTERS = frozenset("*?[")
_MANIFEST_SUFFIX = ".manifest.json"
# Files and folders a folder or glob may name: far more than any sharded dataset has.
MAX_FILES = 100_000


def dataset_files(input: str | Path) -> tuple[Path, list[Path]]:
    """The root of `input` (a file, a folder or a glob) and its data files, sorted, of one format.

    The root is a file's folder, the folder itself, or a glob's fixed leading folder. Hidden
    files, manifests and files of unknown extensions are skipped; compressed files are refused.
    Symlinked folders are never entered (a loop of them would never end), and a dataset of more
    than MAX_FILES files is refused.
    """
    text = str(input)
    parts = Path(text).parts
    if any(_GLOB_CHARACTERS & set(part) for part in parts):
        fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARACTERS & set(part))
        root = Path(*parts[:fixed]) if fixed else Path()
        if not root.is_dir():
            raise DatasetError(f"{text} matches nothing: folder {root} does not exist.")
        found = _bounded(text, root.glob(str(Path(*parts[fixed:]))))
    else:
        path = Path(text)
        if not path.is_dir():
            if not path.exists():
                raise DatasetError(f"{path} does not exist.")
            return path.parent, [path]
        root = path
        found = _bounded(text, root.rglob("*"))
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


def _bounded(text: str, found: Iterator[Path]) -> list[Path]:
    files = list(islice(found, MAX_FILES + 1))
    if len(files) > MAX_FILES:
        raise DatasetError(
            f"{text} names more than {MAX_FILES} files and folders; split it into several datasets."
        )
    return files


def _is_data_file(root: Path, file: Path) -> bool:
    relative = file.relative_to(root).parts
    if any(part.startswith(".") for part in relative) or file.name.endswith(_MANIFEST_SUFFIX):
        return False
    # A glob's `*` may step through a symlinked folder, which `**` never enters: neither may.
    if any((root / folder).is_symlink() for folder in file.relative_to(root).parents[:-1]):
        return False
    known = format_of(file) is not None or file.suffix.lower() in COMPRESSED_EXTENSIONS
    return known and file.is_file()
