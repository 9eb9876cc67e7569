"""The device's record parser: every kind of bad line is rejected with a reason, and every good
line around it is kept, with its line number."""
from __future__ import annotations

import io

import numpy as np
import pytest

from edge_ids.edge_runtime.ingest import records as r
from edge_ids.train.datasets import nsl_kdd

SCHEMA = nsl_kdd.SCHEMA


@pytest.fixture(scope="module")
def good(kdd_test_lines):
    return kdd_test_lines[:4]


BAD_LINES = {
    r.WRONG_FIELD_COUNT: b"0,tcp,http,SF,1,2,3\n",
    r.NON_NUMERIC: None,  # built from a real line below
    r.NOT_FINITE: None,
    r.EMPTY_LINE: b"\n",
    r.LINE_TOO_LONG: b"9" * (1024 * 1024) + b"\n",
    r.INVALID_UTF8: None,
}


def _variant(line: bytes, column: int, value: bytes) -> bytes:
    fields = line.rstrip(b"\n").split(b",")
    fields[column] = value
    return b",".join(fields) + b"\n"


@pytest.mark.parametrize("reason", list(BAD_LINES))
def test_bad_line_is_rejected_and_neighbours_kept(good, reason):
    bad = BAD_LINES[reason] or {
        r.NON_NUMERIC: _variant(good[0], 4, b"12abc"),
        r.NOT_FINITE: _variant(good[0], 5, b"nan"),
        r.INVALID_UTF8: _variant(good[0], 2, b"\xff\xfehttp"),
    }[reason]
    records, rejected = r.parse_lines([good[0], good[1], bad, good[2], good[3]], SCHEMA)
    assert [x.reason for x in rejected] == [reason]
    assert rejected[0].record == 3
    if reason == r.LINE_TOO_LONG:  # not the 65,537 bytes a reader keeps of it
        assert rejected[0].detail == "more than 65,536 bytes (the limit)"
    assert records.numbers.tolist() == [1, 2, 4, 5]
    assert records.columns["service"].tolist() == [l.split(b",")[2].decode() for l in good]


def test_infinity_and_negative_infinity_are_rejected(good):
    lines = [_variant(good[0], 4, b"inf"), _variant(good[1], 22, b"-inf"), good[2]]
    records, rejected = r.parse_lines(lines, SCHEMA)
    assert [(x.record, x.reason) for x in rejected] == [(1, r.NOT_FINITE), (2, r.NOT_FINITE)]
    assert "src_bytes" in rejected[0].detail and "count" in rejected[1].detail
    assert len(records) == 1


def test_41_and_43_columns_give_the_same_features(good):
    short = [b",".join(l.split(b",")[:41]) + b"\n" for l in good]
    a, _ = r.parse_lines(good, SCHEMA)
    b, rejected = r.parse_lines(short, SCHEMA)
    assert not rejected
    for column in nsl_kdd.FEATURES:
        np.testing.assert_array_equal(a.columns[column], b.columns[column])
    assert a.trailing["label"].tolist() == ["neptune", "neptune", "normal", "saint"]
    assert b.trailing["label"].tolist() == [""] * 4


def test_quoted_fields_and_crlf(good):
    fields = good[2].rstrip(b"\n").split(b",")
    fields[2] = b'"http"'
    records, rejected = r.parse_lines([b",".join(fields) + b"\r\n"], SCHEMA)
    assert not rejected and records.columns["service"].tolist() == ["http"]


def test_numbers_continue_across_chunks(good):
    records, rejected = r.parse_lines([good[0], b"x\n"], SCHEMA, first_number=101)
    assert records.numbers.tolist() == [101] and rejected[0].record == 102


def test_read_chunks_cuts_a_huge_line_without_losing_the_next(good):
    stream = io.BytesIO(good[0] + b"1" * (3 * r.MAX_LINE_BYTES) + b"\n" + good[1] + good[2][:-1])
    chunks = list(r.read_chunks(stream, size=2))
    lines = [l for c in chunks for l in c]
    assert [len(c) for c in chunks] == [2, 2]
    records, rejected = r.parse_lines(lines, SCHEMA)
    assert [x.reason for x in rejected] == [r.LINE_TOO_LONG]
    assert rejected[0].detail == "more than 65,536 bytes (the limit)"  # it had 196,608
    assert records.numbers.tolist() == [1, 3, 4]  # the last line had no newline: still read


def test_open_input_reads_gzip_by_magic_number(tmp_path, good):
    import gzip
    path = tmp_path / "records.csv"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(b"".join(good)))
    with r.open_input(str(path)) as f:
        assert f.read().splitlines(keepends=True) == good
