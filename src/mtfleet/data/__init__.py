"""Datasets, field paths, units and segments: all mtfleet knows of data, nothing of models."""

from mtfleet.data.atomic import write_bytes_atomically
from mtfleet.data.fieldpaths import (
    EVERY_ITEM,
    FieldPath,
    Location,
    check_paths_exist,
    find_values,
    format_location,
    parse_field_paths,
    parse_location,
    set_value,
)
from mtfleet.data.formats import Dataset, check_output_writable, read_dataset, write_dataset
from mtfleet.data.reader import DatasetReader
from mtfleet.data.segment import Piece, reassemble, segment, segment_texts
from mtfleet.data.shards import dataset_files, mirrored_output
from mtfleet.data.styles import (
    FORMATS,
    CsvStyle,
    JsonStyle,
    ParquetStyle,
    Style,
    detect_format,
    style_from_json,
    style_to_json,
)
from mtfleet.data.units import Unit, UnitKind, apply_translations, extract_units, unit_kind
from mtfleet.data.writer import DatasetWriter

__all__ = [
    "EVERY_ITEM",
    "FORMATS",
    "CsvStyle",
    "Dataset",
    "DatasetReader",
    "DatasetWriter",
    "FieldPath",
    "JsonStyle",
    "Location",
    "ParquetStyle",
    "Piece",
    "Style",
    "Unit",
    "UnitKind",
    "apply_translations",
    "check_output_writable",
    "check_paths_exist",
    "dataset_files",
    "detect_format",
    "extract_units",
    "find_values",
    "format_location",
    "mirrored_output",
    "parse_field_paths",
    "parse_location",
    "read_dataset",
    "reassemble",
    "segment",
    "segment_texts",
    "set_value",
    "style_from_json",
    "style_to_json",
    "unit_kind",
    "write_bytes_atomically",
    "write_dataset",
]
