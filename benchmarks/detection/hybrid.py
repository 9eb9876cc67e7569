"""The hybrid detector against its parts: classifier alone, autoencoder alone, Isolation Forest
alone, and classifier + autoencoder, on NSL-KDD, WUSTL-EHMS-2020 and the IoT-23 captures,
at several false-alarm budgets, over seeds. Every threshold is set on validation rows carved
from the training data (never test rows), with the scores of the bundles' own int8 models.

    python -m edge_ids.benchmarks.detection.hybrid [--data-dir ../shared/datasets]
        [--out benchmarks/results/hybrid] [--work out/hybrid] [--seeds 0,1,2]

Writes OUT/results.json (layout in OUT/results.md), OUT/results.md, OUT/scores.png and
OUT/roc.png. Trained classifiers and bundles are kept under --work (reused when present).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ...train.paths import OUT, RESULTS, data_dir
from .metrics import cached, detection_metrics, flags_to_verdicts, indent as _indent, \
    normal_probability, short as _short

BUDGETS = (0.01, 0.02, 0.05)
DEFAULT_BUDGET = 0.01


def study(name: str, seed: int, work: Path, classifier_dir: Path, train_set, fit_rows,
          val_rows, tests: dict, budgets, echo, epochs: int = 200) -> tuple[dict, dict]:
    """One dataset, one seed: every method's metrics per test set, and the seed's scores for
    the pictures. `tests`: {name: (LabelledSet, unseen mask or None, categories or None)}."""
    from ...learn import fit_anomaly_model, write_learned_bundle
    from ...edge_runtime.model.bundle import load_bundle
    from ...edge_runtime.model.detector import Detector
    from ...edge_runtime.model.features import FeatureTransform
    from ...edge_runtime.ingest.records import RawSchema
    from ...train.anomaly import IsolationForestScorer
    from ...train.operating_point import choose_operating_point

    classifier = load_bundle(classifier_dir / "bundle")
    data_normal = classifier.manifest["normal_class"]
    names = classifier.class_names
    benign = train_set.y == names.index(data_normal)
    fit = train_set.records.take(fit_rows[benign[fit_rows]])
    val = train_set.records.take(val_rows[benign[val_rows]])
    echo(f"  {name} seed {seed}: autoencoder on {len(fit):,} benign training rows, thresholds "
         f"on {len(val):,} validation benign rows")
    learned = fit_anomaly_model(fit, RawSchema.from_spec(classifier.spec["raw"]), seed=seed,
                                raw=classifier.spec["raw"], epochs=epochs, echo=_indent(echo))
    transform = FeatureTransform(learned.spec)
    features = {t: transform.transform(s.records.columns, s.records.numeric)[0]
                for t, (s, _, _) in tests.items()}
    x_fit = transform.transform(fit.columns, fit.numeric)[0]
    x_val = transform.transform(val.columns, val.numeric)[0]
    forest = IsolationForestScorer(seed=seed)
    forest.fit(x_fit)
    forest_val = forest.score(x_val)
    float_val = learned.autoencoder.score(x_val)

    verdicts = {"classifier": _verdicts(Detector(classifier), tests)}
    points, agreement, scores = {}, {}, {"forest": {}, "float": {}}
    for t in tests:
        scores["forest"][t] = forest.score(features[t])
        scores["float"][t] = learned.autoencoder.score(features[t])
    for budget in budgets:
        for kind, with_classifier in (("autoencoder", None), ("hybrid", classifier)):
            method = f"{kind}@{budget:g}"
            result = write_learned_bundle(learned, val, work / method, max_fpr=budget,
                                          classifier=with_classifier, dataset=name,
                                          echo=lambda _: None)
            points[method] = result["operating_point"]
            detector = Detector(result["bundle"])
            verdicts[method] = _verdicts(detector, tests)
            if kind == "autoencoder":
                scores.setdefault("int8", {t: v[1] for t, v in verdicts[method].items()})
        forest_point = choose_operating_point(budget, forest_val)
        points[f"isolation_forest@{budget:g}"] = forest_point
        verdicts[f"isolation_forest@{budget:g}"] = {
            t: (flags_to_verdicts(scores["forest"][t] > forest_point["threshold"], data_normal),
                scores["forest"][t]) for t in tests}
        float_point = choose_operating_point(budget, float_val)
        agreement[f"{budget:g}"] = {
            t: float(np.mean((scores["float"][t] > float_point["threshold"])
                             == (verdicts[f"autoencoder@{budget:g}"][t][0] != data_normal)))
            for t in tests}
    metrics = {method: {t: detection_metrics(v[t][0], tests[t][0].y, names, data_normal,
                                             tests[t][1], tests[t][2]) for t in tests}
               for method, v in verdicts.items()}
    extras = {"operating_points": points, "int8_float_verdict_agreement": agreement,
              "autoencoder": learned.history, "classifier_bundle": str(classifier_dir)}
    first = next(iter(tests))  # the pictures show the first test set
    pictures = {"set": first, "y_attack": tests[first][0].y != names.index(data_normal),
                "scores": {k: scores[k][first] for k in ("int8", "forest")},
                "normal_probability": normal_probability(classifier, tests[first][0].records),
                "classifier_flags": verdicts["classifier"][first][0] != data_normal,
                "points": points, "metrics": {m: v[first] for m, v in metrics.items()}}
    return {"metrics": metrics, **extras}, pictures


def _verdicts(detector, tests: dict) -> dict:
    """{test: (verdict names, anomaly scores or None)} through the edge runtime."""
    out = {}
    for t, (labelled, _, _) in tests.items():
        v = detector.detect(labelled.records)
        out[t] = (np.asarray(detector.verdict_names)[v.verdicts], v.anomaly_scores)
    return out


# -- datasets ------------------------------------------------------------------------------------

HOLDOUT_FRACTION = 0.1  # NSL-KDD: the operating point's rows, never seen by the classifier


def nsl_kdd(data_dir, seed: int, work: Path, budgets, echo, epochs: int = 200
            ) -> tuple[dict, dict]:
    """Classifier: `edge-ids pipeline` (FNN, focal loss, KDDTrain+) with a stratified 10 %
    holdout the classifier never sees (not even for early stopping), where the thresholds are
    set; tests KDDTest+ and KDDTest-21, with the 17 test-only attack types apart."""
    from ...pipeline import PipelineOptions, run_pipeline
    from ...train.datasets import nsl_kdd as kdd
    from ...train.fit import split_with_holdout

    classifier_dir = work / "classifier"
    options = PipelineOptions(data_dir=str(data_dir), out=classifier_dir, seed=seed,
                              epochs=min(epochs, PipelineOptions.epochs),
                              holdout_fraction=HOLDOUT_FRACTION)
    data = kdd.dataset(data_dir, options.train_set)
    if not cached(classifier_dir, options, [data.train.path, *(t.path for t in
                                                               data.tests.values())], echo):
        run_pipeline(options, echo=_indent(echo))
    fit_rows, _, val_rows = split_with_holdout(data.train.y, options.val_fraction,
                                               HOLDOUT_FRACTION, seed)
    seen = set(data.train.labels.tolist())
    tests = {t: (s, ~np.isin(s.labels, list(seen)), None) for t, s in data.tests.items()}
    return study("nsl-kdd", seed, work, classifier_dir, data.train, fit_rows, val_rows, tests,
                 budgets, echo, epochs)


def wustl_ehms(data_dir, seed: int, work: Path, budgets, echo, epochs: int = 200
               ) -> tuple[dict, dict]:
    """Classifier: `edge-ids train --dataset wustl-ehms --model fnn --loss focal` (Dina et al.);
    the fixed 80/20 split; attack categories reported apart. Every attack type of the test
    split also occurs in training, so there is no unseen-type view."""
    from ...train.datasets import load_dataset
    from ...train.fit import split_validation
    from ...training import run_training

    classifier_dir = work / "classifier"
    val_fraction = 0.2
    data = load_dataset("wustl-ehms", data_dir)
    settings = {"dataset": "wustl-ehms", "model": "fnn", "loss": "focal", "seed": seed,
                "val_fraction": val_fraction, "hidden": [50], "training": _short(epochs)}
    if not cached(classifier_dir, settings, [data.train.path], echo):
        run_training("wustl-ehms", "fnn", "focal", "none", classifier_dir, data_dir=data_dir,
                     seed=seed, val_fraction=val_fraction, model_options={"hidden": (50,)},
                     training=_short(epochs), echo=_indent(echo))
    fit_rows, val_rows = split_validation(len(data.train.y), data.train.y, val_fraction, seed)
    test = data.tests["test"]
    categories = test.records.trailing.get("Attack Category")
    return study("wustl-ehms", seed, work, classifier_dir, data.train, fit_rows, val_rows,
                 {"test": (test, None, categories)}, budgets, echo, epochs)


# -- the command ---------------------------------------------------------------------------------

def run(data_dir: Path, work: Path, seeds, budgets, echo=print, epochs: int = 200
        ) -> tuple[dict, dict]:
    from .hybrid_iot import iot23

    results = {"budgets": list(budgets), "default_budget": DEFAULT_BUDGET, "seeds": list(seeds),
               "runs": {}, "details": {}, "seconds": {}}
    pictures = {}
    sections = (("nsl-kdd", nsl_kdd), ("wustl-ehms", wustl_ehms), ("iot-23", iot23))
    for name, section in sections:
        started = time.monotonic()
        for seed in seeds:
            echo(f"[{name}] seed {seed}")
            result, picture = section(data_dir, seed, work / name / f"seed-{seed}", budgets,
                                      echo, epochs)
            for method, by_test in result.pop("metrics").items():
                entry = results["runs"].setdefault(method, [])
                row = next((r for r in entry if r["seed"] == seed), None)
                if row is None:
                    entry.append(row := {"seed": seed})
                row[name] = by_test
            results["details"].setdefault(name, []).append({"seed": seed, **result})
            if seed == seeds[0]:
                pictures[name] = picture
        results["seconds"][name] = time.monotonic() - started
    return results, pictures


def main(argv=None) -> None:
    from .. import write_results
    from .hybrid_report import markdown, pictures_png
    from .hybrid_throughput import measure_apart

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "hybrid")
    parser.add_argument("--work", type=Path, default=OUT / "hybrid")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS))
    parser.add_argument("--throughput-records", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=200,
                        help="at most this many epochs (a smoke run: a few)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results, pictures = run(args.data_dir, args.work, seeds, budgets, echo, args.epochs)
    echo("[throughput] the daemon with the classifier alone and with the hybrid")
    results["throughput"] = measure_apart(
        args.work / "nsl-kdd" / f"seed-{seeds[0]}", args.data_dir, args.throughput_records)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures_png(pictures, results, args.out)
    write_results(args.out, results, markdown(results), markdown_name="results.md")


if __name__ == "__main__":
    main()
