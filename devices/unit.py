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
UNSAFE = "%$\\'\""  # in a path or URL on ExecStart=: systemd would expand or split it
# The daemon holds no capability and opens only local and IP sockets.
NO_CAPABILITIES = ("CapabilityBoundingSet=\nAmbientCapabilities=\n"
                   "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n")
# The capture variant: argus, its child, opens a packet socket on the interface. Ambient
# capabilities pass to it across exec (NoNewPrivileges allows that); a private user namespace
# would make them worthless outside it, so PrivateUsers is off. AF_NETLINK: libpcap asks the
# kernel about the interface.
CAPTURE_CAPABILITIES = ("CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN\n"
                        "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN\n"
                        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_PACKET AF_NETLINK\n")
# argus calls setuid(getuid()) once it has opened the interface, and stops if that fails; it is
# in @privileged, which the unit denies. Allowed back alone, it can only keep the uid it has
# (no CAP_SETUID). tests/unit_sandbox.py runs argus under the unit's own filter to show it.
CAPTURE_SYSCALLS = "SystemCallFilter=setuid\n"


def render_unit(profile: DeviceProfile, prefix: str = DEFAULT_PREFIX,
                input_: str = DEFAULT_INPUT, metrics: str = DEFAULT_METRICS,
                alerts: str = DEFAULT_ALERTS, capture: str | None = None,
                allowed_signers: str | None = None, allow_unsigned: bool = False,
                ui: str | None = None, ui_token_file: str | None = None,
                webhook: str | None = None, webhook_min_severity: str | None = None,
                ui_cert_file: str | None = None, ui_key_file: str | None = None) -> str:
    """The unit text. With metrics on loopback the service may talk to localhost only
    (IPAddressDeny=any); another metrics address lifts that. Alerts or an input socket outside
    the unit's own directories get a ReadWritePaths= line (ProtectSystem=strict). With
    `capture` (an interface) it runs `edge-ids capture` on it instead of reading `input_`,
    with the capabilities and memory that needs. `allowed_signers` (a path on the device: signatures
    required) and `allow_unsigned` (the explicit opt-out) are the daemon's signature policy
    (edge_runtime/signature.py). `ui` serves the operator's page (a token file on the device
    is handed to the service as a credential) and `webhook` pushes incidents (docs/operator.md);
    IPAddressAllow= then lets the service reach the webhook's address, or is lifted for a page
    off loopback or a webhook named by host name."""
    if not prefix.startswith("/") or not alerts.startswith("/"):
        raise ValueError(f"the prefix and the alerts file must be absolute paths, got "
                         f"{prefix!r} and {alerts!r}")
    if allowed_signers and not allowed_signers.startswith("/"):
        raise ValueError(f"the allowed-signers file must be an absolute path on the device, "
                         f"got {allowed_signers!r}")
    if any(c.isspace() for c in prefix + input_ + metrics + alerts + (capture or "")
           + (allowed_signers or "")):
        raise ValueError("prefix, input, capture interface, metrics address and alerts may not "
                         "contain spaces")
    writable = {str(PurePosixPath(alerts).parent)}
    if input_.startswith("unix:") and not capture:
        writable.add(str(PurePosixPath(input_[5:]).parent))
    writable -= set(OWN_DIRECTORIES)
    rw_paths = "".join(f"ReadWritePaths={d}\n" for d in sorted(writable))
    host, _ = parse_address(metrics)
    extra, allowed = operator_arguments(ui, ui_token_file, webhook, webhook_min_severity,
                                        ui_cert_file, ui_key_file)
    ip_policy = (f"IPAddressDeny=any\nIPAddressAllow={' '.join(['localhost', *allowed])}\n"
                 if host in LOOPBACK and allowed is not None else "")
    credential = "".join(f"LoadCredential={name}:{path}\n" for name, path in (
        ("ui-token", ui_token_file), ("ui-cert", ui_cert_file), ("ui-key", ui_key_file))
        if ui and path)
    return Template(TEMPLATE.read_text()).substitute(
        description=profile.description, device=profile.name, prefix=prefix.rstrip("/"),
        source=(f"capture --interface {capture} --flow-report {profile.flow_report_seconds}"
                if capture else f"run --input {input_}"),
        metrics=metrics, alerts=alerts, rw_paths=rw_paths,
        capabilities=CAPTURE_CAPABILITIES if capture else NO_CAPABILITIES,
        private_users="no" if capture else "yes",
        syscalls=CAPTURE_SYSCALLS if capture else "",
        max_batch=profile.max_batch, max_delay=profile.max_delay, threads=profile.threads,
        watchdog_sec=profile.watchdog_sec,
        memory_max=profile.capture_memory_max if capture else profile.memory_max,
        cpu_quota=profile.cpu_quota, ip_policy=credential + ip_policy,
        trust=(f" --allowed-signers {allowed_signers}" if allowed_signers else "")
        + (" --allow-unsigned" if allow_unsigned and allowed_signers else "") + extra)


class PageUnitError(ValueError):
    """The page's options cannot make a unit that would start (the message says what to do)."""


def page_arguments(ui: str, ui_token_file: str | None = None, ui_cert_file: str | None = None,
                   ui_key_file: str | None = None) -> str:
    """The daemon's page options in the unit (files come as credentials). A page off loopback
    needs a token and TLS, as the daemon does: refused here, before any device is touched,
    rather than installed to fail its health check and be rolled back."""
    from ..edge_runtime.operator_page import PageError, check_page

    for option, path in (("--ui-token-file", ui_token_file), ("--ui-cert", ui_cert_file),
                         ("--ui-key", ui_key_file)):
        if path and (not path.startswith("/") or any(c.isspace() or c in UNSAFE for c in path)):
            raise PageUnitError(f"{option} must be an absolute path on the device without "
                                f"spaces, quotes, $ or %, got {path!r}")
    tls = (ui_cert_file, ui_key_file) if ui_cert_file or ui_key_file else None
    try:
        check_page(ui, ui_token_file, tls)
    except PageError as e:
        upgrade = ("" if ui_token_file is None or tls is not None else
                   " Nothing was installed: a device serving this page without TLS today keeps "
                   "its running release. Make the pair on the device (e.g. in /etc/edge-ids, "
                   "the key readable by root only: the unit hands both to the service), then "
                   "deploy again with --ui-cert /etc/edge-ids/page.crt --ui-key "
                   "/etc/edge-ids/page.key (docs/operator.md, \"A page off loopback\").")
        raise PageUnitError(f"{e}.{upgrade}") from None
    credentials = "${CREDENTIALS_DIRECTORY}"
    return (f" --ui {ui}"
            + (f" --ui-token-file {credentials}/ui-token" if ui_token_file else "")
            + (f" --ui-cert {credentials}/ui-cert --ui-key {credentials}/ui-key" if tls else ""))


def operator_arguments(ui: str | None, ui_token_file: str | None, webhook: str | None,
                       min_severity: str | None, ui_cert_file: str | None = None,
                       ui_key_file: str | None = None) -> tuple[str, list[str] | None]:
    """The daemon's page and webhook options, and the addresses the service must reach beyond
    localhost (None: any, the IP policy is lifted)."""
    from urllib.parse import urlsplit

    from ..edge_runtime.operator_page import is_loopback
    from ..edge_runtime.operator_page import parse_address as page_address

    extra, allowed = "", []
    if ui:
        extra += page_arguments(ui, ui_token_file, ui_cert_file, ui_key_file)
        if not is_loopback(page_address(ui)[0]):
            allowed = None  # browsers from anywhere on the LAN
    if webhook:
        if any(c.isspace() or c in "%$\\'\"" for c in webhook):
            raise ValueError(f"the webhook URL may not contain spaces, quotes, $ or %: {webhook!r}")
        target = urlsplit(webhook).hostname or ""
        try:
            ip_literal = is_loopback(target) or True
        except ValueError:
            ip_literal = False
        if allowed is not None:
            allowed = allowed + [target] if ip_literal else None  # a host name: any address
        extra += f" --webhook {webhook}" + (f" --webhook-min-severity {min_severity}"
                                            if min_severity else "")
    return extra, allowed
