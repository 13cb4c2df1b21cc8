"""Datasets, field paths, units and segments: all mtfleet knows of data, nothing of models."""

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
from mtfleet.data.formats import (
    FORMATS,
    CsvStyle,
    Dataset,
    JsonStyle,
    ParquetStyle,
    check_output_writable,
    detect_format,
    read_dataset,
    write_dataset,
)
from mtfleet.data.segment import Piece, reassemble, segment, segment_texts
from mtfleet.data.units import Unit, UnitKind, apply_translations, extract_units, unit_kind

__all__ = [
    "EVERY_ITEM",
    "FORMATS",
    "CsvStyle",
    "Dataset",
    "FieldPath",
    "JsonStyle",
    "Location",
    "ParquetStyle",
    "Piece",
    "Unit",
    "UnitKind",
    "apply_translations",
    "check_output_writable",
    "check_paths_exist",
    "detect_format",
    "extract_units",
    "find_values",
    "format_location",
    "parse_field_paths",
    "parse_location",
    "read_dataset",
    "reassemble",
    "segment",
    "segment_texts",
    "set_value",
    "unit_kind",
    "write_dataset",
]
