"""The options of `run` and `capture` for what reaches the operator besides the alert file:
the page (--ui) and the webhook (--webhook). docs/operator.md has the payload and the page."""
from __future__ import annotations

from pathlib import Path

import click

from .cli_options import checked_by
from .exit_codes import BadInput


def _check_url(ctx, param, url):
    """An http(s) URL with no secret in it (exit 2); whether a token may go there is checked
    once every option is read."""
    if url is not None:
        from .edge_runtime.outputs.webhook import WebhookError, check_target
        try:
            check_target(url)
        except WebhookError as e:
            raise click.BadParameter(str(e).removeprefix("--webhook: ")) from None
    return url


INSECURE_HELP = ("Send the token over an http:// --webhook URL anyway (refused without this: "
                 "it would cross the network in cleartext). Only for a receiver on this host or "
                 "a link you trust.")


OPTIONS = [
    click.option("--ui", metavar="ADDRESS:PORT", callback=checked_by("edge_runtime.outputs.operator_page", "parse_address"),
                 help="Serve the operator's page here (read-only: devices, incidents with "
                      "their why, each device's last day), e.g. 127.0.0.1:9109; reach it from "
                      "a laptop with `ssh -L 9109:127.0.0.1:9109 DEVICE`. Off by default. Any "
                      "address other than loopback needs --ui-token-file and TLS "
                      "(--ui-cert, --ui-key)."),
    click.option("--ui-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 metavar="FILE", help="A secret (16+ characters) every request to the page "
                                      "must carry: Authorization: Bearer TOKEN, or ?token=."),
    click.option("--ui-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 metavar="FILE", help="Serve the page over TLS with this certificate (PEM; "
                                      "read again on SIGHUP). Needs --ui-key."),
    click.option("--ui-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 metavar="FILE", help="The certificate's private key (PEM)."),
    click.option("--webhook", metavar="URL", callback=_check_url,
                 help="POST a JSON push here when an incident opens or closes and when a new "
                      "device joins (ntfy, Gotify, a chat webhook). Never blocks the daemon: "
                      "a bounded queue, retries with back-off, drops counted."),
    click.option("--webhook-min-severity", type=click.Choice(["low", "medium", "high"]),
                 default="low", show_default=True,
                 help="Push events at or above this: high = incident opened, medium = new "
                      "device, low = incident closed."),
    click.option("--webhook-throttle", type=click.FloatRange(0), default=300,
                 show_default=True, metavar="SECONDS",
                 help="At most one push per device and kind of event in this time (the "
                      "flows' own time); the rest are counted as throttled."),
    click.option("--webhook-token-file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
                 metavar="FILE", help="A token sent as Authorization: Bearer (Gotify, ntfy), "
                 "only to an https:// --webhook and never where it redirects (a redirect is a "
                 "failed push). The file must be private to its owner (chmod 600; a systemd "
                 "credential is); read again on SIGHUP."),
    click.option("--webhook-insecure", is_flag=True, help=INSECURE_HELP),
]


def operator_options(command):
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def operator_settings(ui, ui_token_file, webhook, webhook_min_severity, webhook_throttle,
                      webhook_token_file, webhook_insecure, ui_cert=None, ui_key=None) -> dict:
    """The DaemonOptions fields for them. A token where it may not go, or a page off loopback
    without a token and TLS, is a usage error (2); a token file that is empty or that others may
    open, or a certificate and key that cannot be used, is an unusable file (5)."""
    from .edge_runtime.outputs.operator_page import PageError, check_page, read_token, tls_context
    from .edge_runtime.outputs.secret_file import SecretFileError, check_private, read_secret
    from .edge_runtime.outputs.webhook import WebhookError, WebhookOptions, check_target

    try:
        token = read_token(None, ui_token_file)
    except PageError as e:
        raise click.BadParameter(str(e), param_hint="--ui-token-file") from None
    tls = (ui_cert, ui_key) if ui_cert or ui_key else None
    if tls and not ui:
        raise click.UsageError("--ui-cert and --ui-key serve the page over TLS: give --ui too")
    if ui:
        try:
            check_page(ui, token, tls)
        except PageError as e:
            raise click.UsageError(str(e)) from None
    if tls:
        try:
            tls_context(ui_cert, ui_key)
        except (OSError, ValueError) as e:
            raise BadInput(f"--ui-cert {ui_cert} --ui-key {ui_key}: not a usable certificate "
                           f"and key: {e}") from None
    if webhook_token_file and not webhook:
        raise click.UsageError("--webhook-token-file needs --webhook URL")
    push = None
    try:
        if ui_token_file:
            check_private(ui_token_file, "--ui-token-file")
        if webhook:
            check_target(webhook, webhook_token_file is not None, webhook_insecure)
            secret = read_secret(webhook_token_file, "--webhook-token-file") \
                if webhook_token_file else None
            push = WebhookOptions(webhook, webhook_min_severity, webhook_throttle, token=secret,
                                  token_file=webhook_token_file, insecure=webhook_insecure)
    except WebhookError as e:
        raise click.UsageError(str(e)) from None
    except SecretFileError as e:
        raise BadInput(f"cannot start: {e}") from None
    return {"ui": ui, "ui_token": token, "ui_tls": tls, "webhook": push}


UNIT_OPTIONS = [
    click.option("--ui", metavar="ADDRESS:PORT", callback=checked_by("edge_runtime.outputs.operator_page", "parse_address"),
                 help="The daemon's --ui on the device: serve the operator's page there "
                      "(127.0.0.1:9109, then `ssh -L 9109:127.0.0.1:9109 DEVICE`)."),
    click.option("--ui-token-file", metavar="PATH",
                 help="A token file on the device (needed for a page off loopback; mode 600, "
                      "else the install is refused); the unit hands it to the service as a "
                      "credential (LoadCredential=)."),
    click.option("--webhook", metavar="URL", callback=_check_url,
                 help="The daemon's --webhook on the device; the unit's IPAddressAllow= then "
                      "admits its address (a host name lifts the IP policy)."),
    click.option("--webhook-min-severity", type=click.Choice(["low", "medium", "high"]),
                 help="The daemon's --webhook-min-severity on the device (default low: "
                      "incidents opened and closed, new devices)."),
    click.option("--webhook-token-file", metavar="PATH",
                 help="A token file on the device (mode 600, else the install is refused), "
                      "sent by the webhook as Authorization: Bearer; the unit hands it to the "
                      "service as a credential (LoadCredential=), so the token is never in the "
                      "unit. Needs an https:// --webhook, or --webhook-insecure."),
    click.option("--webhook-insecure", is_flag=True, default=None,
                 help="The daemon's --webhook-insecure on the device: the token may go to an "
                      "http:// --webhook in cleartext (refused without it)."),
    click.option("--state-dir", metavar="DIR",
                 help="The daemon's --state-dir on the device (an absolute path; outside "
                      "/var/lib/edge-ids the unit gets ReadWritePaths= for it). Default: the "
                      "unit's StateDirectory, /var/lib/edge-ids, so that what the devices "
                      "learned survives restarts and deploys; '' keeps nothing."),
]
PAGE_TLS_OPTIONS = [
    click.option("--ui-cert", "ui_cert_file", metavar="PATH",
                 help="A certificate file on the device (PEM; needed for a page off "
                      "loopback): the page is served over TLS. Handed over as a credential, "
                      "like the key."),
    click.option("--ui-key", "ui_key_file", metavar="PATH",
                 help="The certificate's key on the device (readable by root only is enough)."),
]
EXTRA_OPTION = click.option(
    "--extra-option", "extra_options", multiple=True, metavar="ARG",
    help="One more argument for the daemon's command line in the unit (repeatable, one argv "
         "string each: --extra-option=--emit --extra-option=incidents). No spaces, quotes, $ "
         "or %; options the unit sets itself are refused.")


def unit_operator_options(command=None, extra: bool = True):
    """deploy, unit, fleet package and fleet deploy: the page (its token, certificate and key),
    the webhook and the state directory, carried by the unit; with `extra`, free daemon
    arguments (fleet deploy leaves those to the inventory's edge_ids_extra_options)."""
    def apply(command):
        for option in reversed(UNIT_OPTIONS + PAGE_TLS_OPTIONS + ([EXTRA_OPTION] if extra
                                                                  else [])):
            command = option(command)
        return command
    return apply(command) if command is not None else apply
