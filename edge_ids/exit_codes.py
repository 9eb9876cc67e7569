"""One table of exit statuses for every `edge-ids` command, so that a script or a systemd unit
can tell "fix the command line" from "fix the file" from "the device or the network failed".

A command raises `Failed` or `BadInput` (click prints "Error: ..." and exits with the code),
leaves usage errors to click (which exits 2), and names its extra codes in its epilog:

    @click.command(epilog=exit_codes.epilog(exit_codes.REJECTED))

The README's "Exit status" section and `edge-ids --help` show TABLE; tests/test_exit_codes.py
runs every command's failure modes against it.
"""
from __future__ import annotations

import click

OK = 0
FAILED = 1
USAGE = 2  # click's own code for usage errors
REJECTED = 3
GATE_REFUSED = 4
BAD_INPUT = 5

TABLE = {
    OK: "done (every record classified)",
    FAILED: "failed for a reason outside the files given: ssh or the device, a health "
            "check (rolled back), a tool it runs, the disk",
    USAGE: "the command line is wrong: an unknown option or value, a path or device "
           "profile that does not exist, options that exclude each other",
    REJECTED: "done, but some records were rejected (named on stderr); every good record "
              "was classified",
    GATE_REFUSED: "compress: the model lost more than --max-f1-drop; nothing written",
    BAD_INPUT: "a file given is unusable: a bundle that fails its checks, a dataset folder "
               "without the files, a records file or capture that is truncated or corrupt, a "
               "file that is no capture",
}
SHORT = {OK: "done", FAILED: "failed", USAGE: "usage error", REJECTED: "records rejected",
         GATE_REFUSED: "gate refused", BAD_INPUT: "bad input file"}
COMMON = (OK, FAILED, USAGE, BAD_INPUT)


def epilog(*extra: int) -> str:
    """The last paragraph of a command's --help: the codes it can exit with."""
    codes = sorted(set(COMMON) | set(extra))
    return ("Exit status: " + ", ".join(f"{c} {SHORT[c]}" for c in codes)
            + " (the table: edge-ids --help).")


def table_text(indent: str = "  ") -> str:
    """TABLE for `edge-ids --help`, each meaning wrapped under its code."""
    import textwrap

    lines = []
    for code, meaning in TABLE.items():
        lines += textwrap.wrap(meaning, 72, initial_indent=f"{indent}{code}  ",
                               subsequent_indent=indent + "   ")
    return "\n".join(lines)


class Failed(click.ClickException):
    exit_code = FAILED


class BadInput(click.ClickException):
    exit_code = BAD_INPUT
