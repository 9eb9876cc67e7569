"""The anomaly-model family (every member, one shared test) and the operating point."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.train.anomaly import ANOMALY_MODELS, make_anomaly_model
from edge_ids.train.datasets import nsl_kdd
from edge_ids.train.feature_spec import fit_feature_spec
from edge_ids.train.operating_point import (BudgetError, CLASSIFIER_SHARE, check_budget,
                                            choose_operating_point)

FAST = {"autoencoder": {"epochs": 8}, "isolation_forest": {"n_estimators": 50}}


@pytest.fixture(scope="module")
def rows(data_dir):
    """Feature rows of the 20 % training file on the anomaly models' log scale: benign rows to
    fit, other benign rows and attack rows to score."""
    train = nsl_kdd.load("KDDTrain+_20Percent", data_dir)
    rng = np.random.default_rng(0)
    benign = rng.permutation(np.flatnonzero(train.y == 0))
    attacks = rng.permutation(np.flatnonzero(train.y != 0))[:2000]
    fit, held = benign[:6000], benign[6000:8000]
    spec = fit_feature_spec(train.records.take(fit), None, nsl_kdd.SCHEMA, k=None,
                            zero_ratio=1.0, zero_scope="none", scale="log")
    x = FeatureTransform(spec).transform(train.records.columns)[0]
    return x[fit], x[held], x[attacks]


def test_the_family_registry_has_the_shipped_model_and_the_comparison():
    assert set(ANOMALY_MODELS) == {"autoencoder", "isolation_forest"}
    assert ANOMALY_MODELS["autoencoder"].deployable
    assert not ANOMALY_MODELS["isolation_forest"].deployable
    with pytest.raises(ValueError, match="unknown anomaly model 'pca'; choose from"):
        make_anomaly_model("pca")


@pytest.mark.parametrize("name", sorted(ANOMALY_MODELS))
def test_every_anomaly_model_learns_benign_rows_and_scores_attacks_higher(name, rows):
    """One interface: fit(benign, early-stop rows) -> history; score(x) -> a finite float per
    row, higher for what is not like the benign rows; the same seed, the same scores."""
    fit, held, attacks = rows
    model = make_anomaly_model(name, seed=3, **FAST[name])
    history = model.fit(fit[:5000], fit[5000:])
    assert history["fit_rows"] == 5000
    scores = model.score(np.concatenate([held, attacks]))
    assert scores.shape == (len(held) + len(attacks),) and np.isfinite(scores).all()
    truth = np.r_[np.zeros(len(held)), np.ones(len(attacks))]
    # random scoring gives 0.5; a model that learned benign traffic ranks attacks far above it
    assert roc_auc_score(truth, scores) > 0.85
    again = make_anomaly_model(name, seed=3, **FAST[name])
    again.fit(fit[:5000], fit[5000:])
    np.testing.assert_array_equal(again.score(held[:200]), model.score(held[:200]))


def test_operating_point_spends_exactly_the_budget_on_validation_rows():
    scores = np.random.default_rng(1).exponential(size=2000)
    point = choose_operating_point(0.01, scores)
    assert np.sum(scores > point["threshold"]) == 20  # 1 % of 2,000
    assert point["threshold"] in scores and point["validation_fpr"] == 0.01
    assert point["normal_threshold"] == 1.0


def test_a_hybrid_classifier_over_its_share_is_made_stricter():
    rng = np.random.default_rng(2)
    n = 2000
    scores = rng.exponential(size=n)
    normal_probability = rng.uniform(size=n)
    attack_named = normal_probability < 0.1  # it would call 10 % of benign rows attacks
    point = choose_operating_point(0.02, scores, normal_probability, attack_named)
    share = int(CLASSIFIER_SHARE * 0.02 * n)
    by_classifier = attack_named & (normal_probability < point["normal_threshold"])
    assert by_classifier.sum() == share == round(point["classifier_validation_fpr"] * n)
    flagged = by_classifier | (scores > point["threshold"])
    assert flagged.sum() == 40 and point["validation_fpr"] == 0.02
    # a classifier within its share keeps plain argmax
    modest = normal_probability < 0.002
    assert choose_operating_point(0.02, scores, normal_probability, modest)[
        "normal_threshold"] == 1.0


@pytest.mark.parametrize("budget", [0.0, -0.1, 0.51, 1.0])
def test_a_budget_outside_its_range_is_refused(budget):
    with pytest.raises(BudgetError, match=r"outside \(0, 0.5\]"):
        check_budget(budget, 10_000)


def test_too_few_validation_rows_for_the_budget_are_refused():
    with pytest.raises(BudgetError, match="allows 3 false alarms; a threshold needs at least 5 "
                                          r"\(≥ 500 validation rows\)"):
        choose_operating_point(0.01, np.ones(300))
