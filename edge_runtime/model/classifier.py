"""Raw records in, classes and scores out: the feature transform plus one TFLite interpreter.

`TFLiteModel` runs any of a bundle's models (the classifier, the anomaly model); `Classifier`
is the classifier channel. edge_runtime/model/detector.py combines it with the anomaly channel."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, BundleError
from .features import FeatureTransform, dequantize, quantize
from .interpreter import make_interpreter
from ..ingest.records import Records, RawSchema


@dataclass
class Predictions:
    classes: np.ndarray  # class index per record
    scores: np.ndarray  # probability of that class
    unknown: dict[str, int]  # unseen categories per column in this batch
    probabilities: np.ndarray | None = None  # every class's probability, (n, classes)


class TFLiteModel:
    """One interpreter: float rows in, the model's outputs out, in batches of `max_batch`;
    int8 models quantize and dequantize here."""

    def __init__(self, model: bytes, num_threads: int = 1, max_batch: int = 1024):
        self.max_batch = max_batch
        self._interpreter = make_interpreter(model, num_threads)
        self.input = self._interpreter.get_input_details()[0]
        self.output = self._interpreter.get_output_details()[0]
        self._batch = int(self.input["shape"][0])

    @property
    def n_inputs(self) -> int:
        return int(self.input["shape"][1])

    @property
    def n_outputs(self) -> int:
        return int(self.output["shape"][1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.n_outputs), dtype=np.float32)
        for start in range(0, len(x), self.max_batch):
            out[start:start + self.max_batch] = self._invoke(x[start:start + self.max_batch])
        return out

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._interpreter.resize_tensor_input(self.input["index"], [len(x), x.shape[1]])
            self._interpreter.allocate_tensors()
            self._batch = len(x)
        if self.input["dtype"] == np.int8:
            x = quantize(x, *self.input["quantization"])
        self._interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] == np.int8:
            y = dequantize(y, *self.output["quantization"])
        return y


class Classifier:
    """Runs a bundle's classifier on raw records, in batches of at most `max_batch`.

    It names the most probable class, except that an attack class needs the normal class's
    probability below the bundle's `normal_threshold` (1 = plain argmax; a hybrid's operating
    point may set it lower so that the classifier keeps to its share of the false alarms)."""

    def __init__(self, bundle: Bundle, num_threads: int = 1, max_batch: int = 1024,
                 vocabulary: dict | None = None):
        if bundle.spec is None:
            raise BundleError(f"{bundle.path}: an anomaly-only bundle has no classifier")
        self.bundle = bundle
        self.schema = RawSchema.from_spec(bundle.spec["raw"])
        self.transform = FeatureTransform(bundle.spec, vocabulary)
        self.model = TFLiteModel(bundle.model, num_threads, max_batch)
        check_model_matches_spec(self.model, self.transform, bundle.spec, bundle.path,
                                 "the model")
        normal = bundle.manifest.get("normal_class")
        self.normal_index = bundle.class_names.index(normal) if normal in bundle.class_names \
            else None
        self.normal_threshold = bundle.normal_threshold

    def classify(self, records: Records, codes: dict | None = None) -> Predictions:
        x, unknown = self.transform.transform(records.columns, records.numeric, codes)
        return self.decide(self.model.predict(x), unknown)

    def decide(self, probabilities: np.ndarray, unknown: dict | None = None) -> Predictions:
        classes = probabilities.argmax(axis=1)
        if self.normal_index is not None and self.normal_threshold < 1.0:
            doubtful = probabilities[:, self.normal_index] >= self.normal_threshold
            classes[doubtful] = self.normal_index
        return Predictions(classes, probabilities[np.arange(len(classes)), classes],
                           unknown or {}, probabilities)


def check_model_matches_spec(model: TFLiteModel, transform: FeatureTransform, spec: dict,
                             path, what: str) -> None:
    """The model's input width and int8 input quantization are the feature spec's."""
    if model.n_inputs != transform.n_inputs:
        raise BundleError(f"{path}: {what} takes {model.n_inputs} inputs but its feature spec "
                          f"selects {transform.n_inputs}")
    if model.input["dtype"] == np.int8:
        scale, zero_point = model.input["quantization"]
        q = spec.get("input_quantization") or {}
        if (q.get("scale"), q.get("zero_point")) != (scale, zero_point):
            raise BundleError(f"{path}: {what}'s input quantization ({scale}, {zero_point}) "
                              f"differs from its feature spec's {q}")
