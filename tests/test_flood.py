"""A short flood (the benchmark's own code, edge_ids.benchmarks.harness.flood): ten times what one core
classifies, offered for 8 s through the unix socket and through stdin. The daemon holds its
writers back instead of dropping or buffering: nothing is dropped, memory stays flat, the
metrics page answers every second, alerts flow every second, and it is alive and exits 0 at the
end. The minutes-long run at 2x and 10x is the benchmark (README, "Under a flood")."""
from __future__ import annotations

import os

import pytest

from edge_ids.benchmarks.harness import flood

SECONDS = 8


@pytest.fixture(scope="module")
def setting(small_pipeline, kdd_test_lines):
    bundle = small_pipeline[0] / "bundle"
    cpus = sorted(os.sched_getaffinity(0))
    rate = flood.one_core_rate(bundle, kdd_test_lines, cpus[-1], records=50_000)
    return bundle, cpus[-1], rate


@pytest.mark.parametrize("input_kind", ["unix", "stdin"])
def test_ten_times_one_cores_rate_is_held_back_not_dropped(setting, kdd_test_lines, input_kind,
                                                           tmp_path):
    bundle, cpu, rate = setting
    r = flood.flood(bundle, kdd_test_lines, 10 * rate, SECONDS, input_kind, cpu, tmp_path)
    print(flood.row(r, 10))
    assert r["alive_at_end"] and r["exit_code"] == 0 and r["writer_error"] is None
    assert r["dropped"] == 0 and r["classified_total"] == r["written"] > 0
    assert r["blocked_share"] > 0.3  # the writer was held back most of the time
    assert r["accepted_per_second"] < 0.5 * r["offered_per_second"]
    rss = [s["rss_bytes"] for s in r["samples"]]
    assert max(rss) - rss[0] < 8 * 2**20 and r["rss_peak_bytes"] < 200 * 2**20
    assert r["metrics_answered"] >= SECONDS - 1 and r["metrics_max_seconds"] < 2
    assert r["alerts_grew_every_second"]
    assert r["drain_seconds"] < 10  # what was accepted but waiting was little
