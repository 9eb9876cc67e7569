"""`edge-ids site`: what the daemon learned about the site's devices (from its state directory),
and the operator's word to it: accept an incident, mute a device for a while, forget one, put
one back on probation, undo a decision. Device side: standard library and click only.

A decision is checked against the state file, then left as a request in STATE/requests/ for the
running daemon, which takes it between batches (within a second), writes an audit line and
answers; with no daemon running it waits there for the next start. The state directory belongs
to the daemon's user: run these as root (sudo), which writes the request as that user.
"""
from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import time
import uuid
from pathlib import Path

import click

from . import exit_codes
from .exit_codes import BadInput, Failed

DEFAULT_STATE_DIR = "/var/lib/edge-ids"
WAIT_SECONDS = 10.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_MUTE_SECONDS = 366 * 86400  # (the daemon refuses longer: operator_word.py)


def state_dir_option(command):
    return click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
                        type=click.Path(exists=True, file_okay=False, path_type=Path),
                        metavar="DIR", help="The daemon's --state-dir.")(command)


@click.group(epilog=exit_codes.epilog())
def site():
    """The site's devices as the daemon learned them, and the operator's decisions.

    \b
      edge-ids site list                  devices: known, probation, learned
      edge-ids site accept 12             incident 12 is expected: its peers
                                          and services become its device's
      edge-ids site mute KEY --for 7d     no incident or push for 7 days
      edge-ids site unmute KEY
      edge-ids site forget KEY            new again if it comes back
      edge-ids site probation KEY         learn KEY's normal again here
      edge-ids site undo 3                undo decision 3

    KEY is a device's key as `site list` shows it (its MAC, or its address). Run as root: the
    state directory belongs to the daemon's user.
    """


def read_state(state_dir: Path, fresh: bool = True) -> dict:
    """The state file (exit 5 if it is damaged, 2 if there is none yet); with `fresh`, a
    running daemon writes it first."""
    if fresh and _daemon_running(state_dir):
        _ask(state_dir, {"action": "save"}, WAIT_SECONDS)
    path = state_dir / "state.json.gz"
    if not path.is_file():
        raise click.UsageError(f"{state_dir} holds no state yet (no daemon has run with "
                               f"--state-dir {state_dir}, or it has not saved yet)")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except PermissionError:
        raise click.UsageError(f"{path}: permission denied (run as root: the state belongs "
                               f"to the daemon's user)") from None
    except (OSError, EOFError, ValueError) as e:
        raise BadInput(f"{path} cannot be read ({e}); the daemon sets such a state aside "
                       f"when it starts") from None


@site.command("list", epilog=exit_codes.epilog())
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: devices, open "
              "incidents, decisions.")
def list_(state_dir, as_json):
    """The devices the daemon remembers, their normal and last incident."""
    state = read_state(state_dir)
    devices = sorted(state["devices"], key=lambda d: -d["last_seen"])
    opened = [{"id": d["episode"]["incident"], "device": d["key"],
               "opened": d["episode"]["opened"], "peers": d["episode"]["peers"],
               "services": d["episode"]["ports"]}
              for d in devices if d["episode"] and d["episode"]["incident"] is not None]
    last = {key: i for i, key, *_ in state.get("recent", [])}
    if as_json:
        click.echo(json.dumps({"devices": [_summary(d, last) for d in devices],
                               "open_incidents": opened,
                               "decisions": state.get("decisions", [])}, indent=1))
        return
    click.echo(f"{len(devices)} devices (state of {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(state['clock'] or 0))} UTC, flow time)")
    rows = [("DEVICE", "IP", "STAGE", "THRESHOLD", "SERVICES", "FLOWS", "LAST SEEN",
             "LAST INCIDENT", "MUTED UNTIL")]
    for d in devices:
        s = _summary(d, last)
        rows.append((s["key"], s["ip"] or "-", s["stage"],
                     "site's" if s["threshold_ratio"] is None else
                     f"{s['threshold_ratio']:.3g}x site's",
                     "-" if s["services"] is None else
                     f"{len(s['services'])}: {' '.join(s['services'][:4])}"
                     + (" ..." if len(s["services"]) > 4 else ""),
                     str(s["flows"]), _when(s["last_seen"]),
                     "-" if s["last_incident"] is None else str(s["last_incident"]),
                     "-" if s["muted_until"] is None else _when(s["muted_until"])))
    _table(rows)
    if opened:
        click.echo("\nopen incidents:")
        for i in opened:
            click.echo(f"  {i['id']}  {i['device']}  opened {_when(i['opened'])}  peers "
                       f"{', '.join(i['peers'])}  services {', '.join(i['services'])}")
    decisions = state.get("decisions", [])[-10:]
    if decisions:
        click.echo("\nlast decisions:")
        for d in decisions:
            click.echo(f"  {d['id']}  {_when(d['time'])}  {d['action']} {d['target']}"
                       f"{'  (undone)' if d['undone'] else ''}  by {d['by']}")


def _summary(device: dict, last: dict) -> dict:
    normal = device["normal"]
    episode = device["episode"]
    incident = episode["incident"] if episode and episode["incident"] is not None else \
        max((i for i, key in last.items() if key == device["key"]), default=None)
    return {"key": device["key"], "ip": device["ip"], "new": device["new"],
            "stage": normal["stage"], "threshold_ratio": normal["ratio"],
            "services": normal["services"], "flows": device["flows"],
            "first_seen": device["first_seen"], "last_seen": device["last_seen"],
            "last_incident": incident, "muted_until": normal["muted"],
            "accepted_peers": normal["peers"]}


def _when(t) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def _table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d{1,9}(?:\.\d{1,6})?)\s*([smhdw]?)\s*", text or "")
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"] if match else 0.0
    if not 0 < seconds <= MAX_MUTE_SECONDS:
        raise click.BadParameter(f"{text!r}: give a duration of at most a year, such as 90m, "
                                 f"12h, 7d or 2w")
    return seconds


def decide(state_dir: Path, action: str, target: str, seconds: float | None = None,
           wait: float = WAIT_SECONDS) -> None:
    """Check the decision against the state, leave it for the daemon, print its answer."""
    state = read_state(state_dir)
    _check(state, action, target)
    request = {"action": action, "target": target, "seconds": seconds,
               "by": os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid()),
               "asked": time.time()}
    answer = _ask(state_dir, request, wait)
    if answer is None:
        click.echo(f"no daemon is running on {state_dir}: the decision waits in "
                   f"{state_dir / 'requests'} and is taken when it starts")
    elif not answer["ok"]:
        raise click.UsageError(f"the daemon refused it: {answer['message']}")
    else:
        click.echo(answer["message"])


def _ask(state_dir: Path, request: dict, wait: float) -> dict | None:
    """Leave a request for the daemon; its answer, or None when no daemon runs (the request
    waits for the next start). Written as the state directory's owner (the daemon's user)."""
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    requests = state_dir / "requests"
    tmp = requests / f".{name}.tmp"
    try:
        # made here and now (never a file or link the daemon's user put there), then given
        # to the directory's owner through the open file, not its name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            os.write(fd, (json.dumps(request) + "\n").encode())
            owner = os.stat(state_dir)
            if os.getuid() == 0:  # the daemon's (dynamic) user must read and remove it
                os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
        os.replace(tmp, requests / f"{name}.json")
    except PermissionError:
        raise click.UsageError(f"{requests}: permission denied (run as root: the state "
                               f"belongs to the daemon's user)") from None
    if not _daemon_running(state_dir):
        if request["action"] == "save":
            (requests / f"{name}.json").unlink(missing_ok=True)
        return None
    answer_path = state_dir / "answers" / f"{name}.json"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if answer_path.is_file():
            fd = os.open(answer_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                answer = json.loads(os.read(fd, 65536))
            finally:
                os.close(fd)
            answer_path.unlink(missing_ok=True)
            return answer
        time.sleep(0.05)
    raise Failed(f"the daemon did not answer within {wait:g} s; the request waits in "
                 f"{requests} and is taken when it can")


def _check(state: dict, action: str, target: str) -> None:
    """Refuse what the state says cannot be (exit 2); the daemon checks again."""
    keys = {d["key"] for d in state["devices"]}
    if action == "accept":
        ids = {d["episode"]["incident"] for d in state["devices"]
               if d["episode"] and d["episode"]["incident"] is not None}
        ids |= {i for i, *_ in state.get("recent", [])}
        if not target.isdigit() or int(target) not in ids:
            raise click.BadParameter(f"no incident {target} is open or recent (see `edge-ids "
                                     f"site list`)", param_hint="ID")
    elif action == "undo":
        if not any(str(d["id"]) == target for d in state.get("decisions", [])):
            raise click.BadParameter(f"no decision {target} (see `edge-ids site list`)",
                                     param_hint="DECISION")
    elif target not in keys:
        raise click.BadParameter(f"no device {target!r} is remembered (see `edge-ids site "
                                 f"list`)", param_hint="KEY")


def _daemon_running(state_dir: Path) -> bool:
    try:
        with open(state_dir / "lock", "r") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def _action(name: str, argument: str, doc: str, duration: bool = False):
    @click.argument(argument)
    @state_dir_option
    @click.option("--wait", type=click.FloatRange(0), default=WAIT_SECONDS, show_default=True,
                  metavar="SECONDS", help="How long to wait for the daemon's answer.")
    def command(state_dir, wait, **kwargs):
        target = kwargs[argument.lower()]
        seconds = parse_duration(kwargs["for_"]) if duration else None
        decide(state_dir, name, target, seconds, wait)
    command.__doc__ = doc
    if duration:
        command = click.option("--for", "for_", required=True, metavar="DURATION",
                               help="How long: 90m, 12h, 7d, 2w (flow time).")(command)
    return site.command(name, epilog=exit_codes.epilog())(command)


_action("accept", "ID", "Incident ID is expected: its peers are accepted for its device (never "
        "evidence again), its services join the device's, and it closes.")
_action("mute", "KEY", "No incident or push for device KEY for a while (its flow alerts stay; "
        "its normal stands still).", duration=True)
_action("unmute", "KEY", "End a mute now.")
_action("forget", "KEY", "Forget device KEY: if it comes back it is new (announced, on "
        "probation).")
_action("probation", "KEY", "Put device KEY back on probation: it learns its threshold again "
        "on the device.")
_action("undo", "DECISION", "Undo a decision (its number in `site list`).")
