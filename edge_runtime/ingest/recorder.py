"""Record the flow lines of a learning period to files of bounded size, for `edge-ids learn`.

    FILE      the newest lines          every file starts with a header line naming the
    FILE.1    the ones before           columns, so that `learn` matches them by name to
    ...                                 whatever layout it learns in
    FILE.K    the oldest kept (older ones are deleted)

Written by hand rather than with logging's RotatingFileHandler: that one formats message by
message and cannot begin each new file with a header. A batch of lines is one write(2); a file
may overshoot its limit by one batch.
"""
from __future__ import annotations

import os
from pathlib import Path

from .records import RawSchema

DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_KEEP = 4


class FlowRecorder:
    def __init__(self, path: str | Path, columns: tuple[str, ...],
                 max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP):
        if max_bytes < 1024 or keep < 0:
            raise ValueError("a recording needs at least 1 KiB per file and keep >= 0")
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self.header = (",".join(columns) + "\n").encode()
        self.lines = 0
        self._fd = None
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            self._size = os.write(self._fd, self.header)

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        if self._size > len(self.header) and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._size += os.write(self._fd, data)
        self.lines += len(lines)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            self._name(self.keep).unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                if self._name(i).exists():
                    os.replace(self._name(i), self._name(i + 1))
            os.replace(self.path, self._name(1))
        self._open()

    def _name(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def recording_schema() -> RawSchema:
    """What `capture --record` without a bundle records: every column Argus can print (a
    superset of any flow bundle's layout), all as text."""
    from .argus import RA_FIELDS

    return RawSchema.of(tuple(RA_FIELDS), ignored=tuple(RA_FIELDS))


def record_only(input_spec: str, path: str, max_bytes: int = DEFAULT_MAX_BYTES,
                keep: int = DEFAULT_KEEP, flow_report_seconds: int = 5, notifier=None,
                log=None) -> int:
    """A learning period on a device with no bundle yet: Argus flows straight to the
    recording, nothing classified. Stops at the end of a pcap, or on SIGTERM / SIGINT."""
    import signal
    import threading

    from .inputs import open_source
    from .records import TruncatedInput

    stop = threading.Event()
    source = open_source(input_spec, schema=recording_schema(),
                         flow_report_seconds=flow_report_seconds)
    recorder = FlowRecorder(path, recording_schema().names, max_bytes, keep)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM,
                                                                     signal.SIGINT)}
    try:
        if notifier is not None:
            notifier.ready(f"recording flows to {path}")
        for lines in source.batches(stop):
            recorder.write(lines)
    except TruncatedInput as e:  # what was read before the cut is kept, and said
        raise TruncatedInput(f"{e}; the {recorder.lines:,} flows before it were recorded to "
                             f"{path}") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        source.close()
        recorder.close()
    if log is not None:
        log(f"recorded {recorder.lines:,} flows to {path}")
    return 0
