"""`edge-ids bench`, host side: prepare what to measure, have benchmarks/device.py measure it
here or on the target over SSH (with the runtime `edge-ids deploy` installed there), and turn
the figures into the report (benchmarks/report.py).

The work folder it sends holds the bundle, the same network as float32 TFLite and (if tf2onnx is
installed) ONNX, converted here from the bundle's Keras model, the test records as raw CSV lines
(what a device reads) and plan.json. Labels never leave the host: the target returns predicted
classes and the host scores them with scikit-learn.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ...edge_runtime.model.bundle import load_bundle
from ...edge_runtime.ingest.records import Records, RawSchema
from .runtimes import RUNTIMES

Log = Callable[[str], None]


class BenchError(Exception):
    """The benchmark cannot run; the message says why and what to do."""


class BenchInputError(BenchError):
    """A file it was given cannot be used (no float model, another dataset's bundle)."""


@dataclass
class BenchOptions:
    bundle: Path
    out: Path
    keras: Path | None = None  # default: model.keras beside the bundle (train/pipeline output)
    data_dir: str | None = None
    test_set: str | None = None  # default: the dataset's first
    records: int | None = None  # the first N test records (default: all)
    latency_records: int = 2000
    batches: tuple[int, ...] = (1, 16, 256, 1024)
    threads: tuple[int, ...] | None = None  # default: 1, 2, 4 (up to the profile's cores)
    seconds: float = 0.3  # per throughput point
    compare: tuple[Path, ...] = ()  # more int8 bundles of the same dataset (size vs accuracy)
    host: str | None = None
    device: str | None = None  # profile name, for the report's column and the thread sweep
    prefix: str = "/opt/edge-ids"
    ssh_config: Path | None = None
    ssh_options: tuple[str, ...] = field(default_factory=tuple)


def keras_path(opts: BenchOptions, manifest: dict | None = None) -> Path:
    """--keras, or model.keras beside the bundle, or (a hybrid from `edge-ids learn`) beside
    the classifier bundle it was made with."""
    path = opts.keras or Path(opts.bundle).parent / "model.keras"
    source = ((manifest or {}).get("classifier") or {}).get("source")
    if not opts.keras and not path.is_file() and source:
        path = Path(source).parent / "model.keras"
    if not path.is_file():
        raise BenchInputError(f"no float model: {path} does not exist. The side-by-side needs "
                              f"the Keras model the bundle was made from; pass --keras PATH "
                              f"(the model.keras that `edge-ids train` or `pipeline` wrote)")
    return path


def thread_counts(opts: BenchOptions) -> list[int]:
    """--threads, or powers of two up to the device profile's cores (1, 2, 4 without one); the
    device drops those above the cores it has."""
    if opts.threads:
        return list(opts.threads)
    from ...devices.profiles import load_profile

    cores = load_profile(opts.device).cores if opts.device else 4
    return [t for t in (1, 2, 4, 8) if t <= cores]


def records_csv(records: Records, schema: RawSchema) -> bytes:
    """Records back to the raw CSV lines a device reads (float repr round-trips exactly;
    columns the model never reads are left empty)."""
    fields = []
    for name, kind in zip(schema.names, schema.types):
        if kind == "numeric":
            fields.append([repr(v) for v in records.columns[name].tolist()])
        elif kind == "categorical":
            fields.append(records.columns[name].tolist())
        else:
            fields.append([""] * len(records))
    return "".join(",".join(row) + "\n" for row in zip(*fields)).encode()


def prepare(opts: BenchOptions, work: Path, log: Log) -> dict:
    """Fill the work folder; return what the host keeps (labels, sizes, names)."""
    import keras

    from ...compress.quantize import convert_float
    from ...train.datasets import load_test_set

    bundle = load_bundle(opts.bundle)
    manifest = bundle.manifest
    if bundle.spec is None:
        raise BenchError(f"{opts.bundle} is an anomaly-only bundle: bench compares the runtimes "
                         f"of a classifier. Measure a hybrid (edge-ids learn --classifier B) or "
                         f"the daemon with it: python -m edge_ids.benchmarks.harness.daemon --bundle B")
    (work / "bundle").mkdir()
    for name, data in bundle.files.items():
        (work / "bundle" / name).write_bytes(data)
    shutil.copy(work / "bundle" / "model.tflite", work / "model.tflite")
    shutil.copy(work / "bundle" / "features.json", work / "features.json")
    detectors = {}
    if bundle.anomaly is not None:  # the hybrid beside its classifier alone
        classifier_only(bundle, work / "classifier-bundle")
        detectors = {"classifier": "classifier-bundle", "hybrid": "bundle"}
    source = keras_path(opts, manifest)
    shutil.copy(source, work / "model.keras")
    model = keras.saving.load_model(source, compile=False)
    if model.inputs[0].shape[1] != len(bundle.spec["selected"]):
        raise BenchInputError(f"{source} takes {model.inputs[0].shape[1]} inputs, the "
                              f"bundle's feature spec {len(bundle.spec['selected'])}: not the "
                              f"bundle's model")
    (work / "float.tflite").write_bytes(convert_float(model))
    onnx = onnx_model(model)
    if onnx:
        (work / "model.onnx").write_bytes(onnx)

    data = load_test_set(manifest["dataset"], opts.data_dir, opts.test_set)  # no training file
    test_name = opts.test_set or next(iter(data.tests))
    if test_name not in data.tests:
        raise BenchError(f"no test set {test_name!r}; {data.name} has {', '.join(data.tests)}")
    test = data.tests[test_name]
    n = min(opts.records or len(test.y), len(test.y))
    (work / "records.csv").write_bytes(records_csv(test.records.take(np.arange(n)), data.schema))
    log(f"{n:,} records of {test_name}; models: "
        + ", ".join(p.name for p in sorted(work.glob("*.*")) if p.suffix != ".csv"))

    compare = []
    for i, path in enumerate(opts.compare, 1):
        other = load_bundle(path)
        if other.manifest["dataset"] != manifest["dataset"]:
            raise BenchInputError(f"{path} is a {other.manifest['dataset']} bundle; --compare "
                                  f"takes bundles of the same dataset ({manifest['dataset']})")
        (work / f"compare-{i}").mkdir()
        for name, data_ in other.files.items():
            (work / f"compare-{i}" / name).write_bytes(data_)
        compare.append(f"compare-{i}")
    plan = {"runtimes": list(RUNTIMES), "latency_records": opts.latency_records,
            "batches": list(opts.batches), "threads": thread_counts(opts),
            "seconds": opts.seconds, "compare": compare, "detectors": detectors}
    (work / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    return {"y": test.y[:n], "classes": list(data.classes), "normal": data.normal,
            "model_sha256": bundle.model_sha256,
            "test_set": test_name, "parameters": int(model.count_params()),
            "keras_path": str(source), "manifest": manifest,
            "compare": {f"compare-{i}": {"path": str(p), "manifest": load_bundle(p).manifest}
                        for i, p in enumerate(opts.compare, 1)}}


def classifier_only(bundle, dest: Path) -> None:
    """The hybrid's classifier as a bundle of its own (same model, same spec, argmax)."""
    from ...compress.bundle_writer import write_files
    from ...edge_runtime.model.bundle import FEATURES_FILE, MODEL_FILE

    files = bundle.files
    keep = ("dataset", "raw_schema", "class_names", "normal_class", "model", "training")
    write_files(dest, {name: files[name] for name in (MODEL_FILE, FEATURES_FILE)},
                {k: bundle.manifest[k] for k in keep if k in bundle.manifest})


def onnx_model(model) -> bytes | None:
    """The Keras model as ONNX through tf2onnx (the `onnx` extra), or None without it.
    `tf2onnx.convert.from_keras` fails on Keras 3 models; from_function works (TOOLCHAIN §6)."""
    try:
        import tf2onnx
    except ImportError:
        return None
    import tensorflow as tf

    from ...compress.quiet import quiet_native_output

    signature = [tf.TensorSpec((None, model.inputs[0].shape[1]), tf.float32, name="x")]
    with quiet_native_output():
        proto, _ = tf2onnx.convert.from_function(
            tf.function(lambda x: model(x, training=False)), input_signature=signature,
            opset=17)
    return proto.SerializeToString()


def measure_here(work: Path, log: Log) -> dict:
    """benchmarks/bench/device.py in a process of this python, its progress lines passed on."""
    process = subprocess.Popen([sys.executable, "-m", "edge_ids.benchmarks.bench.device", str(work)],
                               stderr=subprocess.PIPE, text=True)
    tail = []
    for line in process.stderr:
        tail = (tail + [line])[-30:]
        if line.startswith("["):
            log("  " + line.rstrip())
    if process.wait() != 0:
        raise BenchError("measuring failed:\n" + "".join(tail).rstrip())
    return json.loads((work / "device.json").read_text())


def measure_remote(opts: BenchOptions, work: Path, log: Log) -> dict:
    """The same, on the target, with the python of the runtime `edge-ids deploy` installed."""
    from ...devices.ssh import Remote, SSHError

    python = f"{opts.prefix.rstrip('/')}/current/venv/bin/python"
    remote = Remote(opts.host, opts.ssh_config, opts.ssh_options)
    try:
        found = remote.run(f"{shlex.quote(python)} -c 'import edge_ids.benchmarks.bench.device'",
                           check=False)
        if found.returncode != 0:
            reason = (found.stderr or "").strip().splitlines()[-1:] or ["not found"]
            raise BenchError(
                f"{opts.host} has no edge-ids runtime with the benchmark at {python} "
                f"({reason[0]}). Install it first: edge-ids deploy --device {opts.device or 'pi4'} --host {opts.host} "
                f"--bundle {opts.bundle}" + (f" --prefix {opts.prefix}"
                                             if opts.prefix != "/opt/edge-ids" else ""))
        remote_dir = remote.run("mktemp -d /tmp/edge-ids-bench.XXXXXX").stdout.strip()
        try:
            log(f"  copying {sum(p.stat().st_size for p in work.rglob('*') if p.is_file()):,} "
                f"bytes to {opts.host}:{remote_dir}")
            remote.upload(work, remote_dir)
            target = f"{remote_dir}/{work.name}"
            lines = []

            def on_line(line: str) -> None:
                lines.append(line)
                if line.startswith("["):
                    log("  " + line)

            code = remote.stream(f"{shlex.quote(python)} -m edge_ids.benchmarks.bench.device "
                                 f"{shlex.quote(target)}", on_line)
            if code != 0:
                raise BenchError(f"measuring on {opts.host} failed:\n" + "\n".join(lines[-30:]))
            return json.loads(remote.run(f"cat {shlex.quote(target)}/device.json").stdout)
        finally:
            remote.run(f"rm -rf {shlex.quote(remote_dir)}", check=False)
    except SSHError as e:
        raise BenchError(str(e)) from None
    finally:
        remote.close()


def run_bench(opts: BenchOptions, log: Log = print, command: str = "") -> dict:
    """Prepare, measure, score, write OUT/bench.json, OUT/report.md and the plots."""
    from .report import assemble, write_report

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edge-ids-bench-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        log("[1/3] prepare: bundle, float TFLite and ONNX from the Keras model, test records")
        kept = prepare(opts, work, log)
        where = opts.host or "this machine"
        log(f"[2/3] measure on {where}")
        device = measure_remote(opts, work, log) if opts.host else measure_here(work, log)
        sizes = {p.name: p.read_bytes() for p in work.glob("*.*")
                 if p.suffix in (".keras", ".tflite", ".onnx")}
        sizes |= {f"{folder}/model.tflite": (work / folder / "model.tflite").read_bytes()
                  for folder in kept["compare"]}
    log("[3/3] score and write the report")
    report = assemble(device, kept, sizes, opts, command,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_report(report, device, opts.out)
    log(f"done in {time.monotonic() - started:.0f} s: {opts.out / 'report.md'}")
    return report
