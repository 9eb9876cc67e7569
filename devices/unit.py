"""The systemd unit for the daemon, rendered from a device profile (edge-ids.service.in)."""
from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath
from string import Template

from ..edge_runtime.metrics import DEFAULT_PORT, parse_address
from .profiles import DeviceProfile

TEMPLATE = resources.files(__package__) / "edge-ids.service.in"
DEFAULT_PREFIX = "/opt/edge-ids"
DEFAULT_INPUT = "unix:/run/edge-ids/records.sock"
DEFAULT_METRICS = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_ALERTS = "/var/log/edge-ids/alerts.json"
# Where the unit may write without ReadWritePaths= (its Logs/Runtime/StateDirectory).
OWN_DIRECTORIES = ("/var/log/edge-ids", "/run/edge-ids", "/var/lib/edge-ids")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def render_unit(profile: DeviceProfile, prefix: str = DEFAULT_PREFIX,
                input_: str = DEFAULT_INPUT, metrics: str = DEFAULT_METRICS,
                alerts: str = DEFAULT_ALERTS) -> str:
    """The unit text. With metrics on loopback the service may talk to localhost only
    (IPAddressDeny=any); another metrics address lifts that. Alerts or an input socket outside
    the unit's own directories get a ReadWritePaths= line (ProtectSystem=strict)."""
    if not prefix.startswith("/") or not alerts.startswith("/"):
        raise ValueError(f"the prefix and the alerts file must be absolute paths, got "
                         f"{prefix!r} and {alerts!r}")
    if any(c.isspace() for c in prefix + input_ + metrics + alerts):
        raise ValueError("prefix, input, metrics address and alerts may not contain spaces")
    writable = {str(PurePosixPath(alerts).parent)}
    if input_.startswith("unix:"):
        writable.add(str(PurePosixPath(input_[5:]).parent))
    writable -= set(OWN_DIRECTORIES)
    rw_paths = "".join(f"ReadWritePaths={d}\n" for d in sorted(writable))
    host, _ = parse_address(metrics)
    ip_policy = ("IPAddressDeny=any\nIPAddressAllow=localhost\n" if host in LOOPBACK else "")
    return Template(TEMPLATE.read_text()).substitute(
        description=profile.description, device=profile.name, prefix=prefix.rstrip("/"),
        input=input_, metrics=metrics, alerts=alerts, rw_paths=rw_paths,
        max_batch=profile.max_batch, max_delay=profile.max_delay, threads=profile.threads,
        watchdog_sec=profile.watchdog_sec, memory_max=profile.memory_max,
        cpu_quota=profile.cpu_quota, ip_policy=ip_policy)
