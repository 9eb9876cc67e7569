"""Measure a written bundle the way the device will run it: raw test records through the edge
runtime's feature transform and interpreter (so host and device cannot drift apart)."""
from __future__ import annotations

from pathlib import Path


def evaluate_bundle(bundle_dir: str | Path, data) -> dict:
    """{test set: classification metrics} of the bundle on every test set of `data`."""
    from ..edge_runtime.model.bundle import load_bundle
    from ..edge_runtime.model.classifier import Classifier
    from ..train.evaluate import classification_metrics

    classifier = Classifier(load_bundle(bundle_dir))
    classes = list(data.classes)
    return {name: classification_metrics(s.y, classifier.classify(s.records).classes, classes,
                                         data.normal)
            for name, s in data.tests.items()}
