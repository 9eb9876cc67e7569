"""Read a header-CSV dataset (comma or TAB separated, LF or CRLF, plain or .gz) into Records.

pandas parses the file, for speed on million-row tables; the result is what records.parse_lines
would give for the same lines: float64 numeric columns, stripped text for categorical and trailing
columns, "ignored" columns not kept. Bad input is a DataError naming the file, the line (the
header is line 1) and the column. When pandas rejects the file, a plain line-by-line scan finds
the first bad line, so the message names it precisely.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np

from ...edge_runtime.ingest.records import RawSchema, Records, open_input
from .base import LabelledSet
from .files import DataError

FIRST_DATA_LINE = 2  # line 1 is the header


def read_table(path: str | Path, file_columns: tuple[str, ...], schema: RawSchema,
               label_column: str, class_of_label: dict[str, int], name: str) -> LabelledSet:
    """Load one labelled file. `file_columns` is the expected header; its columns map in order
    onto schema.names + schema.trailing. `class_of_label` maps label text to a class index."""
    path = Path(path)
    keys = schema.names + schema.trailing
    if len(file_columns) != len(keys):
        raise ValueError(f"{len(file_columns)} file columns for {len(keys)} schema columns")
    kinds = schema.types + ("trailing",) * len(schema.trailing)
    sep = _check_header(path, file_columns)
    frame = _read_frame(path, sep, file_columns, kinds)
    if not len(frame):
        raise DataError(f"{path}: no records (only a header)")
    if (frame[file_columns[-1]].astype(str) == "").any():  # pandas pads a short line with ""
        problem = next(_bad_lines(path, sep, file_columns, kinds), None)
        if problem:
            raise DataError(f"{path}, {problem}")
    numbers = np.arange(FIRST_DATA_LINE, FIRST_DATA_LINE + len(frame), dtype=np.int64)
    columns, trailing = {}, {}
    for column, key, kind in zip(file_columns, keys, kinds):
        if kind == "numeric":
            values = frame[column].to_numpy(dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                raise DataError(f"{path}, line {numbers[bad[0]]}: value not finite in column "
                                f"{file_columns.index(column) + 1} ({column}): {values[bad[0]]}")
            columns[key] = values
        elif kind != "ignored":
            text = np.char.strip(frame[column].to_numpy(dtype=str))  # as records.parse_lines
            (trailing if kind == "trailing" else columns)[key] = text
    records = Records(columns, numbers, trailing)
    y = _classes(path, records, label_column, class_of_label)
    return LabelledSet(name, path, records, y, label_column)


def _check_header(path: Path, file_columns: tuple[str, ...]) -> str:
    """Return the delimiter (TAB if the header holds one, else comma) after checking the names."""
    try:
        with open_input(str(path)) as stream:
            line = stream.readline().decode("utf-8").rstrip("\r\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}, line 1: the header is not UTF-8 text") from None
    if not line.strip():
        raise DataError(f"{path}: empty file or empty header line")
    sep = "\t" if "\t" in line else ","
    found = [n.strip() for n in next(csv.reader([line], delimiter=sep))]
    if found != list(file_columns):
        missing = [c for c in file_columns if c not in found]
        unexpected = [c for c in found if c not in file_columns]
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise DataError(f"{path}, line 1: header does not match the expected {len(file_columns)} "
                        f"columns: {'; '.join(problems) or 'same names in another order'} "
                        f"(expected: {', '.join(file_columns)})")
    return sep


def _read_frame(path: Path, sep: str, file_columns: tuple[str, ...], kinds: tuple[str, ...]):
    import pandas as pd  # host only, and only when a table is read (the CLI imports this module)

    dtypes = {c: np.float64 if k == "numeric" else "category" if k == "ignored" else str
              for c, k in zip(file_columns, kinds)}
    try:
        with open_input(str(path)) as stream:
            # No NA guessing (a label "NA" stays text), blank lines kept (so row i is line i + 2),
            # and Python's own float parsing, as on the device.
            return pd.read_csv(stream, sep=sep, header=0, names=list(file_columns), dtype=dtypes,
                               keep_default_na=False, na_filter=False, skip_blank_lines=False,
                               float_precision="round_trip", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except ValueError as e:  # ParserError, UnicodeDecodeError and float conversion among them
        problem = next(_bad_lines(path, sep, file_columns, kinds), None)
        raise DataError(f"{path}, {problem}" if problem else f"{path}: cannot parse ({e})") from None


def _bad_lines(path: Path, sep: str, file_columns: tuple[str, ...], kinds: tuple[str, ...]
               ) -> Iterator[str]:
    """The slow path, run only after pandas failed: describe each bad line, in file order."""
    numeric = [(j, c) for j, (c, k) in enumerate(zip(file_columns, kinds)) if k == "numeric"]
    with open_input(str(path)) as stream:
        stream.readline()
        for number, raw in enumerate(stream, start=FIRST_DATA_LINE):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield f"line {number}: not UTF-8 text (byte {e.start})"
                continue
            if not text.strip():
                yield f"line {number}: empty line"
                continue
            fields = next(csv.reader([text], delimiter=sep))
            if len(fields) != len(file_columns):
                yield (f"line {number}: wrong column count: expected {len(file_columns)} fields, "
                       f"got {len(fields)}")
                continue
            for j, column in numeric:
                try:
                    float(fields[j])
                except ValueError:
                    yield (f"line {number}: non-numeric value in column {j + 1} ({column}): "
                           f"{fields[j][:40]!r}")
                    break


def _classes(path: Path, records: Records, label_column: str, class_of_label: dict[str, int]
             ) -> np.ndarray:
    """Class index per record; a label outside `class_of_label` is an error, never a drop."""
    labels = records.trailing[label_column]
    known, rows = np.unique(labels, return_inverse=True)
    unknown = [label for label in known.tolist() if label not in class_of_label]
    if unknown:
        i = int(np.flatnonzero(labels == unknown[0])[0])
        raise DataError(f"{path}, line {records.numbers[i]}: unknown {label_column} "
                        f"{unknown[0]!r}; known values: {', '.join(map(repr, class_of_label))}")
    return np.array([class_of_label[label] for label in known.tolist()], dtype=np.int64)[rows]
