"""What reaches the operator besides the alert file: the page (operator_page.py) and the
webhook (webhook.py), started with the daemon and fed from its classifying thread."""
from __future__ import annotations

import contextlib
import logging

from .operator_page import OperatorView, PageServer
from .webhook import Webhook, WebhookOptions

log = logging.getLogger("edge_ids.daemon")


class OperatorOutputs:
    """The page and the webhook, either or both or neither (then every call is nearly free)."""

    def __init__(self, metrics, ml: dict, describe: str, ui: str | None = None,
                 ui_token: str | None = None, webhook: WebhookOptions | None = None,
                 ui_tls: tuple | None = None):
        self.view = OperatorView(describe) if ui else None
        # a non-loopback --ui without a token and TLS raises PageError here, before anything
        # starts (the command line checked it already: this is for embedded use)
        self.page = PageServer(self.view, ui, ui_token, ui_tls) if ui else None
        self.lock = self.view.lock if self.view else contextlib.nullcontext()
        self.webhook = Webhook(webhook, lambda result: metrics.webhook.labels(result).inc(),
                               ml) if webhook else None

    def start(self) -> None:
        if self.page:
            host, port = self.page.start()
            log.info("operator page on %s://%s:%d/%s", "https" if self.page.tls else "http",
                     f"[{host}]" if ":" in host else host, port,
                     " (a token is required)" if self.page.token else "")
        if self.webhook:
            log.info("webhook: %s for events at or above %s severity", self.webhook.options.url,
                     self.webhook.options.min_severity)

    def watching(self, watch, model_text: str, ml: dict) -> None:
        """A new model or device watch (start, reload): under the lock."""
        if self.view:
            self.view.tracker = watch.tracker if watch is not None else None
            if watch is not None:
                watch.tracker.timelines = True
            self.view.model = model_text
        if self.webhook:
            self.webhook.ml = ml

    def reload(self) -> None:
        """SIGHUP: read again what may change on disk beside the bundle (the webhook's token,
        the page's certificate and key)."""
        if self.webhook:
            self.webhook.reload_token()
        if self.page:
            self.page.reload()

    def publish(self, events: list[dict]) -> None:
        """Called with the lock held, after the lines were written."""
        if self.view:
            self.view.record(events)
        if self.webhook:
            self.webhook.offer(events)

    def close(self) -> None:
        if self.page:
            self.page.stop()
        if self.webhook:
            self.webhook.close()
