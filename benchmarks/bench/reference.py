"""Our reference results: one column per machine, from the bench.json of each folder in
benchmarks/results/bench/ (x86_64 now; pi4 once someone runs the command below on a Pi 4).

    python -m edge_ids.benchmarks.bench.reference [--results benchmarks/results/bench]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from ...train.paths import RESULTS

COLUMNS = ("x86_64", "pi4")  # folders, in column order; others follow alphabetically
PI4_COMMAND = ("edge-ids deploy --device pi4 --host pi@PI --bundle B && edge-ids bench "
               "--device pi4 --host pi@PI --bundle B --out benchmarks/results/bench/pi4 "
               "--data-dir ../shared/datasets [--compare ...]")


def _lat(r, name, path, q):
    rt = r["runtimes"][name]
    return f"{rt['latency_us'][path][q]:,.1f} µs" if rt["available"] else "–"


def _tput(r, name):
    """Records/s at the largest batch measured, with the best thread count."""
    rt = r["runtimes"][name]
    if not rt["available"]:
        return "–"
    batch = max(p["batch"] for p in rt["throughput"])
    best = max((p for p in rt["throughput"] if p["batch"] == batch),
               key=lambda p: p["records_per_second"])
    return (f"{best['records_per_second']:,.0f} at batch {batch} "
            f"({best['threads'] or 'default'} thr.)")


ROWS = (
    ("machine", lambda r: f"{r['machine']['cpu']}, {r['machine']['cores']} cores, "
                          f"Python {r['machine']['python']}"),
    ("int8 LiteRT b=1 p50, feature row", lambda r: _lat(r, "litert-int8", "features", "p50")),
    ("int8 LiteRT b=1 p99, feature row", lambda r: _lat(r, "litert-int8", "features", "p99")),
    ("int8 LiteRT b=1 p50, raw record", lambda r: _lat(r, "litert-int8", "raw", "p50")),
    ("int8 LiteRT b=1 p99, raw record", lambda r: _lat(r, "litert-int8", "raw", "p99")),
    ("float LiteRT b=1 p50, feature row", lambda r: _lat(r, "litert-float", "features", "p50")),
    ("ONNX Runtime b=1 p50, feature row", lambda r: _lat(r, "onnxruntime", "features", "p50")),
    ("Keras direct call b=1 p50", lambda r: _lat(r, "keras", "features", "p50")),
    ("Keras / int8 LiteRT, b=1 p50", lambda r: (
        f"{r['runtimes']['keras']['ratio_to_int8']['latency_features_p50']:,.0f} ×"
        if r["runtimes"]["keras"]["available"] else "– (no TensorFlow on the device)")),
    ("int8 LiteRT records/s, largest batch (best threads)", lambda r: _tput(r, "litert-int8")),
    ("int8 LiteRT process start-up", lambda r: f"{r['runtimes']['litert-int8']['startup_seconds']:.2f} s"),
    ("int8 LiteRT RSS when ready", lambda r: f"{r['runtimes']['litert-int8']['ready_rss_bytes'] / 2**20:.1f} MiB"),
    ("Keras process start-up", lambda r: (f"{r['runtimes']['keras']['startup_seconds']:.2f} s"
                                          if r["runtimes"]["keras"]["available"] else "–")),
    ("Keras RSS when ready", lambda r: (f"{r['runtimes']['keras']['ready_rss_bytes'] / 2**20:.0f} MiB"
                                        if r["runtimes"]["keras"]["available"] else "–")),
    ("daemon: start-up to READY=1", lambda r: f"{r['daemon']['start_seconds']:.2f} s"),
    ("daemon: records/s end to end", lambda r: f"{r['daemon']['records_per_second']:,.0f}"),
    ("daemon: peak RSS", lambda r: f"{r['daemon']['peak_rss_bytes'] / 2**20:.1f} MiB"),
    ("int8 .tflite / gzip", lambda r: f"{r['models']['model.tflite']['bytes']:,} / "
                                      f"{r['models']['model.tflite']['gzip_bytes']:,} B"),
    ("float .tflite / gzip", lambda r: f"{r['models']['float.tflite']['bytes']:,} / "
                                       f"{r['models']['float.tflite']['gzip_bytes']:,} B"),
    ("macro-F1 float → int8", lambda r: f"{100 * r['accuracy_loss']['float_macro_f1']:.2f} → "
                                        f"{100 * r['accuracy_loss']['int8_macro_f1']:.2f} %"),
    ("accuracy float → int8", lambda r: f"{100 * r['accuracy_loss']['float_accuracy']:.2f} → "
                                        f"{100 * r['accuracy_loss']['int8_accuracy']:.2f} %"),
)


def table(results: Path) -> str:
    found = {p.parent.name: json.loads(p.read_text()) for p in results.glob("*/bench.json")}
    names = [c for c in COLUMNS if c in found or c == "pi4"] + sorted(set(found) - set(COLUMNS))
    lines = ["# Reference results of `edge-ids bench`", "",
             "One column per machine; each folder beside this file holds its full report "
             "(report.md, plots, bench.json). Written by `python -m edge_ids.benchmarks.bench."
             "reference`. Timings on shared machines move by tens of percent between runs; "
             "compare ratios within a column rather than absolute figures across columns.", "",
             "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, cell in ROWS:
        lines.append(f"| {label} | " + " | ".join(
            cell(found[n]) if n in found else "not measured yet" for n in names) + " |")
    lines += ["", "Commands:", ""]
    for n in names:
        lines.append(f"- {n}: `{found[n]['command']}`" if n in found else
                     f"- {n}: not run yet; on a Raspberry Pi 4 with 64-bit Raspberry Pi OS: "
                     f"`{PI4_COMMAND}`, then `python -m edge_ids.benchmarks.bench.reference`")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "bench")
    args = parser.parse_args(argv)
    text = table(args.results)
    (args.results / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
