"""The operator's page and the webhook, for real: a daemon fed an hour of the smart-home site
with a real bot rewritten into the Lockly hub and a real device joining (incident_scenarios),
its page read by a headless Chromium (Selenium with Debian's chromium-driver), its pushes
received by an HTTP server on 127.0.0.1; and the page's defences against hostile strings, path
tricks and a bind without a token."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, send
from site_replay import HAS_ARGUS, bot_and_joiner
from webhook_receiver import WebhookReceiver

CHROMEDRIVER = shutil.which("chromedriver")
DOCS = Path(__file__).parents[1] / "docs"
BOT_PEER = "185.244.25.235"


@pytest.fixture(scope="module")
def replay(learned_site, smart_home, data_dir, tmp_path_factory) -> dict:
    """An hour of the site's test days, a bot in the hub from its 20th minute on, a HueSwitch
    joining ten minutes after the bot starts: as the flows `capture --record` writes."""
    if not HAS_ARGUS:
        pytest.skip("needs Debian's argus-server and argus-client")
    work = tmp_path_factory.mktemp("page")
    replay = bot_and_joiner(learned_site, smart_home, data_dir, work, 1200, 2400, 600)
    return {"hub": replay["hub"], "joined": replay["joined"], "lines": replay["lines"],
            "bundle": learned_site["bundle"]}


@pytest.fixture(scope="module")
def served(replay, tmp_path_factory):
    """The daemon with the page and a webhook, after every flow of the replay."""
    tmp = tmp_path_factory.mktemp("served")
    receiver = WebhookReceiver(path="/edge-ids")
    sock = tmp / "flows.sock"
    daemon = DaemonProcess(tmp, "--bundle", str(replay["bundle"]), "--input", f"unix:{sock}",
                           "--alerts", str(tmp / "alerts.json"), "--metrics", "127.0.0.1:0",
                           "--ui", "127.0.0.1:0", "--webhook", receiver.url)
    try:
        send(sock, b"".join(replay["lines"]))
        daemon.wait_metric("edge_ids_records_total", len(replay["lines"]), timeout=180)
        url = re.search(r"operator page on (http://\S+/)", daemon.log_text()).group(1)
        yield {"daemon": daemon, "url": url, "receiver": receiver, "tmp": tmp}
    finally:
        daemon.stop()
        receiver.close()


def chromium(tmp: Path):
    if CHROMEDRIVER is None or not shutil.which("chromium"):
        pytest.skip("needs apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 f"--user-data-dir={tmp / 'chromium'}", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_chromium_shows_the_devices_the_bots_open_incident_and_the_new_device(served, replay):
    from selenium.webdriver.common.by import By

    hub, joined = replay["hub"], replay["joined"]
    browser = chromium(served["tmp"])
    try:
        browser.get(served["url"])
        devices = {row.get_attribute("data-device"): row
                   for row in browser.find_elements(By.CSS_SELECTOR, "table#devices tr.device")}
        assert hub.mac in devices and joined["mac"] in devices
        assert len(devices) >= 5  # the four site devices, the new one
        assert "#" in devices[hub.mac].text and "open" in devices[hub.mac].text
        assert "new" in devices[joined["mac"]].get_attribute("class").split()
        assert devices[hub.mac].find_elements(By.CSS_SELECTOR, "svg rect.flagged")
        assert devices[hub.mac].find_elements(By.CSS_SELECTOR, "svg rect.incident")
        incidents = browser.find_elements(By.CSS_SELECTOR, "table#incidents tr.incident")
        mine = [r for r in incidents if r.get_attribute("data-device") == hub.mac]
        assert mine and "open" in mine[0].get_attribute("class").split()
        assert "why:" in mine[0].text and BOT_PEER in mine[0].text
        assert browser.find_elements(By.TAG_NAME, "script") == []
        assert browser.title.startswith("edge-ids: ")
        screenshot = served["tmp"] / "operator-page.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("EDGE_IDS_UPDATE_DOCS"):  # the one in docs/ comes from this test
            shutil.copy(screenshot, DOCS / "operator-page.png")
    finally:
        browser.quit()


def test_one_push_per_incident_opened_and_per_new_device(served, replay):
    daemon, bodies = served["daemon"], served["receiver"].bodies
    opened = daemon.metric("edge_ids_incidents_total", event="opened")
    new = daemon.metric("edge_ids_new_devices_total")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and \
            daemon.metric("edge_ids_webhook_events_total", result="sent") < opened + new:
        time.sleep(0.2)
    kinds = [b["event"] for b in bodies]
    assert opened >= 1 and kinds.count("incident_opened") == opened
    assert kinds.count("new_device") == new >= 1
    push = next(b for b in bodies if b["event"] == "incident_opened"
                and b["device"]["mac"] == replay["hub"].mac)
    assert push["severity"] == "high" and push["title"].startswith("Incident ")
    assert BOT_PEER in push["message"] and push["detail"]["why"]
    assert push["time"].startswith("2021-03-")  # the flows' time
    assert daemon.metric("edge_ids_webhook_events_total", result="dropped") == 0
