"""`edge-ids classify`: classify a file (or stdin) of raw records, one JSON line per record.

Bad records do not stop the run: each is reported on stderr (the first few in full, then only
counted) and the good records around it are all classified.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from .classifier import Classifier
from .records import parse_lines, read_chunks

REPORT_FIRST_REJECTS = 10


@dataclass
class ClassifySummary:
    classified: int = 0
    rejected: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)
    by_class: Counter = field(default_factory=Counter)


def classify_stream(classifier: Classifier, stream, out: TextIO, err: TextIO,
                    chunk_size: int = 1024) -> ClassifySummary:
    """Read raw lines from a binary stream, write {"record", "class", "score"} JSON lines."""
    names = classifier.bundle.class_names
    summary = ClassifySummary()
    number = 1
    for chunk in read_chunks(stream, chunk_size):
        records, rejected = parse_lines(chunk, classifier.schema, first_number=number)
        number += len(chunk)
        for r in rejected:
            if sum(summary.rejected.values()) < REPORT_FIRST_REJECTS:
                err.write(f"record {r.record} rejected ({r.reason}): {r.detail}\n")
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
