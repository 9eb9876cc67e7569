"""The compression study script end to end, in its quick form (slow: ~3 min)."""
from __future__ import annotations

import json

import pytest

from edge_ids.benchmarks.papers import compression


@pytest.mark.slow
def test_quick_study_writes_every_variant(data_dir, tmp_path):
    compression.main(["--data-dir", str(data_dir), "--out", str(tmp_path), "--models", "fnn",
                      "--seeds", "0", "--epochs", "1", "--quick"])
    table = json.loads((tmp_path / "results.json").read_text())["table"]["fnn"]
    rows = table["rows"]
    assert set(rows) == set(compression.VARIANTS)
    assert rows["pruned 50 %"]["sparsity"][0] == pytest.approx(0.5, abs=0.01)
    assert rows["pruned 80 % + int8"]["sparsity"][0] >= 0.79
    assert rows["pruned 80 %"]["gzip_bytes"][0] < rows["pruned 50 %"]["gzip_bytes"][0] \
        < rows["float"]["gzip_bytes"][0]
    assert rows["int8"]["tflite_bytes"][0] < 0.5 * rows["float"]["tflite_bytes"][0]
    assert all(0 < r["macro_f1"][0] <= 1 for r in rows.values())
    markdown = (tmp_path / "results.md").read_text()
    assert all(f"| {v} |" in markdown for v in compression.VARIANTS)
    assert (tmp_path / "compression.png").stat().st_size > 10_000
