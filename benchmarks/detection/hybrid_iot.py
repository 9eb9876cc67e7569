"""The IoT-23 part of benchmarks/hybrid.py: learning one device's normal from its own traffic.

The benign Philips Hue bridge capture is turned into flows by argus | ra, as `edge-ids capture`
and `edge-ids learn --pcap` do. The first 70 % of its flows by start time are the learning
period (its last 20 % by time set the thresholds), the remaining 30 % count false alarms.
Detection is counted on the Mirai bot capture's flows that Zeek labels C&C (joined by
5-tuple, as benchmarks/capture.py does). That capture comes from another host on another
network, so its detection rate is an upper bound for traffic that is merely new to this one.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .capture import CAPTURES, zeek_labels
from .metrics import cached, indent as _indent, normal_probability, short as _short

LEARN_SHARE = 0.7
HUE, MIRAI = CAPTURES  # names of the two captures in benchmarks/capture.py
TUPLE = ("SrcAddr", "Sport", "DstAddr", "Dport")


def read_flows(pcap: Path, schema):
    """The capture's flows in the bundle layout plus StartTime (Unix seconds), as Records
    with the 5-tuple and the start time kept as text."""
    from ...edge_runtime.ingest.argus import ArgusSource
    from ...edge_runtime.ingest.records import RawSchema, parse_lines

    timed = RawSchema(schema.names + ("StartTime",), schema.types + ("ignored",),
                      schema.trailing, schema.missing, schema.missing_as)
    source = ArgusSource(timed, pcap=str(pcap))
    try:
        lines = [line for batch in source.batches(threading.Event()) for line in batch]
    finally:
        source.close()
    records, rejected = parse_lines(lines, timed, keep_text=TUPLE + ("StartTime",))
    if rejected:
        raise RuntimeError(f"{pcap}: {len(rejected)} flow lines rejected, e.g. {rejected[0]}")
    return records


def iot23(data_dir: Path, seed: int, work: Path, budgets, echo, epochs: int = 200
          ) -> tuple[dict, dict]:
    from ...edge_runtime.model.bundle import load_bundle
    from ...edge_runtime.model.detector import Detector
    from ...edge_runtime.model.features import FeatureTransform
    from ...edge_runtime.ingest.records import RawSchema
    from ...learn import fit_anomaly_model, split_by_time, write_learned_bundle
    from ...train.anomaly import IsolationForestScorer
    from ...train.operating_point import choose_operating_point
    from ...training import run_training

    classifier_dir = work / "classifier"
    settings = {"dataset": "wustl-ehms-net", "model": "fnn", "loss": "focal", "seed": seed,
                "hidden": [50], "training": _short(epochs)}
    from ...train.datasets.wustl_ehms import find as find_wustl
    if not cached(classifier_dir, settings, [find_wustl(data_dir)], echo):
        run_training("wustl-ehms-net", "fnn", "focal", "none", classifier_dir, data_dir=data_dir,
                     seed=seed, model_options={"hidden": (50,)}, training=_short(epochs),
                     echo=_indent(echo))
    classifier = load_bundle(classifier_dir / "bundle")
    schema = RawSchema.from_spec(classifier.raw)
    root = data_dir / "iot-23-pcap"
    hue = read_flows(root / CAPTURES[HUE][0], schema)
    order = np.argsort(hue.columns["StartTime"].astype(float), kind="stable")
    cut = int(round(LEARN_SHARE * len(order)))
    learning, holdout = hue.take(order[:cut]), hue.take(order[cut:])
    mirai = read_flows(root / CAPTURES[MIRAI][0], schema)
    labels = zeek_labels(root / CAPTURES[MIRAI][1])
    cc = np.array([_is_cc(labels, row) for row in zip(*(mirai.columns[c] for c in TUPLE))])
    mirai = mirai.take(np.flatnonzero(cc))
    fit_rows, val_rows = split_by_time(learning, 0.2)  # the learning period's last part
    fit, val = learning.take(fit_rows), learning.take(val_rows)
    echo(f"  iot-23 seed {seed}: {len(hue):,} Hue flows ({len(learning):,} learning: "
         f"{len(fit):,} fit, {len(val):,} validation; {len(holdout):,} held out), "
         f"{len(mirai):,} Mirai C&C flows")
    learned = fit_anomaly_model(fit, schema, seed=seed, raw=classifier.spec["raw"],
                                epochs=epochs, echo=_indent(echo))
    sets = {"hue_holdout": holdout, "mirai_cc": mirai}
    alarms = {"classifier": _alarms(Detector(classifier), sets)}
    points, scores = {}, {}
    transform = FeatureTransform(learned.spec)
    x = {k: transform.transform(r.columns, r.numeric)[0] for k, r in
         {"fit": fit, "val": val, **sets}.items()}
    forest = IsolationForestScorer(seed=seed)
    forest.fit(x["fit"])
    forest_scores = {k: forest.score(x[k]) for k in ("val", *sets)}
    for budget in budgets:
        for kind, with_classifier in (("autoencoder", None), ("hybrid", classifier)):
            method = f"{kind}@{budget:g}"
            result = write_learned_bundle(learned, val, work / method, max_fpr=budget,
                                          classifier=with_classifier, dataset="iot-23",
                                          echo=lambda _: None)
            points[method] = result["operating_point"]
            detector = Detector(result["bundle"])
            alarms[method] = _alarms(detector, sets)
            if kind == "autoencoder" and "int8" not in scores:
                scores["int8"] = {k: detector.detect(r).anomaly_scores for k, r in sets.items()}
        point = choose_operating_point(budget, forest_scores["val"])
        points[f"isolation_forest@{budget:g}"] = point
        alarms[f"isolation_forest@{budget:g}"] = {k: forest_scores[k] > point["threshold"]
                                                  for k in sets}
    metrics = {method: {"hue_holdout": {"false_alarm_rate": float(a["hue_holdout"].mean()),
                                        "flows": int(len(a["hue_holdout"]))},
                        "mirai_cc": {"detection_rate": float(a["mirai_cc"].mean()),
                                     "flows": int(len(a["mirai_cc"]))}}
               for method, a in alarms.items()}
    both = list(sets)  # the pictures: held-out Hue flows (benign) and Mirai C&C (attack)
    pictures = {"set": "Hue held out + Mirai C&C",
                "y_attack": np.concatenate([np.zeros(len(holdout), bool),
                                            np.ones(len(mirai), bool)]),
                "scores": {"int8": np.concatenate([scores["int8"][k] for k in both]),
                           "forest": np.concatenate([forest_scores[k] for k in both])},
                "normal_probability": np.concatenate([normal_probability(classifier, sets[k])
                                                      for k in both]),
                "classifier_flags": np.concatenate([alarms["classifier"][k] for k in both]),
                "points": points, "metrics": {
                    m: {"binary": {"false_alarm_rate": v["hue_holdout"]["false_alarm_rate"],
                                   "detection_rate": v["mirai_cc"]["detection_rate"]}}
                    for m, v in metrics.items()}}
    return ({"metrics": metrics, "operating_points": points, "autoencoder": learned.history,
             "flows": {"hue": len(hue), "learning": len(learning), "fit": len(fit),
                       "validation": len(val), "hue_holdout": len(holdout),
                       "mirai_cc": len(mirai)}}, pictures)


def _is_cc(labels: dict, row: tuple) -> bool:
    src, sport, dst, dport = (str(v) for v in row)
    label = labels.get((src, sport, dst, dport)) or labels.get((dst, dport, src, sport), "")
    return "C&C" in label


def _alarms(detector, sets: dict) -> dict:
    normal = detector.normal_index
    return {k: detector.detect(r).verdicts != normal for k, r in sets.items()}


