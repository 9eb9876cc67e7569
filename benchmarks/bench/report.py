"""The bench report: the device's raw figures scored and summarised (bench.json), a markdown
table for people (report.md), every latency sample (latency_us.json) and two pictures: latency
histograms per runtime, and accuracy against model size for the compression variants.

Times are compared as ratios to the int8 LiteRT model measured in the same run, because these
machines are shared and noisy: an absolute microsecond figure moves from run to run, the ratio
much less."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...compress.size_report import gzip_size
from ...train.evaluate import classification_metrics
from .runtimes import RUNTIMES

INT8 = "litert-int8"


def latency_summary(samples: list[float]) -> dict:
    a = np.asarray(samples)
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def _scored(r: dict, kept: dict) -> dict:
    m = classification_metrics(kept["y"], r["predictions"], kept["classes"], kept["normal"])
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "fpr": m["fpr"],
            "recall": m["recall"]}


def _detector_row(r: dict, kept: dict) -> dict:
    """A whole bundle through the Detector: verdicts scored (a hybrid's Unknown counts as an
    alarm, and as wrong for the class accuracy)."""
    predictions, y = np.asarray(r["predictions"]), np.asarray(kept["y"])
    normal = kept["classes"].index(kept["normal"])
    return {**{k: r[k] for k in ("startup_seconds", "load_seconds", "ready_rss_bytes",
                                 "peak_rss_bytes")},
            "latency_us": {"raw": latency_summary(r["latency_us"]["raw"])},
            "throughput": [{k: t[k] for k in ("batch", "records_per_second")}
                           for t in r["throughput"]],
            "detection_rate": float(np.mean(predictions[y != normal] != normal)),
            **_scored(r, kept)}


def _runtime_row(name: str, r: dict, kept: dict) -> dict:
    if not r["available"]:
        return {"available": False, "label": RUNTIMES[name].label, "reason": r["reason"]}
    return {"available": True, "label": RUNTIMES[name].label,
            "model_file": RUNTIMES[name].model_file,
            **{k: r[k] for k in ("startup_seconds", "import_seconds", "load_seconds",
                                 "ready_rss_bytes", "peak_rss_bytes")},
            "latency_us": {path: latency_summary(s) for path, s in r["latency_us"].items()},
            "throughput": [{k: t[k] for k in ("threads", "batch", "records_per_second")}
                           for t in r["throughput"]],
            **_scored(r, kept)}


def assemble(device: dict, kept: dict, files: dict[str, bytes], opts, command: str,
             created: str) -> dict:
    runtimes = {name: _runtime_row(name, r, kept) for name, r in device["runtimes"].items()}
    int8 = runtimes[INT8]
    for row in runtimes.values():
        if row["available"]:
            row["ratio_to_int8"] = {
                f"latency_{path}_p50": row["latency_us"][path]["p50"]
                / int8["latency_us"][path]["p50"] for path in ("features", "raw")} | {
                "ready_rss": row["ready_rss_bytes"] / int8["ready_rss_bytes"]}
    float_name = "keras" if runtimes["keras"]["available"] else "litert-float"
    float_row = runtimes[float_name]
    predictions = {n: np.asarray(r["predictions"]) for n, r in device["runtimes"].items()
                   if r["available"]}
    models = {}
    for file, data in files.items():
        models[file] = {"bytes": len(data), "gzip_bytes": gzip_size(data),
                        "parameters": kept["manifest"]["model"]["parameters"]
                        if file == "model.tflite" else kept["parameters"]}
    compare = {}
    for folder, r in device["compare"].items():
        manifest = kept["compare"][folder]["manifest"]
        file = f"{folder}/model.tflite"
        models[file]["parameters"] = manifest["model"].get("parameters")
        compare[kept["compare"][folder]["path"]] = {
            "model_file": file, "latency_us": {p: latency_summary(s)
                                               for p, s in r["latency_us"].items()},
            "peak_rss_bytes": r["peak_rss_bytes"], **_scored(r, kept),
            "sparsity": manifest["model"].get("sparsity")}
    mismatch = None
    if opts.device:
        from ...devices.profiles import load_profile

        expected = load_profile(opts.device).architecture
        if expected != device["machine"]["architecture"]:
            mismatch = (f"profile {opts.device} is {expected}, but this ran on "
                        f"{device['machine']['architecture']}")
    return {
        "schema_version": 1, "created_utc": created, "command": command,
        "profile_mismatch": mismatch,
        "timings_are_the_hardwares": not device["machine"].get(
            "virtualization", {}).get("virtual", False),
        "where": opts.host or "local", "device_profile": opts.device,
        "machine": device["machine"],
        "bundle": {"path": str(opts.bundle), "dataset": kept["manifest"]["dataset"],
                   "model_sha256": kept["model_sha256"],
                   "detector": kept["manifest"].get("detector", "classifier"),
                   "float_model": kept["keras_path"], "test_set": kept["test_set"],
                   "records": int(len(kept["y"]))},
        "plan": device["plan"], "runtimes": runtimes, "models": models,
        "accuracy_loss": {
            "float": float_name, "float_accuracy": float_row["accuracy"],
            "float_macro_f1": float_row["macro_f1"], "int8_accuracy": int8["accuracy"],
            "int8_macro_f1": int8["macro_f1"],
            "accuracy_drop_points": 100 * (float_row["accuracy"] - int8["accuracy"]),
            "macro_f1_drop_points": 100 * (float_row["macro_f1"] - int8["macro_f1"]),
            "agreement": float(np.mean(predictions[float_name] == predictions[INT8]))},
        "compare": compare, "daemon": device["daemon"],
        "detectors": {name: _detector_row(r, kept)
                      for name, r in device.get("detectors", {}).items()},
        "daemon_classifier": device.get("daemon_classifier")}


def virtual_banner(machine: dict) -> list[str]:
    """A line that says so when the figures come from an emulated or virtual machine."""
    virt = machine.get("virtualization", {})
    if not virt.get("virtual"):
        return []
    how = ("an emulated machine (qemu, software emulation: every instruction translated)"
           if virt.get("emulated") else
           f"a virtual machine ({virt['kind']}, under a hypervisor)")
    return [f"- **This ran on {how}: its timings are not the hardware's.** What still holds "
            "on the target: accuracy and agreement, peak RSS, model and install sizes."]


def _us(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def markdown(report: dict) -> str:
    m, b, rt = report["machine"], report["bundle"], report["runtimes"]
    ok = {n: r for n, r in rt.items() if r["available"]}
    lines = [f"# edge-ids bench: {b['dataset']} on {m['cpu'] or m['architecture']}", "",
             f"- where: **{report['where']}** ({m['hostname']}, {m['architecture']}, "
             f"{m['cores']} cores, Python {m['python']}, kernel {m['kernel']}"
             + (f"; profile {report['device_profile']}" if report["device_profile"] else "")
             + ")",
             *([f"- **warning: {report['profile_mismatch']}**"]
               if report.get("profile_mismatch") else []),
             *virtual_banner(m),
             f"- bundle: `{b['path']}` (model sha256 {b['model_sha256'][:12]}), float model "
             f"`{b['float_model']}`",
             f"- records: {b['records']:,} of {b['test_set']}; latency over "
             f"{report['plan']['latency_records']:,} calls at batch 1 after 50 warm-up calls",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"- command: `{report['command']}`", "",
             "## Per-record latency at batch 1 (µs)", "",
             "Feature rows: the model call alone (for int8 LiteRT that includes quantizing the "
             "input). Raw records: parse the CSV line, extract features, call the model. "
             "× int8: the runtime's p50 over the int8 LiteRT p50 of this run.", "",
             "| runtime | p50 | p95 | p99 | × int8 | raw p50 | raw p95 | raw p99 | × int8 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in ok.values():
        f, w, x = r["latency_us"]["features"], r["latency_us"]["raw"], r["ratio_to_int8"]
        lines.append(f"| {r['label']} | {_us(f['p50'])} | {_us(f['p95'])} | {_us(f['p99'])} | "
                     f"{x['latency_features_p50']:,.1f} | {_us(w['p50'])} | {_us(w['p95'])} | "
                     f"{_us(w['p99'])} | {x['latency_raw_p50']:,.1f} |")
    lines += ["", "## Process: start-up, load and memory", "",
              "Each runtime in a process of its own. Start-up: from spawning the process to a "
              "loaded model, ready to classify. RSS when ready: the process's peak RSS at that "
              "moment (interpreter, libraries, model); peak RSS: over the whole measurement, "
              f"with the {report['bundle']['records']:,} records and their features in memory.",
              "",
              "| runtime | start-up s | import s | model load s | RSS when ready MiB | × int8 | "
              "peak RSS MiB |", "|---|---|---|---|---|---|---|"]
    for r in ok.values():
        lines.append(f"| {r['label']} | {r['startup_seconds']:.3f} | {r['import_seconds']:.3f} "
                     f"| {r['load_seconds']:.4f} | {r['ready_rss_bytes'] / 2**20:.1f} | "
                     f"{r['ratio_to_int8']['ready_rss']:.1f} | "
                     f"{r['peak_rss_bytes'] / 2**20:.1f} |")
    d = report["daemon"]
    lines += ["", f"The daemon as deployed (`edge-ids run` over the {d['records']:,} records, "
              f"default batching): start-up to READY=1 {d['start_seconds']:.2f} s, "
              f"{d['records_per_second']:,.0f} records/s end to end, peak RSS "
              f"{d['peak_rss_bytes'] / 2**20:.1f} MiB.", ""]
    lines += _hybrid_section(report)
    batches = report["plan"]["batches"]
    lines += ["## Throughput (records/s)", "",
              "| runtime | threads | " + " | ".join(f"batch {b}" for b in batches) + " |",
              "|---|---|" + "---|" * len(batches)]
    for r in ok.values():
        for t in dict.fromkeys(p["threads"] for p in r["throughput"]):
            cells = {p["batch"]: p["records_per_second"] for p in r["throughput"]
                     if p["threads"] == t}
            lines.append(f"| {r['label']} | {t or 'default'} | "
                         + " | ".join(f"{cells[b]:,.0f}" for b in batches) + " |")
    lines += ["", "## Models: size and accuracy", "",
              f"On {b['records']:,} records of {b['test_set']}.", "",
              "| model | file | bytes | gzip bytes | parameters | accuracy % | macro-F1 % |",
              "|---|---|---|---|---|---|---|"]
    rows = [(r["label"], r) for r in ok.values()]
    rows += [(f"int8 `{path}`", c) for path, c in report["compare"].items()]
    for label, r in rows:
        s = report["models"][r["model_file"]]
        lines.append(f"| {label} | {r['model_file']} | {s['bytes']:,} | {s['gzip_bytes']:,} | "
                     f"{s['parameters'] or 0:,} | {100 * r['accuracy']:.2f} | "
                     f"{100 * r['macro_f1']:.2f} |")
    a = report["accuracy_loss"]
    lines += ["", f"int8 against float ({rt[a['float']]['label']}): accuracy "
              f"{-a['accuracy_drop_points']:+.2f} points, macro-F1 "
              f"{-a['macro_f1_drop_points']:+.2f} points; the two predict the same class for "
              f"{100 * a['agreement']:.2f} % of the records.", ""]
    missing = {n: r for n, r in rt.items() if not r["available"]}
    if missing:
        lines += ["Not measured here: " + "; ".join(f"{r['label']}: {r['reason']}"
                                                   for r in missing.values()) + ".", ""]
    lines += ["![latency histograms](latency.png)", "",
              "![accuracy against model size](accuracy_size.png)", ""]
    return "\n".join(lines)


def _hybrid_section(report: dict) -> list[str]:
    """A hybrid bundle beside its classifier alone: what the anomaly channel costs."""
    d = report.get("detectors") or {}
    if set(d) != {"classifier", "hybrid"}:
        return []
    c, h = d["classifier"], d["hybrid"]
    batch = max(t["batch"] for t in h["throughput"])
    rate = {k: next(t["records_per_second"] for t in v["throughput"] if t["batch"] == batch)
            for k, v in d.items()}
    daemons = {"classifier": report["daemon_classifier"], "hybrid": report["daemon"]}
    lines = ["## The hybrid beside its classifier alone", "",
             "Both through the edge runtime as the daemon runs them (raw line in, verdict out): "
             "the classifier alone, and the bundle's classifier + autoencoder with its "
             "thresholds. Detection: records of any attack class flagged (a class or Unknown); "
             "accuracy counts Unknown as wrong.", "",
             "| | raw p50 µs | raw p99 µs | records/s at batch " f"{batch} | RSS when ready MiB "
             "| daemon records/s | daemon peak RSS MiB | detection % | false alarms % | "
             "accuracy % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in (("classifier alone", c), ("hybrid", h)):
        key = "classifier" if name.startswith("classifier") else "hybrid"
        lat, daemon = r["latency_us"]["raw"], daemons[key]
        lines.append(f"| {name} | {_us(lat['p50'])} | {_us(lat['p99'])} | {rate[key]:,.0f} | "
                     f"{r['ready_rss_bytes'] / 2**20:.1f} | {daemon['records_per_second']:,.0f} "
                     f"| {daemon['peak_rss_bytes'] / 2**20:.1f} | {100 * r['detection_rate']:.2f} "
                     f"| {100 * r['fpr']:.2f} | {100 * r['accuracy']:.2f} |")
    kept = daemons["hybrid"]["records_per_second"] / daemons["classifier"]["records_per_second"]
    lines += ["", f"The hybrid daemon keeps {100 * kept:.1f} % of the classifier-only daemon's "
              f"throughput in this run; at batch {batch} the edge runtime keeps "
              f"{100 * rate['hybrid'] / rate['classifier']:.1f} %.", ""]
    return lines


def plot_latency(report: dict, samples: dict, path: Path) -> None:
    """One histogram per runtime on a shared log axis: the gap between them is the point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    everything = np.concatenate([s["features"] for s in samples.values()])
    bins = np.geomspace(max(everything.min(), 0.1), everything.max(), 80)
    for name, s in samples.items():
        p50 = report["runtimes"][name]["latency_us"]["features"]["p50"]
        ax.hist(s["features"], bins=bins, alpha=0.6,
                label=f"{report['runtimes'][name]['label']} (p50 {_us(p50)} µs)")
    ax.set_xscale("log")
    ax.set_xlabel("per-record latency at batch 1, feature rows (µs, log scale)")
    ax.set_ylabel("calls")
    ax.set_title(f"{report['machine']['cpu'] or report['machine']['architecture']}: "
                 f"{report['plan']['latency_records']:,} calls per runtime")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


F1_AXIS_POINTS = 10.0  # the narrowest macro-F1 axis: a 0.1-point gap is not drawn as a cliff


def accuracy_size_points(report: dict) -> list[tuple[str, int, float]]:
    """(label, gzip bytes of its model file, macro-F1 %) of every runtime measured and every
    --compare bundle: one picture of what each form of the model costs and scores."""
    points = [(r["label"], report["models"][r["model_file"]]["gzip_bytes"], 100 * r["macro_f1"])
              for r in report["runtimes"].values() if r["available"]]
    points += [(f"int8 {Path(p).name}", report["models"][c["model_file"]]["gzip_bytes"],
                100 * c["macro_f1"]) for p, c in report["compare"].items()]
    return points


def f1_axis_range(values: list[float]) -> tuple[float, float]:
    """A y-range at least F1_AXIS_POINTS wide around the values (within 0..100), so that
    differences are drawn at their real size."""
    low, high = min(values), max(values)
    width = max(high - low, F1_AXIS_POINTS) * 1.2
    bottom = min(max((low + high - width) / 2, 0.0), max(100.0 - width, 0.0))
    return bottom, min(bottom + width, 100.0)


def plot_accuracy_size(report: dict, path: Path) -> None:
    """macro-F1 against gzip size for every model measured in the run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = accuracy_size_points(report)
    f1s = [f1 for _, _, f1 in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, size, f1 in sorted(points, key=lambda p: p[1]):
        ax.scatter(size, f1, s=40, label=f"{label}: {f1:.2f}")  # a legend: near points' labels
    ax.legend(fontsize=8, loc="best")  # would overlap if written beside them
    ax.set_xscale("log")
    ax.margins(x=0.3)
    ax.set_ylim(*f1_axis_range(f1s))
    ax.set_xlabel("gzip size of the model file (bytes, log scale)")
    ax.set_ylabel(f"{report['bundle']['test_set']} macro-F1 (%)")
    ax.set_title(f"Accuracy against model size (macro-F1 spread "
                 f"{max(f1s) - min(f1s):.2f} points)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, device: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    samples = {n: r["latency_us"] for n, r in device["runtimes"].items() if r["available"]}
    (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "latency_us.json").write_text(json.dumps(samples) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot_latency(report, samples, out / "latency.png")
    plot_accuracy_size(report, out / "accuracy_size.png")
