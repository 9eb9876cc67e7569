"""`edge-ids classify`: classify a file (or stdin) of raw records, one JSON line per record:

    {"record": 17, "verdict": "DoS", "class": "DoS", "score": 0.9961}            a classifier
    {"record": 18, "verdict": "Unknown", "class": "Normal", "score": 0.97,
     "anomaly_score": 0.0213}                                                   a hybrid
    {"record": 19, "verdict": "Normal", "anomaly_score": 0.0008}                anomaly only

Bad records do not stop the run: each is counted, the first `name_rejects` are named on stderr,
and the good records around them are all classified. A damaged .gz ends the run after every
record before the damage is written, with the reason in the summary.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from .detector import Detector
from ..ingest.records import TruncatedInput, parse_lines, read_chunks

NAME_FIRST_REJECTS = 10


@dataclass
class ClassifySummary:
    classified: int = 0
    rejected: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)
    by_class: Counter = field(default_factory=Counter)  # by verdict
    named: int = 0  # rejected records named on stderr
    lines: int = 0  # lines read
    input_error: str | None = None  # why the input ended early (a damaged .gz)


def classify_stream(detector: Detector, stream, out: TextIO, err: TextIO,
                    chunk_size: int = 1024,
                    name_rejects: int = NAME_FIRST_REJECTS) -> ClassifySummary:
    """Read raw lines from a binary stream, write one JSON line per good record."""
    summary = ClassifySummary()
    number = 1
    for chunk in _chunks_up_to_damage(stream, chunk_size, summary):
        records, rejected = parse_lines(chunk, detector.schema, first_number=number)
        number += len(chunk)
        for r in rejected:
            if summary.named < name_rejects:
                err.write(f"record {r.record} rejected ({r.reason}): {r.detail}\n")
                summary.named += 1
            summary.rejected[r.reason] += 1
        if not len(records):
            continue
        verdicts = detector.detect(records)
        summary.unknown.update(verdicts.unknown)
        lines = output_lines(detector, records.numbers, verdicts)
        summary.by_class.update(detector.verdict_names[v] for v in verdicts.verdicts.tolist())
        out.write("\n".join(lines) + "\n")
        summary.classified += len(records)
    return summary


def _chunks_up_to_damage(stream, chunk_size: int, summary: ClassifySummary):
    """read_chunks, ending quietly at a damaged .gz with the reason in the summary."""
    try:
        for chunk in read_chunks(stream, chunk_size):
            summary.lines += len(chunk)
            yield chunk
    except TruncatedInput as e:
        summary.input_error = f"{e}; it ends after line {summary.lines:,}"


def output_lines(detector: Detector, numbers, verdicts) -> list[str]:
    """One JSON object per record with what the bundle's channels said."""
    columns = {"record": numbers.tolist(),
               "verdict": [detector.verdict_names[v] for v in verdicts.verdicts.tolist()]}
    if verdicts.classes is not None:
        columns["class"] = [detector.class_names[c] for c in verdicts.classes.tolist()]
        columns["score"] = [round(s, 4) for s in verdicts.scores.tolist()]
    if verdicts.anomaly_scores is not None:
        columns["anomaly_score"] = [float(f"{s:.6g}") for s in verdicts.anomaly_scores.tolist()]
    keys = list(columns)
    return [json.dumps(dict(zip(keys, row))) for row in zip(*columns.values())]
