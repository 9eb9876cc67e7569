"""int8 conversion: float vs int8 input/output, the refusal of EXPERIMENTAL_SPARSITY with int8
(and the wrong answers that refusal prevents), and quantization-aware fine-tuning."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from edge_ids.compress.pruning import KeepZeros, MagnitudePruning, PolynomialDecay
from edge_ids.compress.qat import copy_back, quantization_aware_model
from edge_ids.compress.quantize import (UnsafeConversion, _convert, convert, convert_float,
                                        convert_int8)
from edge_ids.edge_runtime.model.classifier import TFLiteModel
from edge_ids.train.models import MODELS, build_dnn


def gaussian(n=4000, width=87, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype("float32")
    return x, (x @ rng.normal(size=(width, classes))).argmax(1)


def trained(model, x, y, epochs=5, callbacks=()):
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0, callbacks=list(callbacks))
    return model


def argmax(tflite: bytes, x) -> np.ndarray:
    return TFLiteModel(tflite).predict(x).argmax(1)


def test_float_and_int8_input_output_agree():
    x, y = gaussian(2000, 30, 4)
    model = trained(MODELS["fnn"](30, 4), x, y)
    keras_classes = model.predict(x, verbose=0).argmax(1)
    int8_io, float_io = convert_int8(model, x[:200], int8_io=True), convert(model, "int8", x[:200])
    assert TFLiteModel(int8_io).input["dtype"] == np.int8
    assert TFLiteModel(float_io).input["dtype"] == np.float32  # QUANTIZE inside the graph
    assert np.mean(argmax(int8_io, x) == argmax(float_io, x)) > 0.99
    assert np.mean(argmax(float_io, x) == keras_classes) > 0.97
    assert np.array_equal(argmax(convert_float(model), x), keras_classes)
    with pytest.raises(ValueError, match="representative"):
        convert(model, "int8")


def test_experimental_sparsity_with_int8_is_refused_because_its_answers_are_wrong():
    """The paper DNN's shape (87-40-20-10-5), pruned to 80 %, as in TOOLCHAIN.md §2."""
    x, y = gaussian()
    model = trained(build_dnn(87, 5, bias_l2=0.0), x, y, epochs=10)
    trained(model, x, y, epochs=10, callbacks=[MagnitudePruning(
        PolynomialDecay(0.8, end_step=220, frequency=10))])
    keras_classes = model.predict(x[:1000], verbose=0).argmax(1)
    with pytest.raises(UnsafeConversion, match="outputs are wrong"):
        convert(model, "int8", x[:200], experimental_sparsity=True)

    # what the refusal prevents: the flag converts silently, then answers wrongly
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(200))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    sparse = _convert(converter)

    def agreement(tflite):
        # XNNPACK refuses some sparse layers outright; the built-in kernels run them
        it = Interpreter(model_content=tflite, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(i["index"], [1000, 87])
        it.allocate_tensors()
        scale, zero = i["quantization"]
        it.set_tensor(i["index"], np.clip(np.round(x[:1000] / scale + zero), -128, 127)
                      .astype(np.int8))
        it.invoke()
        return np.mean(it.get_tensor(o["index"]).argmax(1) == keras_classes)

    assert "DENSIFY" in {op["op_name"] for op in Interpreter(model_content=sparse)
                         ._get_ops_details()}
    assert agreement(convert_int8(model, x[:200], int8_io=True)) > 0.97
    assert agreement(sparse) < 0.8
    # float models are safe with the flag: same answers, smaller file
    sparse_float = convert(model, "none", experimental_sparsity=True)
    assert len(sparse_float) < len(convert_float(model))
    assert np.array_equal(argmax(sparse_float, x[:1000]), keras_classes)


@pytest.mark.parametrize("name", ["fnn", "cnn"])
def test_quantization_aware_fine_tuning(name):
    x, y = gaussian(2000, 30, 4)
    model = trained(MODELS[name](30, 4), x, y, epochs=3,
                    callbacks=[MagnitudePruning(PolynomialDecay(0.5, end_step=20))])
    qat = quantization_aware_model(model, x[:500])
    # the clone starts from the model's weights: at inference only the fake rounding differs
    before = model.predict(x, verbose=0)
    assert np.mean(qat.predict(x, verbose=0).argmax(1) == before.argmax(1)) > 0.9
    trained(qat, x, y, epochs=2, callbacks=[KeepZeros()])
    ranges = [(float(l.range_min.numpy()), float(l.range_max.numpy()))
              for l in qat.layers if hasattr(l, "range_min")]
    assert ranges and all(hi > lo for lo, hi in ranges)  # activation ranges were observed
    copy_back(qat, model)
    after = model.predict(x, verbose=0)
    assert not np.allclose(before, after)  # the fine-tuned weights came back
    kernels = [keras.ops.convert_to_numpy(l.kernel) for l in model.layers if hasattr(l, "kernel")]
    assert all(abs(np.mean(k == 0) - 0.5) < 0.01 for k in kernels)  # zeros held
    int8 = convert(model, "int8", x[:200])
    assert np.mean(argmax(int8, x) == after.argmax(1)) > 0.97
