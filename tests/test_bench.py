"""`edge-ids bench` on this machine: the report's structure, every figure measured in the run
(sample counts, percentiles recomputed from the samples, accuracies recomputed independently),
and never a timing asserted. The same report over ssh is in test_deploy.py."""
from __future__ import annotations

import gzip
import importlib.util
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from edge_ids.benchmarks.bench.host import records_csv
from edge_ids.benchmarks.bench.runtimes import RUNTIMES
from edge_ids.cli import main
from edge_ids.edge_runtime import load_bundle
from edge_ids.edge_runtime.model.classifier import Classifier
from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.train.datasets import load_dataset
from edge_ids.train.evaluate import classification_metrics

LATENCY_CALLS = 150
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx"))
EXPECTED = {"keras", "litert-float", "litert-int8"} | ({"onnxruntime"} if HAS_ONNX else set())


def bench_args(bundle, out, data_dir, *extra) -> list[str]:
    return ["bench", "--bundle", str(bundle), "--out", str(out), "--data-dir", str(data_dir),
            "--latency-records", str(LATENCY_CALLS), "--batches", "1,64", "--threads", "1,2",
            "--seconds", "0.05", *extra]


@pytest.fixture(scope="module")
def bench(small_pipeline, other_bundle, data_dir, tmp_path_factory):
    """One run, with a data folder that holds the test file only: bench never reads the
    training file."""
    out = tmp_path_factory.mktemp("bench")
    only_test = tmp_path_factory.mktemp("only-test")
    (only_test / "KDDTest+.txt.gz").symlink_to(data_dir / "nsl-kdd" / "KDDTest+.txt.gz")
    result = CliRunner().invoke(main, bench_args(small_pipeline[0] / "bundle", out, only_test,
                                                 "--compare", str(other_bundle)),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "bench.json").read_text()), out, result.output


def numbers(tree, path=""):
    """Every number in a nested report, with where it is."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_the_report_has_every_figure_and_each_is_positive(bench):
    report, out, output = bench
    assert {n for n, r in report["runtimes"].items() if r["available"]} == EXPECTED
    for name in EXPECTED:
        r = report["runtimes"][name]
        for key in ("startup_seconds", "import_seconds", "load_seconds", "ready_rss_bytes",
                    "peak_rss_bytes", "accuracy", "macro_f1", "latency_us", "throughput",
                    "ratio_to_int8"):
            assert key in r, (name, key)
        assert set(r["latency_us"]) == {"features", "raw"}
        assert {"p50", "p95", "p99"} <= set(r["latency_us"]["features"])
    for section in ("runtimes", "models", "daemon", "compare", "accuracy_loss"):
        found = [(p, v) for p, v in numbers(report[section])
                 if not p.endswith(("drop_points", ".fpr", "sparsity")) and ".recall." not in p]
        assert found and all(v > 0 for _, v in found), [f for f in found if f[1] <= 0]
    for name in ("bench.json", "report.md", "latency_us.json"):
        assert (out / name).stat().st_size > 0
    for name in ("latency.png", "accuracy_size.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    for name in EXPECTED:
        assert report["runtimes"][name]["label"] in md
    assert "× int8" in md and "x faster than calling Keras directly" in output
    started = re.findall(r"^\s*(\[\d/\d\]) .+ \.\.\.$", output, re.M)
    assert len(started) >= 5
    for step in started:  # every step of the measuring that starts says when it is done
        assert re.search(rf"^\s*{re.escape(step)} .+ done in [\d.]+ s$", output, re.M), step


def test_the_accuracy_size_plot_shows_every_model_at_its_real_size(bench):
    from edge_ids.benchmarks.bench.report import accuracy_size_points, f1_axis_range

    report, out, _ = bench
    points = accuracy_size_points(report)
    labels = [label for label, _, _ in points]
    for name in EXPECTED:
        assert report["runtimes"][name]["label"] in labels
    assert len(points) == len(EXPECTED) + len(report["compare"])
    f1 = [v for _, _, v in points]
    low, high = f1_axis_range(f1)
    assert high - low >= 10 and low <= min(f1) and max(f1) <= high


def test_latency_figures_come_from_this_runs_samples(bench):
    report, out, _ = bench
    samples = json.loads((out / "latency_us.json").read_text())
    assert set(samples) == EXPECTED
    for name, paths in samples.items():
        for path, values in paths.items():
            values = np.array(values)
            assert len(values) == LATENCY_CALLS and values.std() > 0  # measured, not a constant
            summary = report["runtimes"][name]["latency_us"][path]
            assert summary["n"] == LATENCY_CALLS
            for q in (50, 95, 99):
                assert summary[f"p{q}"] == pytest.approx(np.percentile(values, q))
            assert summary["p50"] <= summary["p95"] <= summary["p99"]
        ratio = report["runtimes"][name]["ratio_to_int8"]["latency_features_p50"]
        assert ratio == pytest.approx(np.median(paths["features"])
                                      / np.median(samples["litert-int8"]["features"]))
    cores = report["machine"]["cores"]
    for name in EXPECTED - {"keras"}:
        points = {(p["threads"], p["batch"]) for p in report["runtimes"][name]["throughput"]}
        assert points == {(t, b) for t in (1, 2) if t <= cores for b in (1, 64)}
    assert {p["threads"] for p in report["runtimes"]["keras"]["throughput"]} == {None}


def test_memory_tells_tensorflow_from_the_edge_runtime(bench):
    """Not a timing: a process that imported TensorFlow holds hundreds of MB more."""
    runtimes = bench[0]["runtimes"]
    assert runtimes["keras"]["ready_rss_bytes"] > 3 * runtimes["litert-int8"]["ready_rss_bytes"]
    assert runtimes["keras"]["ready_rss_bytes"] > 200 * 2**20
    assert "tensorflow-cpu" in bench[0]["machine"]["versions"]  # measured with the host's python


def test_accuracy_and_sizes_match_an_independent_computation(bench, small_pipeline, data_dir):
    import keras

    report = bench[0]
    folder = small_pipeline[0]
    data = load_dataset("nsl-kdd", data_dir, train_set="KDDTrain+_20Percent")
    test = data.tests["KDDTest+"]
    assert report["bundle"]["records"] == len(test.y) and report["bundle"]["test_set"] == "KDDTest+"
    classes = list(data.classes)
    int8 = classification_metrics(
        test.y, Classifier(load_bundle(folder / "bundle")).classify(test.records).classes,
        classes, data.normal)
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    x, _ = FeatureTransform(load_bundle(folder / "bundle").spec).transform(
        test.records.columns, test.records.numeric)
    float_ = classification_metrics(test.y, model.predict(x, verbose=0).argmax(1), classes,
                                    data.normal)
    rt = report["runtimes"]
    assert rt["litert-int8"]["accuracy"] == pytest.approx(int8["accuracy"])
    assert rt["litert-int8"]["macro_f1"] == pytest.approx(int8["macro_f1"])
    assert rt["keras"]["accuracy"] == pytest.approx(float_["accuracy"], abs=1e-4)
    loss = report["accuracy_loss"]
    assert loss["float"] == "keras"
    assert loss["macro_f1_drop_points"] == pytest.approx(
        100 * (rt["keras"]["macro_f1"] - rt["litert-int8"]["macro_f1"]))
    model_bytes = (folder / "bundle" / "model.tflite").read_bytes()
    assert report["models"]["model.tflite"]["bytes"] == len(model_bytes)
    assert report["models"]["model.tflite"]["gzip_bytes"] == len(
        gzip.compress(model_bytes, compresslevel=9, mtime=0))
    assert report["models"]["float.tflite"]["bytes"] > 2 * len(model_bytes)  # float32 vs int8
    assert report["models"]["model.tflite"]["parameters"] == model.count_params()
    (compared,) = report["compare"].values()
    assert 0 < compared["macro_f1"] < 1 and compared["model_file"] in report["models"]


def test_every_runtime_gives_the_bundles_classes(small_pipeline, kdd_test_lines, data_dir,
                                                 tmp_path):
    """The runtime family: each member loads its model and classifies like the others."""
    from edge_ids.benchmarks.bench.host import prepare, BenchOptions

    opts = BenchOptions(bundle=small_pipeline[0] / "bundle", out=tmp_path / "out", records=500,
                        data_dir=str(data_dir))
    work = tmp_path / "work"
    work.mkdir()
    prepare(opts, work, log=lambda _: None)
    spec = json.loads((work / "features.json").read_text())
    records, _ = parse_lines(kdd_test_lines[:500], RawSchema.from_spec(spec["raw"]))
    x, _ = FeatureTransform(spec).transform(records.columns, records.numeric)
    reference = RUNTIMES["keras"].load(work / "model.keras")(x).argmax(1)
    for name, runtime in RUNTIMES.items():
        if name == "onnxruntime" and not HAS_ONNX:
            assert runtime.missing(work)
            continue
        assert runtime.missing(work) is None, name
        probabilities = runtime.load(work / runtime.model_file, threads=1, max_batch=64)(x)
        assert probabilities.shape == (500, 5), name
        assert np.mean(probabilities.argmax(1) == reference) >= 0.98, name
        (work / runtime.model_file).rename(work / "moved")
        assert "no " + runtime.model_file in runtime.missing(work)
        (work / "moved").rename(work / runtime.model_file)


def test_records_written_for_the_device_parse_to_the_same_features(data_dir, small_pipeline):
    data = load_dataset("nsl-kdd", data_dir, train_set="KDDTrain+_20Percent")
    test = data.tests["KDDTest-21"]
    spec = load_bundle(small_pipeline[0] / "bundle").spec
    lines = records_csv(test.records, data.schema).splitlines(keepends=True)
    parsed, rejected = parse_lines(lines, RawSchema.from_spec(spec["raw"]))
    assert not rejected and len(parsed) == len(test.y)
    transform = FeatureTransform(spec)
    assert np.array_equal(transform.transform(parsed.columns, parsed.numeric)[0],
                          transform.transform(test.records.columns, test.records.numeric)[0])


def test_bad_input_is_a_clear_error(small_pipeline, bundle_copy, data_dir, tmp_path):
    runner = CliRunner()
    no_float = runner.invoke(main, bench_args(bundle_copy, tmp_path / "a", data_dir))
    assert no_float.exit_code == 5 and "no float model" in no_float.output
    assert "--keras" in no_float.output
    wrong = runner.invoke(main, bench_args(bundle_copy, tmp_path / "b", data_dir, "--keras",
                                           str(tmp_path / "missing.keras")))
    assert wrong.exit_code == 2 and "does not exist" in wrong.output
    device = runner.invoke(main, bench_args(small_pipeline[0] / "bundle", tmp_path / "c",
                                            data_dir, "--device", "pi9"))
    assert device.exit_code == 2 and "pi4" in device.output  # lists the known profiles
    test_set = runner.invoke(main, bench_args(small_pipeline[0] / "bundle", tmp_path / "d",
                                              data_dir, "--test-set", "KDDTest-99"))
    assert test_set.exit_code == 2 and "KDDTest+, KDDTest-21" in test_set.output
    assert not (tmp_path / "d").exists()


def test_the_reference_table_has_a_column_per_machine_and_one_waiting_for_a_pi(bench, tmp_path):
    from edge_ids.benchmarks.bench.reference import table

    report, out, _ = bench
    (tmp_path / "x86_64").mkdir()
    (tmp_path / "x86_64" / "bench.json").write_bytes((out / "bench.json").read_bytes())
    text = table(tmp_path)
    assert "| figure | x86_64 | pi4 |" in text
    p50 = report["runtimes"]["litert-int8"]["latency_us"]["features"]["p50"]
    assert f"{p50:,.1f} µs | not measured yet |" in text
    assert "edge-ids bench --device pi4 --host" in text


@pytest.mark.slow  # a second bench run, about 40 s: `pytest -m slow tests/test_bench.py`
def test_a_hybrid_is_measured_beside_its_classifier_alone(learned_nsl_kdd, data_dir, tmp_path):
    """The anomaly channel's cost through the edge runtime and the daemon, in the same run;
    its verdicts scored independently here (Unknown: an alarm, and wrong for the class)."""
    result = CliRunner().invoke(main, bench_args(learned_nsl_kdd["hybrid"], tmp_path, data_dir,
                                                 "--records", "3000"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    hybrid = load_bundle(learned_nsl_kdd["hybrid"])
    assert report["bundle"]["detector"] == "hybrid"
    assert report["bundle"]["model_sha256"] == hybrid.model_sha256
    d = report["detectors"]
    assert set(d) == {"classifier", "hybrid"}
    test = load_dataset("nsl-kdd", data_dir).tests["KDDTest+"]
    from edge_ids.edge_runtime import Detector

    detector = Detector(hybrid)
    verdicts = detector.detect(test.records.take(np.arange(3000))).verdicts
    y = test.y[:3000]
    assert d["hybrid"]["detection_rate"] == pytest.approx(np.mean(verdicts[y != 0] != 0))
    assert d["hybrid"]["fpr"] == pytest.approx(np.mean(verdicts[y == 0] != 0))
    alone = classification_metrics(y, Classifier(hybrid).classify(
        test.records.take(np.arange(3000))).classes, list(nsl_kdd_classes()), "Normal")
    assert d["classifier"]["accuracy"] == pytest.approx(alone["accuracy"])
    for name in ("classifier", "hybrid"):
        assert d[name]["latency_us"]["raw"]["n"] == LATENCY_CALLS
        assert all(t["records_per_second"] > 0 for t in d[name]["throughput"])
        assert d[name]["ready_rss_bytes"] > 10 * 2**20
    assert report["daemon"]["records"] == report["daemon_classifier"]["records"] == 3000
    md = (tmp_path / "report.md").read_text()
    assert "## The hybrid beside its classifier alone" in md
    assert "The hybrid daemon keeps" in md


def nsl_kdd_classes():
    from edge_ids.train.datasets import nsl_kdd

    return nsl_kdd.CLASSES


def test_a_virtual_machine_says_its_timings_are_not_the_hardwares(bench):
    """The report says what systemd-detect-virt says about this machine; and the banner names
    qemu's software emulation apart from a hypervisor."""
    import subprocess

    from edge_ids.benchmarks.bench.report import virtual_banner

    report, out, _ = bench
    detected = subprocess.run(["systemd-detect-virt", "--vm"], capture_output=True,
                              text=True).stdout.strip() or "none"
    virt = report["machine"]["virtualization"]
    assert virt["kind"] == detected or (detected == "none" and virt["qemu_virt_machine"])
    assert report["timings_are_the_hardwares"] is (not virt["virtual"])
    md = (out / "report.md").read_text()
    assert ("its timings are not the hardware's" in md) is virt["virtual"]
    emulated = virtual_banner({"virtualization": {"kind": "qemu", "virtual": True,
                                                  "emulated": True}})
    hypervisor = virtual_banner({"virtualization": {"kind": "kvm", "virtual": True,
                                                    "emulated": False}})
    assert "every instruction translated" in emulated[0]
    assert "kvm" in hypervisor[0] and "translated" not in hypervisor[0]
    assert virtual_banner({"virtualization": {"kind": "none", "virtual": False}}) == []
