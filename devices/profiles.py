"""Device profiles: one small TOML file per kind of device, in profiles/. They hold what deploy
and the unit need to know: architecture, CPU (also the qemu model for emulation), cores,
memory, Python versions, interpreter package, daemon batching, systemd limits, the settings of
the capture variant, and whether bundles must be signed."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

PROFILES = resources.files(__package__) / "profiles"


class ProfileError(ValueError):
    """An unknown device name, or a profile file that lacks a field."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    architecture: str  # uname -m: aarch64, x86_64
    cpu: str  # the core (qemu -cpu model for emulation)
    cores: int
    memory_mb: int
    python: tuple[str, ...]  # Python versions the device may have
    interpreter_package: str
    threads: int
    max_batch: int
    max_delay: float  # seconds
    memory_max: str  # systemd MemoryMax=
    cpu_quota: str  # systemd CPUQuota=
    watchdog_sec: int  # systemd WatchdogSec=
    flow_report_seconds: int  # capture: argus reports a long flow this often
    capture_memory_max: str  # capture: MemoryMax= with argus and ra in the unit
    # [signatures] require: refuse to deploy without trusted keys. Keys given always mean
    # signatures are required on the device, unless [signatures] allow_unsigned (the opt-out).
    require_signature: bool = False
    allow_unsigned: bool = False


def profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in PROFILES.iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name: str) -> DeviceProfile:
    """The named profile; a ProfileError naming the valid ones otherwise."""
    path = PROFILES / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(f"no device profile {name!r}; known devices: "
                           f"{', '.join(profile_names())}")
    raw = tomllib.loads(path.read_text())
    try:
        runtime, systemd, capture = raw["runtime"], raw["systemd"], raw["capture"]
        return DeviceProfile(
            name=name, description=raw["description"], architecture=raw["architecture"],
            cpu=raw["cpu"], cores=int(raw["cores"]), memory_mb=int(raw["memory_mb"]),
            python=tuple(raw["python"]), interpreter_package=raw["interpreter_package"],
            threads=int(runtime["threads"]), max_batch=int(runtime["max_batch"]),
            max_delay=float(runtime["max_delay"]), memory_max=str(systemd["memory_max"]),
            cpu_quota=str(systemd["cpu_quota"]), watchdog_sec=int(systemd["watchdog_sec"]),
            flow_report_seconds=int(capture["flow_report_seconds"]),
            capture_memory_max=str(capture["memory_max"]),
            require_signature=bool(raw.get("signatures", {}).get("require", False)),
            allow_unsigned=bool(raw.get("signatures", {}).get("allow_unsigned", False)))
    except KeyError as e:
        raise ProfileError(f"device profile {path.name} lacks {e}") from None
