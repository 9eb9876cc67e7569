"""One conformance test for every imbalance method (imbalanced-learn's fit_resample contract),
on data whose classes are separable, so a bad generator shows."""
import numpy as np
import pytest

from edge_ids.train.resample import SAMPLERS, make_sampler, targets

FAST = {"ctgan": {"epochs": 3}, "cflvae": {"epochs": 30, "patience": 30, "batch_size": 32}}
COUNTS = (300, 120, 40, 12)


def _data():
    """Four classes around different centres in [0, 1]^8; class 3 has 12 rows."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.2] * 8, [0.8] * 8, [0.2] * 4 + [0.8] * 4, [0.8] * 4 + [0.2] * 4])
    x = np.vstack([np.clip(c + 0.05 * rng.standard_normal((n, 8)), 0, 1)
                   for c, n in zip(centres, COUNTS)]).astype(np.float32)
    y = np.repeat(np.arange(4), COUNTS)
    return x, y, centres


@pytest.fixture(scope="module")
def resampled():
    x, y, _ = _data()
    out = {}
    for name in SAMPLERS:
        x_in, y_in = x.copy(), y.copy()
        out[name] = make_sampler(name, seed=0, ratio=0.5, **FAST.get(name, {})
                                 ).fit_resample(x_in, y_in)
        assert np.array_equal(x_in, x) and np.array_equal(y_in, y), f"{name} changed its input"
    return out


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_honours_fit_resample(name, resampled):
    x, y, centres = _data()
    x_new, y_new = resampled[name]
    assert x_new.dtype == np.float32 and x_new.shape[1] == x.shape[1]
    assert len(x_new) == len(y_new)
    assert np.array_equal(x_new[:len(x)], x) and np.array_equal(y_new[:len(y)], y)
    assert np.isfinite(x_new).all() and x_new.min() >= 0 and x_new.max() <= 1
    counts = np.bincount(y_new, minlength=4)
    assert counts[0] == COUNTS[0], "the majority class is never resampled"
    if name == "none":
        assert len(y_new) == len(y)
        return
    goal = targets(y, 0.5)
    assert set(goal) == {1, 2, 3}
    for cls, n in goal.items():  # ADASYN decides per class from density: allow 10 %
        assert abs(counts[cls] - n) <= 0.1 * n, (cls, counts[cls], n)
    # new rows of a class lie nearer its own centre than any other class's centre
    new_x, new_y = x_new[len(x):], y_new[len(y):]
    nearest = np.argmin(((new_x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    # interpolation (ROS/SMOTE/ADASYN) stays inside the class; the generative models are
    # looser on 12-row classes (chance is 0.25)
    assert np.mean(nearest == new_y) > {"ctgan": 0.5, "cflvae": 0.4}.get(name, 0.9)


def test_ratio_one_balances_and_unknown_name_is_refused():
    x, y, _ = _data()
    _, y_new = make_sampler("ros", seed=0).fit_resample(x, y)
    assert set(np.bincount(y_new)) == {COUNTS[0]}
    with pytest.raises(ValueError, match="choose from none, ros, smote, adasyn, ctgan, cflvae"):
        make_sampler("tomek")


def test_same_seed_same_samples():
    x, y, _ = _data()
    a = make_sampler("smote", seed=3, ratio=0.5).fit_resample(x, y)[0]
    b = make_sampler("smote", seed=3, ratio=0.5).fit_resample(x, y)[0]
    assert np.array_equal(a, b)
