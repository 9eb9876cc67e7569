"""The systemd unit for the daemon, rendered from a device profile (edge-ids.service.in)."""
from __future__ import annotations

from importlib import resources
from string import Template

from ..edge_runtime.metrics import DEFAULT_PORT, parse_address
from .profiles import DeviceProfile

TEMPLATE = resources.files(__package__) / "edge-ids.service.in"
DEFAULT_PREFIX = "/opt/edge-ids"
DEFAULT_INPUT = "unix:/run/edge-ids/records.sock"
DEFAULT_METRICS = f"127.0.0.1:{DEFAULT_PORT}"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def render_unit(profile: DeviceProfile, prefix: str = DEFAULT_PREFIX,
                input_: str = DEFAULT_INPUT, metrics: str = DEFAULT_METRICS) -> str:
    """The unit text. With metrics on loopback the service may talk to localhost only
    (IPAddressDeny=any); another metrics address lifts that."""
    if not prefix.startswith("/"):
        raise ValueError(f"--prefix must be an absolute path, got {prefix!r}")
    if any(c.isspace() for c in prefix + input_ + metrics):
        raise ValueError("prefix, input and metrics address may not contain spaces")
    host, _ = parse_address(metrics)
    ip_policy = ("IPAddressDeny=any\nIPAddressAllow=localhost\n" if host in LOOPBACK else "")
    return Template(TEMPLATE.read_text()).substitute(
        description=profile.description, device=profile.name, prefix=prefix.rstrip("/"),
        input=input_, metrics=metrics, max_batch=profile.max_batch,
        max_delay=profile.max_delay, threads=profile.threads,
        watchdog_sec=profile.watchdog_sec, memory_max=profile.memory_max,
        cpu_quota=profile.cpu_quota, ip_policy=ip_policy)
