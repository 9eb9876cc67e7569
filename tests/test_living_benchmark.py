"""The living-normal benchmark (benchmarks/detection/living.py): what it counts as a detection
and as a benign join's incident (fast, on made-up events), and the whole benchmark on one seed
(slow: `pytest -m slow`)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from edge_ids.benchmarks.detection import living_study as study

T0 = 1_615_600_000.0
BOT, OTHER = "02:00:00:00:00:01", "02:00:00:00:00:02"


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def incident(key: str, opened: float, peers: list[str], state: str = "open") -> dict:
    return {"event_type": "incident", "timestamp": stamp(opened), "device": {"key": key},
            "incident": {"id": 1, "state": state, "opened": stamp(opened),
                         "last_flow": stamp(opened + 60), "peers": [{"ip": p, "flows": 3}
                                                                     for p in peers]}}


def test_a_detection_opens_inside_the_injections_time_and_names_its_peer():
    start, end = T0 + 3600, T0 + 7200
    peers = ["185.244.25.235"]
    events = [incident(BOT, start - 600, peers),  # before the bot: not it
              incident(OTHER, start + 30, peers),  # another device
              incident(BOT, start + 40, ["52.1.1.1"]),  # its own cloud, not the bot's peer
              incident(BOT, end + 2 * study.CLOSE_AFTER, peers)]  # long after the bot
    assert not study.injection(events, BOT, start, end, peers)["detected"]
    events.append(incident(BOT, start + 75, peers))
    got = study.injection(events, BOT, start, end, peers)
    assert got["detected"] and got["seconds"] == pytest.approx(75, abs=0.01)


def test_joins_count_first_day_incidents_apart_from_later_ones():
    events = [{"event_type": "new_device", "timestamp": stamp(T0), "device": {"key": BOT}},
              incident(BOT, T0 + 3600, []), incident(BOT, T0 + 3 * 86400, []),
              incident(BOT, T0 + 3 * 86400 + 600, [], state="closed")]
    found = study.joins(events, {BOT: T0}, {BOT: T0 + 8 * 86400})[BOT]
    assert (found["first_day"], found["after"], found["named"]) == (1, 1, 1)
    assert found["weeks_after"] == pytest.approx(1.0)


@pytest.mark.slow
def test_the_benchmark_on_one_seed_holds_its_restart_and_reload_checks(data_dir, tmp_path):
    from edge_ids.benchmarks.detection import living
    from edge_ids.benchmarks.harness import site_scenarios as incident_scenarios

    if incident_scenarios.missing_tools():
        pytest.skip(incident_scenarios.missing_tools())
    assert living.main(["--data-dir", str(data_dir), "--out", str(tmp_path), "--seeds",
                        "0"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["runs"] == 56 and summary["runs_failed"] == 0
    assert summary["announced_twice"] == 0 and summary["ids_reused"] == 0
    assert all(summary["identical_before_reload"])
    assert summary["infected_graduated"] == 0 and summary["detected_share"] >= 0.9
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert "## Acceptance" in (tmp_path / "results.md").read_text()
