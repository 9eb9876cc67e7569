"""One runtime, measured in a process of its own (so its imports, start-up and peak memory are
its own):

    python -m edge_ids.benchmarks.bench.measure RUNTIME WORK [--model FILE] [--spec FILE] ...

WORK holds records.csv (raw records, as the device reads them) and features.json. The process
prints `ready` once the runtime is imported and the model loaded (the parent times start-up to
that line), then one JSON line of figures:
  import and load seconds;
  per-record latency at batch 1, from feature rows and from raw lines (parse + features +
  model), every sample in microseconds;
  throughput (records/s) for each batch size and thread count;
  the predicted class of every record (the parent scores them against the labels).
numpy, the standard library and the runtime itself only: this runs on the device.
"""
from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from ...edge_runtime.model.features import FeatureTransform
from ...edge_runtime.ingest.records import RawSchema, parse_lines
from .runtimes import RUNTIMES, Predict

WARMUP_CALLS = 50
PREDICT_BATCH = 1024


def latency_from_features(predict: Predict, x: np.ndarray, n: int) -> list[float]:
    """Microseconds per call of predict on one feature row, for n rows."""
    rows = [x[i % len(x):i % len(x) + 1] for i in range(n + WARMUP_CALLS)]
    samples = []
    clock = time.perf_counter_ns
    for i, row in enumerate(rows):
        start = clock()
        predict(row)
        if i >= WARMUP_CALLS:
            samples.append((clock() - start) / 1e3)
    return samples


def latency_from_raw(predict: Predict, lines: list[bytes], spec: dict, n: int) -> list[float]:
    """Microseconds per record from its raw line: parse, feature transform, model."""
    schema, transform = RawSchema.from_spec(spec["raw"]), FeatureTransform(spec)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n + WARMUP_CALLS):
        start = clock()
        records, _ = parse_lines([lines[i % len(lines)]], schema)
        x, _ = transform.transform(records.columns, records.numeric)
        predict(x)
        if i >= WARMUP_CALLS:
            samples.append((clock() - start) / 1e3)
    return samples


def throughput(predict: Predict, x: np.ndarray, batch: int, seconds: float) -> dict:
    """Records per second at this batch size, over at least `seconds` and 5 calls."""
    rows = np.resize(x, (batch, x.shape[1])) if len(x) < batch else x[:batch]
    for _ in range(3):
        predict(rows)
    calls, start = 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - start < seconds:
        predict(rows)
        calls += 1
    elapsed = time.perf_counter() - start
    return {"batch": batch, "calls": calls, "seconds": elapsed,
            "records_per_second": batch * calls / elapsed}


def predict_all(predict: Predict, x: np.ndarray) -> list[int]:
    return np.concatenate([predict(x[i:i + PREDICT_BATCH]).argmax(axis=1)
                           for i in range(0, len(x), PREDICT_BATCH)]).tolist()


def measure(runtime_name: str, work: Path, model: Path, spec_path: Path, latency_records: int,
            batches: list[int], threads: list[int], seconds: float) -> dict:
    runtime = RUNTIMES[runtime_name]
    started = time.perf_counter()
    importlib.import_module(runtime.module)
    imported = time.perf_counter()
    predict = runtime.load(model, 1, max(batches + [PREDICT_BATCH]))
    loaded = time.perf_counter()
    ready_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before any records
    print("ready", flush=True)

    spec = json.loads(spec_path.read_text())
    lines = (work / "records.csv").read_bytes().splitlines(keepends=True)
    records, rejected = parse_lines(lines, RawSchema.from_spec(spec["raw"]))
    if rejected:
        raise SystemExit(f"{len(rejected)} benchmark records rejected, e.g. {rejected[0]}")
    x, _ = FeatureTransform(spec).transform(records.columns, records.numeric)
    result = {
        "runtime": runtime_name, "import_seconds": imported - started,
        "load_seconds": loaded - imported, "ready_rss_bytes": ready_rss,
        "latency_us": {"features": latency_from_features(predict, x, latency_records),
                       "raw": latency_from_raw(predict, lines, spec, latency_records)},
        "predictions": predict_all(predict, x),
        "throughput": []}
    for t in threads if runtime.sets_threads else [None]:
        predict_t = predict if t in (1, None) else runtime.load(model, t, max(batches))
        for batch in batches:
            result["throughput"].append({"threads": t} | throughput(predict_t, x, batch, seconds))
    return result


def measure_detector(bundle_dir: Path, work: Path, latency_records: int, batches: list[int],
                     seconds: float) -> dict:
    """A whole bundle through the edge runtime's Detector, as the daemon runs it: raw line in,
    verdict out (for a hybrid: both models and the threshold). The predictions are verdict
    indices (a hybrid's Unknown is one past the classes)."""
    from ...edge_runtime.model.bundle import load_bundle
    from ...edge_runtime.model.detector import Detector

    started = time.perf_counter()
    detector = Detector(load_bundle(bundle_dir), max_batch=max(batches + [PREDICT_BATCH]))
    detector.warm_up()
    loaded = time.perf_counter()
    ready_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("ready", flush=True)
    lines = (work / "records.csv").read_bytes().splitlines(keepends=True)
    records, rejected = parse_lines(lines, detector.schema)
    if rejected:
        raise SystemExit(f"{len(rejected)} benchmark records rejected, e.g. {rejected[0]}")
    samples, clock = [], time.perf_counter_ns
    for i in range(latency_records + WARMUP_CALLS):
        start = clock()
        detector.detect(parse_lines([lines[i % len(lines)]], detector.schema)[0])
        if i >= WARMUP_CALLS:
            samples.append((clock() - start) / 1e3)
    result = {"runtime": "detector", "import_seconds": 0.0, "load_seconds": loaded - started,
              "ready_rss_bytes": ready_rss, "latency_us": {"raw": samples},
              "predictions": np.concatenate([
                  detector.detect(records.take(np.arange(i, min(i + PREDICT_BATCH,
                                                                len(records))))).verdicts
                  for i in range(0, len(records), PREDICT_BATCH)]).tolist(),
              "throughput": []}
    for batch in batches:
        part = records.take(np.resize(np.arange(len(records)), batch))
        rate = throughput(lambda _: detector.detect(part), np.zeros((batch, 1)), batch, seconds)
        result["throughput"].append({"threads": 1} | rate)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runtime", choices=sorted(RUNTIMES) + ["detector"],
                        help="a runtime of benchmarks/runtimes.py, or `detector`: a whole "
                             "bundle (--model DIR) through the edge runtime, raw lines in")
    parser.add_argument("work", type=Path)
    parser.add_argument("--model", type=Path, help="default: WORK/<the runtime's model file>")
    parser.add_argument("--spec", type=Path, help="default: WORK/features.json")
    parser.add_argument("--latency-records", type=int, default=2000)
    parser.add_argument("--batches", default="1,16,256,1024")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--seconds", type=float, default=0.3,
                        help="time spent on each throughput point")
    args = parser.parse_args(argv)
    if args.runtime == "detector":
        result = measure_detector(args.model, args.work, args.latency_records,
                                  [int(b) for b in args.batches.split(",")], args.seconds)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    model = args.model or args.work / RUNTIMES[args.runtime].model_file
    result = measure(args.runtime, args.work, model, args.spec or args.work / "features.json",
                     args.latency_records, [int(b) for b in args.batches.split(",")],
                     [int(t) for t in args.threads.split(",")], args.seconds)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
