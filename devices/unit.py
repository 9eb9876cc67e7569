"""The systemd unit for the daemon, rendered from a device profile (edge-ids.service.in)."""
from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath
from string import Template

from ..edge_runtime.outputs.metrics import DEFAULT_PORT, parse_address
from .profiles import DeviceProfile

TEMPLATE = resources.files(__package__) / "edge-ids.service.in"
DEFAULT_PREFIX = "/opt/edge-ids"
DEFAULT_INPUT = "unix:/run/edge-ids/records.sock"
DEFAULT_METRICS = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_ALERTS = "/var/log/edge-ids/alerts.json"
DEFAULT_STATE_DIR = "/var/lib/edge-ids"  # the unit's StateDirectory=
# Where the unit may write without ReadWritePaths= (its Logs/Runtime/StateDirectory).
OWN_DIRECTORIES = ("/var/log/edge-ids", "/run/edge-ids", "/var/lib/edge-ids")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
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
# What systemd would split or expand in ExecStart= and LoadCredential= (quotes, $VAR, %specifiers)
UNSAFE = "%$\\'\""
# Daemon options the unit writes itself (from its own settings): not accepted as extra options
SET_BY_THE_UNIT = ("--bundle", "--input", "--interface", "--alerts", "--metrics", "--max-batch",
                   "--max-delay", "--threads", "--flow-report", "--allowed-signers",
                   "--allow-unsigned", "--require-signature", "--ui", "--ui-token-file", "--ui-cert", "--ui-key",
                   "--webhook", "--webhook-token-file", "--webhook-min-severity",
                   "--webhook-insecure", "--state-dir")


def render_unit(profile: DeviceProfile, prefix: str = DEFAULT_PREFIX,
                input_: str = DEFAULT_INPUT, metrics: str = DEFAULT_METRICS,
                alerts: str = DEFAULT_ALERTS, capture: str | None = None,
                allowed_signers: str | None = None, allow_unsigned: bool = False,
                ui: str | None = None, ui_token_file: str | None = None,
                webhook: str | None = None, webhook_min_severity: str | None = None,
                webhook_token_file: str | None = None, webhook_insecure: bool = False,
                state_dir: str | None = None, extra_options: tuple[str, ...] = (),
                ui_cert_file: str | None = None, ui_key_file: str | None = None) -> str:
    """The unit text. With metrics on loopback the service may talk to localhost only
    (IPAddressDeny=any); another metrics address lifts that. Alerts or an input socket outside
    the unit's own directories get a ReadWritePaths= line (ProtectSystem=strict). With
    `capture` (an interface) it runs `edge-ids capture` on it instead of reading `input_`,
    with the capabilities and memory that needs. `allowed_signers` (a path on the device: signatures
    required) and `allow_unsigned` (the explicit opt-out) are the daemon's signature policy
    (edge_runtime/model/signature.py). `ui` serves the operator's page (a token file on the device
    is handed to the service as a credential) and `webhook` pushes incidents (docs/operator.md);
    IPAddressAllow= then lets the service reach the webhook's address and, for a page off
    loopback, the home networks (the daemon's --home-net among `extra_options`, else its
    defaults); it is lifted for a webhook named by host name. Tokens are files on the device handed over
    with LoadCredential=, never text in the unit (which anyone on the device may read).
    `state_dir` is the daemon's --state-dir, by default the unit's own StateDirectory
    (/var/lib/edge-ids: what the devices learned survives restarts and deploys); "" keeps
    nothing. `extra_options` are passed to the daemon only when given."""
    state_dir = DEFAULT_STATE_DIR if state_dir is None else state_dir
    if not prefix.startswith("/") or not alerts.startswith("/"):
        raise ValueError(f"the prefix and the alerts file must be absolute paths, got "
                         f"{prefix!r} and {alerts!r}")
    if allowed_signers and not allowed_signers.startswith("/"):
        raise ValueError(f"the allowed-signers file must be an absolute path on the device, "
                         f"got {allowed_signers!r}")
    if state_dir and not state_dir.startswith("/"):
        raise ValueError(f"the state directory must be an absolute path on the device, got "
                         f"{state_dir!r}")
    if any(c.isspace() or c in UNSAFE for c in prefix + input_ + metrics + alerts
           + (capture or "") + (allowed_signers or "") + (state_dir or "")):
        raise ValueError("prefix, input, capture interface, metrics address, alerts and state "
                         "directory may not contain spaces, quotes, $, % or \\")
    writable = {str(PurePosixPath(alerts).parent)}
    if state_dir:
        writable.add(str(PurePosixPath(state_dir)))
    if input_.startswith("unix:") and not capture:
        writable.add(str(PurePosixPath(input_[5:]).parent))
    writable -= set(OWN_DIRECTORIES)
    rw_paths = "".join(f"ReadWritePaths={d}\n" for d in sorted(writable))
    host, _ = parse_address(metrics)
    extra, allowed = operator_arguments(ui, ui_token_file, webhook, webhook_min_severity,
                                        webhook_token_file, webhook_insecure,
                                        ui_cert_file, ui_key_file, home_nets(extra_options))
    extra += (f" --state-dir {state_dir}" if state_dir else "") + extra_arguments(extra_options)
    ip_policy = (f"IPAddressDeny=any\nIPAddressAllow={' '.join(['localhost', *allowed])}\n"
                 if host in LOOPBACK and allowed is not None else "")
    credential = "".join(f"LoadCredential={name}:{path}\n" for name, path in (
        ("ui-token", ui_token_file if ui else None), ("ui-cert", ui_cert_file if ui else None),
        ("ui-key", ui_key_file if ui else None), ("webhook-token", webhook_token_file)) if path)
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


def home_nets(arguments: tuple[str, ...]) -> tuple[str, ...]:
    """The home networks the daemon will use: its --home-net values among the free arguments
    (`--home-net CIDR` or `--home-net=CIDR`), else its defaults (a LAN page serves them)."""
    from ..edge_runtime.site.devices import DEFAULT_HOME_NET, parse_home_net

    given = [value for option, value in zip(arguments, arguments[1:]) if option == "--home-net"]
    given += [a.split("=", 1)[1] for a in arguments if a.startswith("--home-net=")]
    return tuple(str(n) for n in parse_home_net(given)) if given else DEFAULT_HOME_NET


def extra_arguments(arguments: tuple[str, ...]) -> str:
    """Free daemon arguments for ExecStart: each one argv word that systemd passes as it is (no
    spaces, quotes, $ or % for it to split or expand), and none that the unit sets itself."""
    for argument in arguments:
        if not argument or any(c.isspace() or c in UNSAFE for c in argument):
            raise ValueError(f"extra daemon option {argument!r}: one argument each, without "
                             f"spaces, quotes, $, % or \\")
        if argument.split("=", 1)[0] in SET_BY_THE_UNIT:
            raise ValueError(f"extra daemon option {argument!r}: the unit sets "
                             f"{argument.split('=', 1)[0]} itself; use its own option")
    return "".join(f" {a}" for a in arguments)


def device_file(path: str, what: str) -> None:
    """A credential's source for LoadCredential=NAME:PATH: absolute, nothing systemd expands."""
    if not path.startswith("/"):
        raise ValueError(f"{what} must be an absolute path on the device, got {path!r}")
    if any(c.isspace() or c in UNSAFE + ":" for c in path):
        raise ValueError(f"{what} may not contain spaces, quotes, $, %, \\ or ':': {path!r}")




class PageUnitError(ValueError):
    """The page's options cannot make a unit that would start (the message says what to do)."""


def page_arguments(ui: str, ui_token_file: str | None = None, ui_cert_file: str | None = None,
                   ui_key_file: str | None = None) -> str:
    """The daemon's page options in the unit (files come as credentials). A page off loopback
    needs a token and TLS, as the daemon does: refused here, before any device is touched,
    rather than installed to fail its health check and be rolled back."""
    from ..edge_runtime.outputs.operator_page import PageError, check_page

    for what, path in (("the page's token file", ui_token_file),
                       ("the page's certificate", ui_cert_file), ("its key", ui_key_file)):
        if path:
            try:
                device_file(path, what)
            except ValueError as e:
                raise PageUnitError(str(e)) from None
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
                       min_severity: str | None, webhook_token_file: str | None = None,
                       webhook_insecure: bool = False, ui_cert_file: str | None = None,
                       ui_key_file: str | None = None,
                       home_net: tuple[str, ...] = ()) -> tuple[str, list[str] | None]:
    """The daemon's page and webhook options, and the addresses the service must reach beyond
    localhost (None: any, the IP policy is lifted): a page off loopback answers browsers of
    the `home_net` networks only (not the whole Internet, should the device be reachable)."""
    from urllib.parse import urlsplit

    from ..edge_runtime.outputs.operator_page import is_loopback
    from ..edge_runtime.outputs.operator_page import parse_address as page_address
    from ..edge_runtime.outputs.webhook import check_target

    extra, allowed = "", []
    if ui:
        extra += page_arguments(ui, ui_token_file, ui_cert_file, ui_key_file)
        if not is_loopback(page_address(ui)[0]):
            allowed = list(home_net)  # browsers of the home networks
    if webhook_token_file and not webhook:
        raise ValueError("--webhook-token-file needs --webhook URL")
    if webhook:
        check_target(webhook, bool(webhook_token_file), bool(webhook_insecure))  # no secret in it
        if any(c.isspace() or c in UNSAFE for c in webhook):
            raise ValueError(f"the webhook URL may not contain spaces, quotes, $, % or \\: "
                             f"{webhook!r}")
        if webhook_token_file:
            device_file(webhook_token_file, "the webhook's token file")
        target = urlsplit(webhook).hostname or ""
        try:
            ip_literal = is_loopback(target) or True
        except ValueError:
            ip_literal = False
        if allowed is not None:
            allowed = allowed + [target] if ip_literal else None  # a host name: any address
        extra += f" --webhook {webhook}" + (f" --webhook-min-severity {min_severity}"
                                            if min_severity else "")
        if webhook_token_file:
            extra += " --webhook-token-file ${CREDENTIALS_DIRECTORY}/webhook-token"
        if webhook_insecure:
            extra += " --webhook-insecure"
    return extra, allowed
