"""Raw records in a dataset's own CSV layout, parsed into typed columns with numpy alone.

The host's dataset loaders parse their files through this same code (in strict mode), so the
device and the host can never disagree about what a record means. A bad record is returned as a
`Rejected` with a reason; the caller decides whether that is fatal (host loader) or counted and
skipped (device).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from functools import lru_cache
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

# Longest raw line we accept (bytes); an NSL-KDD line is ~150 bytes, so this is generous.
MAX_LINE_BYTES = 64 * 1024

# Rejection reasons: short, stable strings (they become metric labels on the device).
WRONG_FIELD_COUNT = "wrong_field_count"
NON_NUMERIC = "non_numeric"
NOT_FINITE = "not_finite"
EMPTY_LINE = "empty_line"
LINE_TOO_LONG = "line_too_long"
INVALID_UTF8 = "invalid_utf8"
BAD_JSON = "bad_json"
MISSING_FIELD = "missing_field"


@dataclass(frozen=True)
class RawSchema:
    """The raw columns a model reads, in file order, plus optional trailing columns (labels)."""

    names: tuple[str, ...]
    # One per name: "numeric", "categorical", or "ignored" (in the record, e.g. an IP address,
    # but never read: counted in the field-count check, then skipped).
    types: tuple[str, ...]
    trailing: tuple[str, ...] = ()  # e.g. ("label", "difficulty"): accepted, kept as text
    # Texts that mean "not measured" in a numeric field, and the number the dataset's own files
    # have in their place (Argus leaves jitter empty for a one-packet flow, or prints -nan; the
    # WUSTL CSVs have 0 there). Without them, such a field is rejected. Saved in the feature
    # spec, so the rule travels with the model instead of living in a device's code.
    missing: tuple[str, ...] = ()
    missing_as: float = 0.0

    @classmethod
    def of(cls, names: tuple[str, ...], categorical=(), ignored=(), trailing=(), missing=(),
           missing_as: float = 0.0) -> "RawSchema":
        """A schema from its column names: numeric unless named categorical or ignored."""
        types = tuple("ignored" if n in ignored else "categorical" if n in categorical
                      else "numeric" for n in names)
        return cls(tuple(names), types, tuple(trailing), tuple(missing), float(missing_as))

    @classmethod
    def from_spec(cls, raw: dict) -> "RawSchema":
        cols = raw["columns"]
        missing = raw.get("missing") or {"values": (), "as": 0.0}
        return cls(tuple(c["name"] for c in cols), tuple(c["type"] for c in cols),
                   tuple(raw.get("trailing", ())), tuple(missing["values"]),
                   float(missing["as"]))

    def to_spec(self) -> dict:
        spec = {"format": "csv", "trailing": list(self.trailing),
                "columns": [{"name": n, "type": t} for n, t in zip(self.names, self.types)]}
        if self.missing:
            spec["missing"] = {"values": list(self.missing), "as": self.missing_as}
        return spec

    def reading(self, ignored: tuple[str, ...]) -> "RawSchema":
        """The same layout with more columns ignored (present in the record, never read)."""
        return RawSchema(self.names, tuple("ignored" if n in ignored else t
                                           for n, t in zip(self.names, self.types)),
                         self.trailing, self.missing, self.missing_as)

    @property
    def numeric(self) -> list[str]:
        return [n for n, t in zip(self.names, self.types) if t == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [n for n, t in zip(self.names, self.types) if t == "categorical"]

    @property
    def ignored(self) -> list[str]:
        return [n for n, t in zip(self.names, self.types) if t == "ignored"]


@dataclass(frozen=True)
class Rejected:
    record: int  # 1-based line number in the input
    reason: str
    detail: str


@dataclass
class Records:
    """Good records as columns: float64 arrays for numeric, str arrays for categorical/trailing."""

    columns: dict[str, np.ndarray]
    numbers: np.ndarray  # 1-based line numbers of these records in the input
    trailing: dict[str, np.ndarray] = field(default_factory=dict)
    # The parser's numeric columns side by side (`columns` holds views of it), and their names
    numeric: tuple[np.ndarray, tuple[str, ...]] | None = None
    # parse_lines' keep_fields: (their names, per record a tuple of those fields' raw texts)
    fields: tuple[tuple[str, ...], list[tuple]] | None = None

    def __len__(self) -> int:
        return len(self.numbers)

    def without(self, names: tuple[str, ...]) -> "Records":
        """The same records without these columns (for a schema that ignores them)."""
        numeric = self.numeric
        if numeric is not None:
            keep = [i for i, n in enumerate(numeric[1]) if n not in names]
            numeric = (numeric[0][:, keep], tuple(numeric[1][i] for i in keep))
        columns = {k: v for k, v in self.columns.items() if k not in names}
        if numeric is not None:  # views of the new matrix, as the parser makes them
            columns |= dict(zip(numeric[1], numeric[0].T))
        return Records(columns, self.numbers, self.trailing, numeric, self.fields)

    def take(self, rows: np.ndarray) -> "Records":
        """The records at these positions, in this order."""
        return Records({k: v[rows] for k, v in self.columns.items()}, self.numbers[rows],
                       {k: v[rows] for k, v in self.trailing.items()},
                       None if self.numeric is None else (self.numeric[0][rows], self.numeric[1]),
                       None if self.fields is None else
                       (self.fields[0], [self.fields[1][r] for r in np.asarray(rows).tolist()]))


def parse_lines(lines: Sequence[bytes | str], schema: RawSchema, first_number: int = 1,
                keep_text: tuple[str, ...] = (), keep_fields: tuple[str, ...] = ()
                ) -> tuple[Records, list[Rejected]]:
    """Parse lines into `Records`; every line either becomes a record or a `Rejected`.

    A line is CSV in the schema's column order, or a JSON object keyed by column name (a line
    starting with '{'). `keep_text` names "ignored" columns to keep as text (e.g. addresses
    for an alert), never read as features. `keep_fields` names columns handed back as one
    tuple of raw texts per record (`Records.fields`): for a lookup keyed by several columns
    (the device watch's), tuples of the split line's own strings cost a fraction of arrays."""
    lines = list(lines)
    rows = _clean_rows(lines, schema)
    if rows is not None:  # the common case, checked for the whole batch at once
        numbers = np.arange(first_number, first_number + len(rows), dtype=np.int64)
        return _to_columns(rows, numbers, schema, keep_text, keep_fields)
    n_min, n_max = len(schema.names), len(schema.names) + len(schema.trailing)
    rows, numbers, rejected = [], [], []
    for number, line in enumerate(lines, start=first_number):
        text, problem = _decode(line)
        if not problem and text.lstrip().startswith("{"):
            text, problem = _json_to_csv(text, schema)
        if not problem:
            row = text.split(",") if '"' not in text else next(csv.reader([text]))
            if len(row) < n_min or len(row) > n_max:
                expected = f"{n_min}" if n_min == n_max else f"{n_min} to {n_max}"
                problem = WRONG_FIELD_COUNT, f"expected {expected} fields, got {len(row)}"
        if problem:
            rejected.append(Rejected(number, *problem))
        else:
            rows.append(row + [""] * (n_max - len(row)))  # absent trailing columns: empty
            numbers.append(number)
    records, bad = _to_columns(rows, np.array(numbers, dtype=np.int64), schema, keep_text,
                               keep_fields)
    return records, sorted(rejected + bad, key=lambda r: r.record)


def _clean_rows(lines: list[bytes | str], schema: RawSchema) -> list[list[str]] | None:
    """Split a batch with C-level calls only, if every line is plain ASCII CSV with all the
    schema's fields (no quotes, no JSON, none too long or empty); None otherwise."""
    if not lines or not isinstance(lines[0], bytes) or max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    # Lines from a file keep their newline; lines from the daemon's sources come without one.
    data = b"".join(lines) if lines[0].endswith(b"\n") else b"\n".join(lines)
    if not data.isascii() or b'"' in data or b"{" in data:
        return None
    texts = data.decode("ascii").splitlines()
    if len(texts) != len(lines):  # a line without its newline (not the last) or a bare \r
        return None
    rows = list(map(str.split, texts, repeat(",")))
    widths = set(map(len, rows))
    full = len(schema.names) + len(schema.trailing)
    if widths == {full}:
        return rows
    if widths == {len(schema.names)} and schema.trailing:  # no labels (Argus flows): empty
        pad = [""] * len(schema.trailing)
        return [row + pad for row in rows]
    return None


def _decode(line: bytes | str) -> tuple[str, tuple[str, str] | None]:
    if len(line) > MAX_LINE_BYTES:  # readers keep one byte over the limit, not the whole line
        unit = "bytes" if isinstance(line, bytes) else "characters"
        return "", (LINE_TOO_LONG, f"more than {MAX_LINE_BYTES:,} {unit} (the limit)")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return "", (INVALID_UTF8, f"byte {e.start}: {e.reason}")
    text = line.rstrip("\r\n")
    if not text.strip():
        return "", (EMPTY_LINE, "empty line")
    return text, None


def _json_to_csv(text: str, schema: RawSchema) -> tuple[str, tuple[str, str] | None]:
    """A JSON-lines record as the CSV row it stands for (missing trailing columns are empty)."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        return "", (BAD_JSON, str(e)[:80])
    if not isinstance(obj, dict):
        return "", (BAD_JSON, f"a JSON {type(obj).__name__}, not an object")
    missing = [n for n in schema.names if n not in obj]
    if missing:
        return "", (MISSING_FIELD, f"no {', '.join(missing[:3])}" + (" …" if missing[3:] else ""))
    values = [obj[n] for n in schema.names] + [obj.get(n, "") for n in schema.trailing]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        return "", (NON_NUMERIC, "a value is a JSON list, object, boolean or null")
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue(), None


@dataclass(frozen=True)
class _Layout:
    """Which fields of a row are read as numbers and which as text (worked out once)."""

    num_idx: tuple[int, ...]
    num_names: tuple[str, ...]
    text: tuple[tuple[str, int], ...]  # (name, field index): categorical, kept, trailing
    pick_numbers: Callable[[list[str]], tuple[str, ...]]
    pick_fields: Callable[[list[str]], tuple[str, ...]] | None  # keep_fields, as one tuple
    floats: "_FloatMemo"  # text -> number, with the schema's missing values already in it


@lru_cache(maxsize=16)
def _layout(schema: RawSchema, keep_text: tuple[str, ...],
            keep_fields: tuple[str, ...] = ()) -> _Layout:
    num_idx = tuple(i for i, t in enumerate(schema.types) if t == "numeric")
    text = tuple((n, i) for i, (n, t) in enumerate(zip(schema.names, schema.types))
                 if t == "categorical" or (t == "ignored" and n in keep_text))
    text += tuple((n, len(schema.names) + k) for k, n in enumerate(schema.trailing))
    pick = (itemgetter(*num_idx) if len(num_idx) > 1
            else (lambda row: (row[num_idx[0]],)) if num_idx else (lambda row: ()))
    floats = _FloatMemo(dict.fromkeys(schema.missing, schema.missing_as)) if schema.missing \
        else _FLOATS
    fields = [schema.names.index(name) for name in keep_fields]
    pick_fields = (itemgetter(*fields) if len(fields) > 1
                   else (lambda row: (row[fields[0]],)) if fields else None)
    return _Layout(num_idx, tuple(schema.names[i] for i in num_idx), text, pick, pick_fields,
                   floats)


def _to_columns(rows: list[list[str]], numbers: np.ndarray, schema: RawSchema,
                keep_text: tuple[str, ...] = (), keep_fields: tuple[str, ...] = ()
                ) -> tuple[Records, list[Rejected]]:
    """Split rows to columns; "ignored" columns are never loaded, so a value there can be
    anything. When a batch holds a value that is not a number, its rows are parsed one by one
    to find and reject each bad one."""
    layout = _layout(schema, keep_text, keep_fields)
    bad: dict[int, Rejected] = {}
    values = _fast_numbers(rows, layout)
    if values is None:
        values = _parse_rows(rows, layout, schema, numbers, bad)
    if not np.isfinite(values).all():
        for r in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
            if r not in bad:
                j = int(np.flatnonzero(~np.isfinite(values[r]))[0])
                bad[r] = Rejected(int(numbers[r]), NOT_FINITE, f"column {layout.num_idx[j] + 1} "
                                  f"({layout.num_names[j]}): {values[r, j]}")
    if bad:
        keep = [r for r in range(len(rows)) if r not in bad]
        rows, values, numbers = [rows[r] for r in keep], values[keep], numbers[keep]
    columns = dict(zip(layout.num_names, values.T))  # views of the matrix
    for name, i in layout.text:
        columns[name] = np.array(list(map(str.strip, map(itemgetter(i), rows))), dtype=str)
    trailing = {name: columns.pop(name) for name in schema.trailing}
    fields = None if layout.pick_fields is None else \
        (keep_fields, list(map(layout.pick_fields, rows)))
    return Records(columns, numbers, trailing, (values, layout.num_names), fields), \
        list(bad.values())


class _FloatMemo(dict):
    """float() of a field, remembered: values repeat heavily in flow records (0, 0.00, 1.00, …),
    so most fields cost one dict lookup instead of a float() call. numpy has no faster parser
    (loadtxt and fromstring cost more per value than float() here) and pandas is not on the
    device. Bounded, so a stream of unique values cannot grow memory."""

    LIMIT = 8192

    def __missing__(self, text: str) -> float:
        value = float(text)  # a ValueError sends the batch to the row-by-row path
        if len(self) < self.LIMIT:
            self[text] = value
        return value


_FLOATS = _FloatMemo()


def _fast_numbers(rows: list[list[str]], layout: _Layout) -> np.ndarray | None:
    """All numeric fields of all rows, or None if any of them is not a number."""
    n = len(layout.num_idx)
    if not rows or not n:
        return np.empty((len(rows), n))
    try:
        values = list(map(layout.floats.__getitem__,
                          chain.from_iterable(map(layout.pick_numbers, rows))))
    except ValueError:
        return None
    return np.array(values, dtype=np.float64).reshape(len(rows), n)


def _parse_rows(rows: list[list[str]], layout: _Layout, schema: RawSchema,
                numbers: np.ndarray, bad: dict[int, Rejected]) -> np.ndarray:
    """The slow path, for a batch that holds a bad value: find and reject each bad row."""
    values = np.zeros((len(rows), len(layout.num_idx)))
    for r, row in enumerate(rows):
        for j, i in enumerate(layout.num_idx):
            try:
                values[r, j] = layout.floats[row[i]]
            except ValueError:
                bad[r] = Rejected(int(numbers[r]), NON_NUMERIC,
                                  f"column {i + 1} ({schema.names[i]}): {row[i][:40]!r}")
                break
    return values


def open_input(path: str) -> BinaryIO:
    """Open a record source as bytes: a file (plain or .gz, by magic number) or '-' for stdin."""
    if path == "-":
        return sys.stdin.buffer
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


class TruncatedInput(Exception):
    """The records file cannot be read to its end: a truncated or corrupt .gz. The lines
    before the damage were all handed out first."""


def read_chunks(stream: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """Yield lists of up to `size` raw lines; a line longer than the limit is not kept whole.
    A damaged .gz yields the lines read so far, then raises TruncatedInput."""
    chunk: list[bytes] = []
    while True:
        try:
            line = stream.readline(MAX_LINE_BYTES + 1)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            if chunk:
                yield chunk
            raise TruncatedInput(f"truncated or corrupt ({e})") from None
        if not line:
            break
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            _discard_rest_of_line(stream)  # what we kept is over the limit: rejected as too long
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _discard_rest_of_line(stream) -> None:
    while True:
        part = stream.readline(MAX_LINE_BYTES)
        if not part or part.endswith(b"\n"):
            return
