"""Benign flow records for `edge-ids learn`, in the raw layout of the bundle to be written.

From pcap files, through the same argus | ra path that `edge-ids capture` reads live traffic
with (edge_runtime/ingest/argus.py); or from flow files, such as those `capture --record` writes on a
device: CSV whose first line names the columns, so that they are matched by name to the layout
(a file without that header must already be in the layout).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from .edge_runtime.ingest.records import RawSchema, TruncatedInput, open_input


class FlowError(ValueError):
    """A flow source cannot be read as the layout needs; the message says why."""


def default_flow_schema() -> RawSchema:
    """The layout of an anomaly-only flow bundle: the network-only WUSTL-EHMS columns (what
    `capture` gives, with the patient sensors ignored, and the flows' times and protocol), so
    that a wustl-ehms-net classifier and a learned anomaly model read the same records and can
    form a hybrid."""
    from .train.datasets.wustl_ehms import network_schema

    return network_schema()


def read_pcaps(pcaps, schema: RawSchema, flow_report_seconds: int,
               echo: Callable[[str], None]) -> list[bytes]:
    from .edge_runtime.ingest.argus import ArgusSource

    lines: list[bytes] = []
    for pcap in pcaps:
        source = ArgusSource(schema, pcap=str(pcap), status_seconds=flow_report_seconds)
        found: list[bytes] = []
        try:
            for batch in source.batches(threading.Event()):
                found += batch
        except TruncatedInput as e:
            raise FlowError(f"{e}, {len(found):,} flows: learn from whole captures only (a "
                            f"learning period with its end cut off is not the period you "
                            f"meant). Nothing was written.") from None
        finally:
            source.close()
        echo(f"      {pcap}: {len(found):,} flows (argus | ra)")
        lines += found
    return lines


def read_flow_files(paths, schema: RawSchema, echo: Callable[[str], None]) -> list[bytes]:
    lines: list[bytes] = []
    for path in paths:
        try:
            with open_input(str(path)) as stream:
                found = stream.read().splitlines()
        except OSError as e:
            raise FlowError(f"{path}: cannot read ({e})") from None
        found, skipped = to_layout(found, schema, Path(path))
        echo(f"      {path}: {len(found):,} flow records"
             + (f" ({skipped:,} lines without the header's field count skipped)" if skipped
                else ""))
        lines += found
    return lines


def to_layout(lines: list[bytes], schema: RawSchema, path: Path) -> tuple[list[bytes], int]:
    """(lines in the schema's column order, lines skipped): a header line maps the file's
    columns by name; a line without the header's field count is skipped."""
    if not lines:
        return [], 0
    header = lines[0].decode("utf-8", "replace").strip().split(",")
    if not set(header) & set(schema.names):
        return lines, 0  # no header: already in the layout (the parser checks field counts)
    index = {name.strip(): i for i, name in enumerate(header)}
    absent = [n for n, t in zip(schema.names, schema.types) if n not in index and t != "ignored"]
    if absent:
        raise FlowError(f"{path}: the file has no column {', '.join(absent[:5])}"
                        f"{' …' if absent[5:] else ''}, which the model reads; record the flows "
                        f"with the same layout (capture --record with this bundle)")
    picks = [index.get(name) for name in schema.names]
    width = len(header)
    out = []
    for line in lines[1:]:
        fields = line.split(b",")
        if len(fields) == width:
            out.append(b",".join(fields[i] if i is not None else b"" for i in picks))
    return out, len(lines) - 1 - len(out)
