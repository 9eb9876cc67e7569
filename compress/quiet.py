"""Silence TensorFlow's converter chatter (C++ log lines on fd 2, 'Saved artifact' on fd 1),
but show all of it if the conversion fails."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_output():
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as log:
        try:
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            yield
        except BaseException:
            _restore(saved)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            _restore(saved)


def _restore(saved: dict[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]
