"""The operator page's defences, on the real server in this process: hostile strings in every
field the traffic controls, path tricks, write methods, tokens, and a bind off loopback."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from edge_ids.edge_runtime.outputs.operator_page import OperatorView, PageError, PageServer
from edge_ids.edge_runtime.outputs.page_render import render

from edge_ids.cli import main

HOSTILE = '"><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
TOKEN = "s3cret-token-for-the-page"


def hostile_event(i: int, state: str = "open") -> dict:
    return {"time": 1.6e9 + i, "event_type": "incident",
            "device": {"mac": f"02:00:00:00:00:{i:02x}", "ip": HOSTILE},
            "incident": {"id": i, "state": state, "new_device": True, "opened": 1.6e9,
                         "first_flow": 1.6e9, "last_flow": 1.6e9 + i, "flows_flagged": 3,
                         "flows_seen": 4, "peers": [{"ip": HOSTILE, "flows": 3}],
                         "ports": [{"port": HOSTILE, "flows": 3}],
                         "why": [{"feature": HOSTILE, "share": 1.0, "direction": HOSTILE}]}}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def page():
    view = OperatorView(HOSTILE)
    view.record([hostile_event(1), hostile_event(2, "closed")])
    server = PageServer(view, "127.0.0.1:0")
    host, port = server.start()
    yield view, f"http://{host}:{port}"
    server.stop()


def get(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_hostile_strings_are_shown_as_text_never_as_markup(page):
    view, _ = page
    html = render(view.state())
    parsed = Elements()
    parsed.feed(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not [a for a in parsed.attributes if a.startswith("on")]
    assert HOSTILE in "".join(parsed.text)  # shown, as text


def test_path_tricks_get_404_and_writes_405(page):
    _, base = page
    status, body = get(base + "/")
    assert status == 200 and b"<!doctype html>" in body
    for path in ("/../", "/..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
                 "/index.html", "/static/../../etc/passwd", "/healthz/../../"):
        assert get(base + path)[0] == 404, path
    # a raw request line the client library would normalise
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /../../etc/passwd HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert s.recv(200).split(b"\r\n")[0].endswith(b"404 Not Found")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert get(base + "/", method)[0] == 405
    status, _ = get(base + "/?x=" + urllib.request.quote(HOSTILE))
    assert status == 200
    headers = urllib.request.urlopen(base + "/", timeout=10).headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_a_token_is_checked_on_every_request():
    server = PageServer(OperatorView(), "127.0.0.1:0", token=TOKEN)
    host, port = server.start()
    base = f"http://{host}:{port}"
    try:
        assert get(base + "/")[0] == 401
        assert get(base + "/", headers={"Authorization": "Bearer wrong-token-0000000"})[0] == 401
        assert get(base + "/?token=" + TOKEN[:-1])[0] == 401
        assert get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(base + "/?token=" + TOKEN)[0] == 200
        assert get(base + "/../?token=" + TOKEN)[0] == 404
    finally:
        server.stop()


def test_off_loopback_without_a_token_is_refused_with_the_reason(small_pipeline, tmp_path):
    with pytest.raises(PageError, match="not a loopback address"):
        PageServer(OperatorView(), "0.0.0.0:0")
    result = CliRunner().invoke(main, ["run", "--bundle", str(small_pipeline[0] / "bundle"),
                                       "--input", "file:/dev/null", "--ui", "0.0.0.0:0"])
    assert result.exit_code == 2  # a usage error, refused before anything starts
    assert "--ui 0.0.0.0:0 is not a loopback address" in result.output
    assert "--ui-token-file FILE" in result.output
    short = tmp_path / "token"
    short.write_text("short\n")
    result = CliRunner().invoke(main, ["run", "--bundle", str(small_pipeline[0] / "bundle"),
                                       "--input", "file:/dev/null", "--ui", "0.0.0.0:0",
                                       "--ui-token-file", str(short)])
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    for bad in ("localhost:9109", "127.0.0.1:99999", "9109x", "[::1]x:9109"):
        result = CliRunner().invoke(main, ["run", "--bundle", str(small_pipeline[0] / "bundle"),
                                           "--input", "file:/dev/null", "--ui", bad])
        assert result.exit_code == 2 and "give ADDRESS:PORT" in result.output, bad


def test_no_script_runs_in_a_real_browser(page, tmp_path):
    from test_operator_page import chromium

    _, base = page
    browser = chromium(tmp_path)
    try:
        browser.get(base + "/")
        assert browser.execute_script("return window.__pwned === undefined")
        assert HOSTILE in browser.find_element("css selector", "table#incidents").text
    finally:
        browser.quit()
