"""A made-up WUSTL-IIoT-2021 file in the published column layout, written at test time.

NOT real data (none is available here): seeded random but plausible values, 40 rows over the
five classes (16 normal, 8 DoS, 6 Reconn, 5 CommInj, 5 Backdoor). It only exercises the loader;
no result may be drawn from it.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from edge_ids.train.datasets import wustl_iiot

CLASS_ROWS = {"normal": 16, "DoS": 8, "Reconn": 6, "CommInj": 5, "Backdoor": 5}
_TEXT = {"StartTime": lambda r: f"{1617195600 + r.random() * 3600:.6f}",
         "SrcAddr": lambda r: f"192.168.0.{r.integers(2, 250)}",
         "DstAddr": lambda r: f"192.168.0.{r.integers(2, 250)}",
         "Sport": lambda r: str(r.integers(1024, 65535)),
         "Dport": lambda r: str(r.choice([21, 80, 502, 44818])),
         "Proto": lambda r: str(r.choice([6, 17])),
         "sIpId": lambda r: str(r.integers(0, 65535)),
         "dIpId": lambda r: str(r.integers(0, 65535))}


@functools.cache
def iiot_sample() -> Path:
    """The file's path (written once per test session)."""
    rng = np.random.default_rng(2021)
    lines = [",".join(wustl_iiot.FEATURES + ("Traffic", "Target"))]
    for traffic, n in CLASS_ROWS.items():
        for _ in range(n):
            fields = {c: _TEXT[c](rng) if c in _TEXT else f"{rng.exponential(50):.6f}"
                      for c in wustl_iiot.FEATURES}
            fields["LastTime"] = f"{float(fields['StartTime']) + rng.random():.6f}"
            lines.append(",".join([fields[c] for c in wustl_iiot.FEATURES]
                                  + [traffic, "0" if traffic == "normal" else "1"]))
    path = Path(tempfile.mkdtemp(prefix="edge-ids-")) / "wustl_iiot_2021_sample.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
