"""`edge-ids classify`: classify a file (or stdin) of raw records, one JSON line per record.

Bad records do not stop the run: each is counted, the first `name_rejects` are named on stderr,
and the good records around them are all classified. A damaged .gz ends the run after every
record before the damage is written, with the reason in the summary.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from .classifier import Classifier
from .records import TruncatedInput, parse_lines, read_chunks

NAME_FIRST_REJECTS = 10


@dataclass
class ClassifySummary:
    classified: int = 0
    rejected: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)
    by_class: Counter = field(default_factory=Counter)
    named: int = 0  # rejected records named on stderr
    lines: int = 0  # lines read
    input_error: str | None = None  # why the input ended early (a damaged .gz)


def classify_stream(classifier: Classifier, stream, out: TextIO, err: TextIO,
                    chunk_size: int = 1024,
                    name_rejects: int = NAME_FIRST_REJECTS) -> ClassifySummary:
    """Read raw lines from a binary stream, write {"record", "class", "score"} JSON lines."""
    names = classifier.bundle.class_names
    summary = ClassifySummary()
    number = 1
    for chunk in _chunks_up_to_damage(stream, chunk_size, summary):
        records, rejected = parse_lines(chunk, classifier.schema, first_number=number)
        number += len(chunk)
        for r in rejected:
            if summary.named < name_rejects:
                err.write(f"record {r.record} rejected ({r.reason}): {r.detail}\n")
                summary.named += 1
            summary.rejected[r.reason] += 1
        if not len(records):
            continue
        predictions = classifier.classify(records)
        summary.unknown.update(predictions.unknown)
        lines = []
        for n, c, s in zip(records.numbers, predictions.classes, predictions.scores):
            lines.append(json.dumps({"record": int(n), "class": names[c],
                                     "score": round(float(s), 4)}))
            summary.by_class[names[c]] += 1
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
