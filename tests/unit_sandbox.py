"""Run a command under two parts of a systemd unit's sandbox without a running systemd: its
user and ambient capabilities (setpriv), and its SystemCallFilter= (a real seccomp filter,
built from the unit's own lines and `systemd-analyze syscall-filter`'s groups, failing other
calls with EPERM as SystemCallErrorNumber=EPERM does). This machine has no running systemd, so
this is how a test shows that argus, started by the daemon, can work inside the capture unit.

    python3 unit_sandbox.py NR,NR,... -- argv...   (installs the allow-list, then execs argv)
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

HEADERS = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"}


def missing() -> str | None:
    """What this machine lacks to build the sandbox (a skip reason that names the package), or
    None. .ci/run installs all of it."""
    header = HEADERS.get(platform.machine())
    if os.geteuid() != 0:
        return "needs root (the sandbox drops to the unit's user)"
    if not shutil.which("setpriv"):
        return "needs setpriv (apt-get install util-linux)"
    if header is None:
        return f"no system-call table known for {platform.machine()}"
    if not Path(header).is_file():
        return f"needs {header} (apt-get install linux-libc-dev)"
    if not shutil.which("systemd-analyze"):
        return "needs systemd-analyze (apt-get install systemd)"
    return unreadable_python()


def unreadable_python(uid: int = 65534) -> str | None:
    """The unit's user must be able to run this Python and import edge-ids: a venv in a folder
    it cannot read (one under /root, mode 700) fails inside the sandbox with PermissionError.
    Try it as that user, and say what to do instead of failing later."""
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c",
                           "import edge_ids.edge_runtime"], capture_output=True, text=True,
                          cwd="/")
    if done.returncode == 0:
        return None
    said = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return (f"the sandbox runs as uid {uid}, who cannot run {sys.executable} with edge-ids "
            f"({said}): put the venv and the repository where any user may read them (not under "
            f"a mode-700 /root), or make them readable (chmod o+rX)")


@lru_cache(maxsize=None)
def syscall_numbers() -> dict[str, int]:
    text = Path(HEADERS[platform.machine()]).read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}


@lru_cache(maxsize=None)
def expand(name: str) -> frozenset[str]:
    """A syscall group of systemd, its nested groups expanded; a plain name stands for itself."""
    if not name.startswith("@"):
        return frozenset([name])
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                         text=True, check=True).stdout.splitlines()[1:]
    names = set()
    for line in (line.strip() for line in out):
        if line and not line.startswith("#"):
            names |= expand(line)
    return frozenset(names)


def allowed_numbers(unit_text: str) -> list[int]:
    """The syscalls the unit's SystemCallFilter= lines allow, in order: the first allow-list
    sets the list, a `~` line takes its groups away, a later plain line adds back."""
    # systemd.exec(5): these are allowed implicitly, whatever the list
    allowed = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
    for line in re.findall(r"^SystemCallFilter=(.+)$", unit_text, re.M):
        deny = line.startswith("~")
        names = set().union(*(expand(n) for n in line.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    numbers = syscall_numbers()
    return sorted(numbers[n] for n in allowed if n in numbers)


def sandboxed(argv: list[str], unit_text: str, uid: int = 65534) -> list[str]:
    """argv as the unit would run it: as `uid`, with the unit's ambient capabilities, under its
    system-call filter."""
    caps = re.search(r"^AmbientCapabilities=(.*)$", unit_text, re.M).group(1).split()
    names = ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               f"--inh-caps=-all{',' + names if names else ''}",
               f"--ambient-caps={names or '-all'}", f"--bounding-set=-all"
               f"{',' + names if names else ''}"]
    numbers = ",".join(map(str, allowed_numbers(unit_text)))
    return [*setpriv, sys.executable, __file__, numbers, "--", *argv]


def _install_filter(allowed: list[int]) -> None:
    """seccomp-bpf: allow these syscall numbers, EPERM for the rest."""
    ld_nr, jeq, ret = 0x20, 0x15, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    program = [(ld_nr, 0, 0, 0)]
    for nr in allowed:  # a match runs the "allow" right after it; else skip it
        program += [(jeq, 0, 1, nr), (ret, 0, 0, allow)]
    program.append((ret, 0, 0, eperm))
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(
            Program(len(program), code)), 0, 0):  # NO_NEW_PRIVS, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


if __name__ == "__main__":
    separator = sys.argv.index("--")
    argv = sys.argv[separator + 1:]
    _install_filter([int(n) for n in sys.argv[1].split(",") if n])
    if _is_python_script(argv[0]):
        # A console script (edge-ids) runs in this interpreter: exec'ing the venv's python again
        # would need a path that this user may not search (the interpreter lives under /root
        # here), which is no question of the unit's sandbox.
        import runpy

        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    else:
        os.execvp(argv[0], argv)
