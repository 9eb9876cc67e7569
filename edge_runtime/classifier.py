"""Raw records in, classes and scores out: the feature transform plus one TFLite interpreter."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, BundleError
from .features import FeatureTransform, dequantize, quantize
from .interpreter import make_interpreter
from .records import Records, RawSchema


@dataclass
class Predictions:
    classes: np.ndarray  # class index per record
    scores: np.ndarray  # probability of that class
    unknown: dict[str, int]  # unseen categories per column in this batch


class TFLiteModel:
    """One interpreter: float rows in, class probabilities out, in batches of `max_batch`;
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

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), int(self.output["shape"][1])), dtype=np.float32)
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
    """Runs a bundle's model on raw records, in batches of at most `max_batch`."""

    def __init__(self, bundle: Bundle, num_threads: int = 1, max_batch: int = 1024):
        self.bundle = bundle
        self.schema = RawSchema.from_spec(bundle.spec["raw"])
        self.transform = FeatureTransform(bundle.spec)
        self.model = TFLiteModel(bundle.model, num_threads, max_batch)
        self._check_matches_spec()

    def _check_matches_spec(self) -> None:
        if self.model.n_inputs != self.transform.n_inputs:
            raise BundleError(f"{self.bundle.path}: the model takes {self.model.n_inputs} inputs "
                              f"but the feature spec selects {self.transform.n_inputs}")
        if self.model.input["dtype"] == np.int8:
            scale, zero_point = self.model.input["quantization"]
            q = self.bundle.spec.get("input_quantization") or {}
            if (q.get("scale"), q.get("zero_point")) != (scale, zero_point):
                raise BundleError(f"{self.bundle.path}: the model's input quantization "
                                  f"({scale}, {zero_point}) differs from the feature spec's {q}")

    def classify(self, records: Records) -> Predictions:
        x, unknown = self.transform.transform(records.columns, records.numeric)
        probabilities = self.model.probabilities(x)
        classes = probabilities.argmax(axis=1)
        return Predictions(classes, probabilities[np.arange(len(classes)), classes], unknown)
