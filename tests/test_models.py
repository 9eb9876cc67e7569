"""One shared test for every model builder: softmax output, trains, converts to int8 TFLite
and runs on the device's interpreter with the same predictions."""
import numpy as np
import pytest

from edge_ids.compress.quantize import convert_int8
from edge_ids.edge_runtime.model.interpreter import make_interpreter
from edge_ids.train.fit import fit_classifier
from edge_ids.train.losses import make_loss
from edge_ids.train.models import MODELS, TRAINING, build_model


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_converts_and_runs_on_litert(name):
    rng = np.random.default_rng(1)
    x = rng.random((600, 20)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(int) + 2 * (x[:, 1] > 0.7)
    model = build_model(name, 20, 4, seed=1)
    assert set(TRAINING[name]) <= {"learning_rate", "batch_size", "epochs", "schedule",
                                   "decay_epochs", "patience", "min_delta"}
    probs = model.predict(x[:8], verbose=0)
    assert probs.shape == (8, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)

    training = TRAINING[name] | {"epochs": 30, "batch_size": 16}  # enough steps on 500 rows
    fit_classifier(model, make_loss("ce"), x[:500], y[:500], x[500:], y[500:], **training)
    float_pred = model.predict(x, verbose=0).argmax(1)
    assert np.mean(float_pred == y) > 0.6  # the majority class is 35 %

    interpreter = make_interpreter(convert_int8(model, x[:200]))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    interpreter.resize_tensor_input(inp["index"], [len(x), 20])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.clip(np.round(x / scale + zero), -128, 127)
                           .astype(np.int8))
    interpreter.invoke()
    int8_pred = interpreter.get_tensor(out["index"]).argmax(1)
    assert np.mean(int8_pred == float_pred) > 0.95


def test_paper_architectures():
    dnn = build_model("dnn", 87, 5)
    assert [layer.units for layer in dnn.layers[1:]] == [40, 20, 10, 5]
    assert dnn.layers[1].activation.__name__ == "relu6"
    assert dnn.layers[1].bias_regularizer is not None
    fnn = build_model("fnn", 40, 2, hidden=(50,))
    assert [layer.units for layer in fnn.layers[1:]] == [50, 2]
    with pytest.raises(ValueError, match="choose from fnn, cnn, dnn"):
        build_model("rnn", 4, 2)
