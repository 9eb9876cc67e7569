"""One shared test for every loss in train/losses.py, plus each loss's defining property."""
import keras
import numpy as np
import pytest

from edge_ids.train.losses import LOSSES, make_loss

N_CLASSES = 4
Y = np.array([0, 1, 2, 3, 1, 0])
GOOD = np.eye(N_CLASSES, dtype=np.float32)[Y] * 0.9 + 0.025  # confident and right
BAD = np.roll(GOOD, 1, axis=1)  # confident and wrong


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_honours_the_interface(name):
    loss = make_loss(name, n_classes=N_CLASSES)
    good, bad = float(loss(Y, GOOD)), float(loss(Y, BAD))
    assert np.isfinite(good) and np.isfinite(bad) and good >= 0
    assert good < bad, "a right prediction must cost less than a wrong one"
    assert float(loss(Y.reshape(-1, 1), GOOD)) == pytest.approx(good)  # (n,) or (n, 1) labels
    # it survives a save/load round trip inside a compiled model
    clone = type(loss).from_config(loss.get_config())
    assert float(clone(Y, BAD)) == pytest.approx(bad, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_trains_a_model(name):
    rng = np.random.default_rng(0)
    x = rng.random((400, 6)).astype(np.float32)
    y = (x[:, 0] * N_CLASSES).astype(int).clip(0, N_CLASSES - 1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(N_CLASSES, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), make_loss(name, n_classes=N_CLASSES))
    history = model.fit(x, y, epochs=15, batch_size=50, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert np.mean(model.predict(x, verbose=0).argmax(1) == y) > 0.5


def test_focal_reduces_to_cross_entropy_at_gamma_0():
    ce = float(make_loss("ce")(Y, BAD))
    assert float(make_loss("focal", gamma=0.0, alpha=1.0)(Y, BAD)) == pytest.approx(ce, rel=1e-5)


def test_focal_down_weights_easy_examples():
    ce, focal = make_loss("ce"), make_loss("focal", gamma=2.0, alpha=1.0)
    assert float(focal(Y, GOOD)) < 0.05 * float(ce(Y, GOOD))


def test_per_class_alpha_weights_each_class():
    only_class_3 = make_loss("focal", gamma=2.0, alpha=[0.0, 0.0, 0.0, 1.0])
    y3 = np.array([3, 3])
    assert float(only_class_3(np.array([0, 1]), BAD[:2])) == 0.0
    assert float(only_class_3(y3, BAD[3:4].repeat(2, 0))) > 0


def test_classwise_focal_equals_focal_when_all_classes_share_gamma_and_alpha():
    same = make_loss("classwise_focal", gamma=[2.0] * 4, alpha=[0.5] * 4)
    assert float(same(Y, BAD)) == pytest.approx(
        float(make_loss("focal", gamma=2.0, alpha=0.5)(Y, BAD)), rel=1e-6)
    with pytest.raises(ValueError, match="one gamma and one alpha per class"):
        make_loss("classwise_focal", gamma=[1.0, 2.0], alpha=[0.5])


def test_dice_is_zero_for_perfect_predictions():
    perfect = np.eye(N_CLASSES, dtype=np.float32)[Y]
    assert float(make_loss("dice")(Y, perfect)) == pytest.approx(0.0, abs=1e-6)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="choose from ce, focal, classwise_focal, dice"):
        make_loss("hinge")
