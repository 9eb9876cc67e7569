"""Quantization-aware fine-tuning for Keras 3, by hand (tfmot's QAT, like its pruning, rejects
Keras 3 models).

The model is cloned with Dense/Conv1D layers that see their kernels through int8 fake
quantization (symmetric, per output channel, as the TFLite converter quantizes them) and their
outputs through int8 fake quantization over a moving-average range (as calibration sets
activation ranges; a softmax layer's logits are quantized before the softmax, as in the int8
graph). Gradients pass straight through the rounding. After fine-tuning, the weights go back into
a plain copy of the original, which then converts with ordinary post-training int8 quantization:
its weights now sit where rounding costs the least.
"""
from __future__ import annotations

import keras
from keras import ops

from .pruning import prunable_layers


def _fake_quant_kernel(kernel):
    """int8 symmetric per-output-channel (last axis) fake quantization, narrow range."""
    reduce_axes = tuple(range(len(kernel.shape) - 1))
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), 1e-8))
    return keras.quantizers.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8,
                                                         narrow_range=True, axis=-1)


class _ActivationRange:
    """Mixin: a moving-average [min, max] of an output, first set from the first batch."""

    momentum = 0.99

    def _add_range(self):
        def variable(name):
            return self.add_weight(name=name, shape=(), initializer="zeros", trainable=False)
        self.range_min, self.range_max, self.range_seen = (
            variable("range_min"), variable("range_max"), variable("range_seen"))

    def _fake_quant_output(self, y, training):
        if training:
            m = self.momentum * self.range_seen
            self.range_min.assign(m * self.range_min + (1 - m) * ops.min(y))
            self.range_max.assign(m * self.range_max + (1 - m) * ops.max(y))
            self.range_seen.assign(1.0)
        return keras.quantizers.fake_quant_with_min_max_vars(
            y, ops.minimum(self.range_min, 0.0), ops.maximum(self.range_max, 0.0), num_bits=8)


class QATDense(_ActivationRange, keras.layers.Dense):
    def build(self, input_shape):
        super().build(input_shape)
        self._add_range()

    def call(self, inputs, training=None):
        y = ops.matmul(inputs, _fake_quant_kernel(self.kernel))
        if self.use_bias:
            y = ops.add(y, self.bias)
        if self.activation is keras.activations.softmax:
            return self.activation(self._fake_quant_output(y, training))
        return self._fake_quant_output(self.activation(y), training)


class QATConv1D(_ActivationRange, keras.layers.Conv1D):
    def build(self, input_shape):
        super().build(input_shape)
        self._add_range()

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, _fake_quant_kernel(kernel))

    def call(self, inputs, training=None):
        return self._fake_quant_output(super().call(inputs), training)


_QAT_CLASSES = {keras.layers.Dense: QATDense, keras.layers.Conv1D: QATConv1D}


def quantization_aware_model(model: keras.Model, calibration) -> keras.Model:
    """A clone with fake-quantizing layers, holding the model's weights, its activation ranges
    set from one pass over `calibration` rows (before that they are empty)."""
    def clone(layer):
        qat_class = _QAT_CLASSES.get(type(layer))
        if qat_class is None:
            return layer.__class__.from_config(layer.get_config())
        return qat_class.from_config(layer.get_config())

    qat = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, qat.layers):
        weights = source.get_weights()
        target.set_weights(weights + target.get_weights()[len(weights):])
    unsupported = {type(layer).__name__ for layer in prunable_layers(model)
                   if type(layer) not in _QAT_CLASSES}
    if unsupported:
        raise ValueError(f"quantization-aware training does not cover {', '.join(unsupported)}")
    qat(ops.convert_to_tensor(calibration), training=True)
    return qat


def copy_back(qat: keras.Model, model: keras.Model) -> keras.Model:
    """Put the fine-tuned weights into the plain model (the range variables stay behind)."""
    for source, target in zip(qat.layers, model.layers):
        target.set_weights(source.get_weights()[:len(target.weights)])
    return model
