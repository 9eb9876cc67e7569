"""The anomaly channel on the device: how far a record is from the normal traffic a model learned.

The model is a small autoencoder trained on benign rows only (train/anomaly.py); it runs through
the same LiteRT code as the classifier (full-integer int8 inside, float input and output). Its
score is computed here with numpy: the mean squared difference between the record's features
and the model's reconstruction of them. Benign traffic like the learned normal reconstructs well;
what the model never saw does not.
"""
from __future__ import annotations

import numpy as np

from .bundle import AnomalyPart, BundleError
from .classifier import TFLiteModel, check_model_matches_spec
from .features import FeatureTransform
from ..ingest.records import Records


def reconstruction_error(x: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Per row: mean over the features of the squared difference (the bundle's score)."""
    difference = reconstruction - x
    return np.einsum("ij,ij->i", difference, difference) / max(x.shape[1], 1)


class AnomalyScorer:
    """A bundle's anomaly model on raw records: scores, and whether each is over the threshold."""

    def __init__(self, part: AnomalyPart, path, num_threads: int = 1, max_batch: int = 1024,
                 vocabulary: dict | None = None):
        self.threshold = part.threshold
        self.transform = FeatureTransform(part.spec, vocabulary)
        self.model = TFLiteModel(part.model, num_threads, max_batch)
        check_model_matches_spec(self.model, self.transform, part.spec, path,
                                 "the anomaly model")
        if self.model.n_outputs != self.model.n_inputs:
            raise BundleError(f"{path}: the anomaly model has {self.model.n_inputs} "
                              f"inputs but {self.model.n_outputs} outputs; an autoencoder "
                              f"reconstructs its input")

    def is_anomalous(self, scores: np.ndarray, thresholds: np.ndarray | None = None
                     ) -> np.ndarray:
        """Over the bundle's threshold, or over each record's own (its devices')."""
        return scores > (self.threshold if thresholds is None else thresholds)

    def score(self, records: Records, codes: dict | None = None
              ) -> tuple[np.ndarray, dict[str, int]]:
        """(score per record, unseen categories per column)."""
        x, unknown = self.transform.transform(records.columns, records.numeric, codes)
        return self.score_features(x), unknown

    def score_features(self, x: np.ndarray) -> np.ndarray:
        return reconstruction_error(x, self.model.predict(x))

    def score_explained(self, records: Records, codes: dict | None = None
                        ) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
        """(scores, unseen categories, input minus reconstruction per feature): the last is
        what an incident's "why" is made of, and costs nothing more to keep."""
        x, unknown = self.transform.transform(records.columns, records.numeric, codes)
        difference = x - self.model.predict(x)
        scores = np.einsum("ij,ij->i", difference, difference) / max(x.shape[1], 1)
        return scores, unknown, difference
