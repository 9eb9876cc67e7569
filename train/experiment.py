"""One training run: dataset -> feature spec -> imbalance method -> model + loss -> test metrics.

`prepare` does the seed-dependent data work once (validation carve, feature-spec fit, transform
of every split) so a grid of methods shares it; `run_method` trains one method on it. Tuning
only ever sees the validation rows, which are carved from the training file and never resampled.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Method:
    """A row of a results table: model + loss + imbalance method, with their options."""

    name: str
    model: str
    loss: str = "ce"
    resample: str = "none"
    model_options: dict = field(default_factory=dict)
    loss_options: dict = field(default_factory=dict)
    resample_options: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # overrides models.TRAINING[model]


@dataclass
class Prepared:
    dataset: object  # datasets.Dataset
    seed: int
    spec: dict
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    tests: dict[str, tuple[np.ndarray, np.ndarray]]


def prepare(dataset, seed: int, val_fraction: float = 0.2, max_train_rows: int | None = None,
            echo: Callable[[str], None] = print, spec: dict | None = None,
            **feature_options) -> Prepared:
    """Carve a stratified validation split from the training file, fit the feature spec on the
    rest, transform every split. feature_options override dataset.feature_defaults. Given a
    `spec` (a model's own, e.g. for compression), use it instead of fitting one: the same seed
    and fraction give the same split it was fitted on."""
    from ..edge_runtime.model.features import FeatureTransform
    from .feature_spec import fit_feature_spec
    from .fit import split_validation

    train = dataset.train
    rows = np.arange(len(train.y))
    if max_train_rows and max_train_rows < len(rows):  # a quick run: a stratified subset
        rows = split_validation(len(rows), train.y, max_train_rows / len(rows), seed)[1]
    fit_rows, val_rows = (rows[i] for i in split_validation(len(rows), train.y[rows],
                                                            val_fraction, seed))
    if spec is None:
        spec = fit_feature_spec(train.records.take(fit_rows), train.y[fit_rows], dataset.schema,
                                seed=seed, **dict(dataset.feature_defaults) | feature_options)
    transform = FeatureTransform(spec)
    x_all = transform.transform(train.records.columns)[0]
    tests = {name: (transform.transform(s.records.columns)[0], s.y)
             for name, s in dataset.tests.items()}
    echo(f"  seed {seed}: {len(fit_rows):,} training rows, {len(val_rows):,} validation rows, "
         f"{transform.n_inputs} features")
    return Prepared(dataset, seed, spec, x_all[fit_rows], train.y[fit_rows], x_all[val_rows],
                    train.y[val_rows], tests)


def run_method(prep: Prepared, method: Method, echo: Callable[[str], None] = print,
               overrides: dict | None = None, budget: str = "reduced",
               callbacks: tuple = ()) -> dict:
    """Resample, train, evaluate. Returns {"metrics": {test: ...}, "scores": {test: probs},
    "history", "budget", "rows_after_resampling", "seconds", "model"}. `budget` names one of
    models.BUDGETS; `overrides` (quick runs) replace training settings and sampler options for
    every method; `callbacks` go to the classifier's fit."""
    from .evaluate import classification_metrics
    from .fit import STEPS_PER_EXECUTION, fit_classifier
    from .losses import make_loss
    from .models import BUDGETS, build_model, training_recipe
    from .resample import make_sampler

    overrides = overrides or {}
    started = time.monotonic()
    classes = list(prep.dataset.classes)
    sampler_options = dict(method.resample_options)
    if method.resample == "cflvae":
        sampler_options = BUDGETS[budget]["cflvae"] | sampler_options
    if method.resample != "none":
        sampler_options |= overrides.get("samplers", {}) | overrides.get(method.resample, {})
    sampler = make_sampler(method.resample, seed=prep.seed, echo=echo, **sampler_options)
    x, y = sampler.fit_resample(prep.x_fit, prep.y_fit)
    if len(y) != len(prep.y_fit):
        counts = ", ".join(f"{c} {int(np.sum(y == i)):,}" for i, c in enumerate(classes))
        echo(f"      {method.resample}: {len(prep.y_fit):,} -> {len(y):,} rows ({counts})")
    model = build_model(method.model, x.shape[1], len(classes), seed=prep.seed,
                        **method.model_options)
    training = ({"steps_per_execution": STEPS_PER_EXECUTION}
                | training_recipe(method.model, budget) | method.training
                | overrides.get("training", {}))
    loss = make_loss(method.loss, n_classes=len(classes), **method.loss_options)
    history = fit_classifier(model, loss, x, y, prep.x_val, prep.y_val, seed=prep.seed,
                             callbacks=callbacks, **training)
    metrics, scores = {}, {}
    for name, (x_test, y_test) in prep.tests.items():
        scores[name] = model.predict(x_test, batch_size=4096, verbose=0)
        metrics[name] = classification_metrics(y_test, scores[name].argmax(1), classes,
                                               prep.dataset.normal, scores=scores[name])
    used = {"name": budget, "classifier": training}
    if method.resample == "cflvae":
        used["cflvae"] = {"steps_per_execution": STEPS_PER_EXECUTION} | {
            k: v for k, v in sampler_options.items() if k != "echo"}
        used["cflvae_history"] = sampler.history
    return {"metrics": metrics, "scores": scores, "history": history, "model": model,
            "budget": used, "rows_after_resampling": int(len(y)),
            "seconds": time.monotonic() - started}
