"""One verdict per record from whatever a bundle holds: a classifier, an anomaly model, or both.

    the classifier's attack class, when it names one
    else Unknown, when the anomaly score is over the bundle's threshold
    else the normal class

A classifier names only the attacks it was trained on; the anomaly model, trained on benign
traffic alone, flags what does not fit that normal, including attacks no training set had.
Every command that classifies records (classify, run, capture, bench, deploy's health check)
goes through `Detector`, so they cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anomaly import AnomalyScorer
from .bundle import Bundle, BundleError
from .classifier import Classifier
from .features import shared_vocabulary
from ..ingest.records import RawSchema, Records

UNKNOWN = "Unknown"


@dataclass
class Verdicts:
    verdicts: np.ndarray  # index into Detector.verdict_names, per record
    unknown: dict[str, int]  # unseen categories per column in this batch
    classes: np.ndarray | None = None  # the classifier's class (index into class_names)
    scores: np.ndarray | None = None  # the classifier's probability of that class
    anomaly_scores: np.ndarray | None = None
    normal_probability: np.ndarray | None = None  # the classifier's P(normal class)
    differences: np.ndarray | None = None  # anomaly model input - reconstruction (explain=True)
    thresholds: np.ndarray | None = None  # the anomaly threshold each record was held to


class Detector:
    def __init__(self, bundle: Bundle, num_threads: int = 1, max_batch: int = 1024):
        self.bundle = bundle
        self.schema = RawSchema.from_spec(bundle.raw)
        # one vocabulary for both models: each categorical value is looked up once
        vocabulary = shared_vocabulary([s for s in (bundle.spec, bundle.anomaly and
                                                    bundle.anomaly.spec) if s])
        self.classifier = (Classifier(bundle, num_threads, max_batch, vocabulary)
                           if bundle.spec else None)
        self.anomaly = (AnomalyScorer(bundle.anomaly, bundle.path, num_threads, max_batch,
                                      vocabulary) if bundle.anomaly else None)
        self.class_names = bundle.class_names
        normal = bundle.manifest.get("normal_class")
        self.normal_index = self.class_names.index(normal) if normal in self.class_names \
            else None
        # Verdicts are the classes (an anomaly-only bundle has just the normal one), then Unknown
        self.verdict_names = self.class_names + ([UNKNOWN] if self.anomaly else [])
        if self.anomaly and self.normal_index is None:
            raise BundleError(f"{bundle.path}: an anomaly model needs the manifest's "
                              f"normal_class among its class_names")

    @property
    def threshold(self) -> float | None:
        return self.anomaly.threshold if self.anomaly else None

    def detect(self, records: Records, thresholds: np.ndarray | None = None,
               explain: bool = False) -> Verdicts:
        """`thresholds`: an anomaly threshold per record (its devices' own), else the
        bundle's. `explain`: also keep the anomaly model's per-feature differences."""
        if self.classifier is None:
            scores, unknown, differences = self._score(records, None, explain)
            verdicts = np.where(self.anomaly.is_anomalous(scores, thresholds),
                                len(self.class_names), self.normal_index)
            return Verdicts(verdicts, unknown, anomaly_scores=scores, differences=differences,
                            thresholds=thresholds)
        codes = self.classifier.transform.codes(records.columns) if self.anomaly else None
        predictions = self.classifier.classify(records, codes)
        verdicts = predictions.classes.copy()
        result = Verdicts(verdicts, predictions.unknown, predictions.classes, predictions.scores,
                          normal_probability=None if self.normal_index is None else
                          predictions.probabilities[:, self.normal_index])
        if self.anomaly is not None:
            # Scored for every record (not only those the classifier calls normal): the score is
            # in every output line, and the metrics' histogram shows drift in all traffic.
            result.anomaly_scores, _, result.differences = self._score(records, codes, explain)
            unknown = (verdicts == self.normal_index) & \
                self.anomaly.is_anomalous(result.anomaly_scores, thresholds)
            verdicts[unknown] = len(self.class_names)
            result.thresholds = thresholds
        return result

    def _score(self, records: Records, codes, explain: bool):
        if explain:
            return self.anomaly.score_explained(records, codes)
        return (*self.anomaly.score(records, codes), None)

    def warm_up(self) -> None:
        """Run every model once: a bundle that loads but cannot run fails here, not later."""
        for channel in (self.classifier, self.anomaly):
            if channel is not None:
                channel.model.predict(np.zeros((1, channel.model.n_inputs), np.float32))
