"""Run inside a unit's sandbox by tests/test_systemd_unit.py: where may it write, who is it, which
processes can it see, and which addresses can it reach. Prints one JSON line.

    python3 unit_probe.py HOST PORT                  (everything)
    python3 unit_probe.py HOST PORT --network-only   (the control, outside any sandbox)
"""
import json
import os
import socket
import sys

PLACES = ("/etc", "/usr", "/opt/edge-ids", "/root", "/home", "/srv", "/var", "/var/lib",
          "/var/log", "/run", "/tmp", "/var/tmp", "/dev/shm", "/var/lib/edge-ids",
          "/var/log/edge-ids", "/run/edge-ids")


def can_write(directory: str):
    """True, or why not (the error's text)."""
    path = os.path.join(directory, f"unit-probe-{os.getpid()}")
    try:
        with open(path, "x") as f:
            f.write("probe")
        os.unlink(path)
        return True
    except OSError as e:
        return e.strerror


def reach(host: str, port: int) -> str:
    with socket.socket() as s:
        s.settimeout(3)
        try:
            s.connect((host, port))
            return "connected"
        except OSError as e:
            return "timed out" if isinstance(e, TimeoutError) else e.strerror


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    report = {"network": reach(host, port)}
    if "--network-only" not in sys.argv:
        with socket.socket() as own:
            own.bind(("127.0.0.1", 0))
            own.listen(1)
            report["loopback"] = reach(*own.getsockname())
        marker = f"unit-probe-marker-{os.getpid()}"
        with open(f"/tmp/{marker}", "w") as f:  # left behind: the test looks for it outside
            f.write("probe")
        report |= {"uid": os.getuid(), "marker": marker,
                   "writable": {place: can_write(place) for place in PLACES},
                   "other_pids_visible": sorted(int(p) for p in os.listdir("/proc")
                                                if p.isdigit() and int(p) != os.getpid())}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
