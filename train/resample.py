"""Imbalance methods. One contract, imbalanced-learn's: `fit_resample(x, y) -> (x_new, y_new)`
on model inputs (float32 in [0, 1]), returning the original rows first and any new rows after.

- none (ORG): the data as it is.
- ros (RND): random oversampling, imbalanced-learn.
- smote, adasyn: imbalanced-learn; k_neighbors shrinks for a class smaller than k + 1.
- ctgan: one CTGAN (the `ctgan` library, Xu et al. 2019) per minority class, sampled.
- cflvae: the class-wise focal-loss conditional VAE of Khanam et al. 2022 (train/cflvae.py).

`ratio` sets how many rows to reach for every class smaller than the majority, as a fraction
of the majority count: 1.0 balances the classes (the papers' choice), 0.2 tops each minority
class up to a fifth of the majority. Only the training rows are resampled: never validation or
test data.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

SAMPLERS = ("none", "ros", "smote", "adasyn", "ctgan", "cflvae")


def targets(y: np.ndarray, ratio: float) -> dict[int, int]:
    """{class: rows to reach} for the classes present below ratio * majority count."""
    classes, counts = np.unique(y, return_counts=True)
    goal = int(round(ratio * counts.max()))
    return {int(c): goal for c, n in zip(classes, counts) if n < goal}


class NoResampling:
    name = "none"

    def fit_resample(self, x, y):
        return np.asarray(x, dtype=np.float32).copy(), np.asarray(y).copy()


class ImblearnSampler:
    """ros, smote or adasyn from imbalanced-learn, with our `ratio` and a safe k."""

    def __init__(self, name: str, ratio: float = 1.0, seed: int = 0, k_neighbors: int = 5):
        self.name, self.ratio, self.seed, self.k = name, ratio, seed, k_neighbors

    def fit_resample(self, x, y):
        from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

        goal = targets(y, self.ratio)
        if not goal:
            return NoResampling().fit_resample(x, y)
        smallest = min(int(np.sum(y == c)) for c in goal)
        k = max(1, min(self.k, smallest - 1))
        sampler = {"ros": lambda: RandomOverSampler(sampling_strategy=goal,
                                                    random_state=self.seed),
                   "smote": lambda: SMOTE(sampling_strategy=goal, k_neighbors=k,
                                          random_state=self.seed),
                   "adasyn": lambda: ADASYN(sampling_strategy=goal, n_neighbors=k,
                                            random_state=self.seed)}[self.name]()
        try:
            x_new, y_new = sampler.fit_resample(np.asarray(x, dtype=np.float32), y)
        except RuntimeError as e:
            if self.name != "adasyn" or "neigbours" not in str(e):
                raise
            # ADASYN weights each minority row by the share of other classes among its
            # neighbours; when every neighbourhood is pure those weights are all zero, and
            # the uniform weighting it then reduces to is SMOTE's
            return ImblearnSampler("smote", self.ratio, self.seed, self.k).fit_resample(x, y)
        return x_new.astype(np.float32), y_new


class CTGANSampler:
    """One CTGAN per minority class, trained on that class's rows and sampled to its target."""

    name = "ctgan"

    def __init__(self, ratio: float = 1.0, seed: int = 0, epochs: int = 100,
                 batch_size: int = 500, echo: Callable[[str], None] | None = None):
        self.ratio, self.seed, self.epochs, self.batch_size, self.echo = (ratio, seed, epochs,
                                                                          batch_size, echo)

    def fit_resample(self, x, y):
        try:
            import pandas as pd
            import torch
            from ctgan import CTGAN
        except ImportError as e:
            raise RuntimeError("CTGAN sampling needs the ctgan library: "
                               "pip install 'edge-ids[gan]'") from e
        torch.set_num_threads(1)  # torch's default thread pool fights TensorFlow's
        x = np.asarray(x, dtype=np.float32)
        new_x, new_y = [x], [np.asarray(y)]
        for cls, goal in targets(y, self.ratio).items():
            rows = x[y == cls]
            if self.echo:
                self.echo(f"      CTGAN for class {cls}: {len(rows):,} rows -> {goal:,}")
            # pac (default 10) must divide the batch; keep the batch within the class size
            batch = max(10, min(self.batch_size, len(rows)) // 10 * 10)
            gan = CTGAN(epochs=self.epochs, batch_size=batch, verbose=False, enable_gpu=False)
            gan.set_random_state(self.seed)
            gan.fit(pd.DataFrame(rows, columns=[f"f{i}" for i in range(rows.shape[1])]))
            sample = gan.sample(goal - len(rows)).to_numpy(dtype=np.float32)
            new_x.append(np.clip(sample, 0.0, 1.0))
            new_y.append(np.full(len(sample), cls, dtype=np.asarray(y).dtype))
        return np.vstack(new_x), np.concatenate(new_y)


class CFLVAESampler:
    """Train a CFLVAE on all training rows (20 % held out for its validation loss), then
    generate each minority class up to its target, from the prior or from encoded real rows
    of the class (`mode`, see train/cflvae.py). The defaults are the reduced budget
    (models.BUDGETS): at most 200 epochs in batches of 256 with early stopping; the paper's
    is 500 epochs in batches of 64 under the polynomial decay, which `reproduce` uses."""

    name = "cflvae"

    def __init__(self, ratio: float = 1.0, seed: int = 0, epochs: int = 200,
                 batch_size: int = 256, patience: int | None = 10, schedule: str | None = None,
                 mode: str = "prior", gamma=None, alpha=None,
                 echo: Callable[[str], None] | None = None):
        self.ratio, self.seed, self.epochs, self.batch_size = ratio, seed, epochs, batch_size
        self.patience, self.schedule, self.mode = patience, schedule, mode
        self.gamma, self.alpha, self.echo = gamma, alpha, echo
        self.history: dict = {}
        self.vae = None

    def fit_resample(self, x, y):
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        goal = targets(y, self.ratio)
        if not goal:
            return NoResampling().fit_resample(x, y)
        self.fit(x, y)
        return self.generate(x, y, goal)

    def fit(self, x, y, callbacks: tuple = ()) -> dict:
        """Train the CFLVAE alone (the fidelity study generates from it in several ways)."""
        from .cflvae import CFLVAE
        from .fit import split_validation

        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        fit_rows, val_rows = split_validation(len(y), _stratifiable(y), 0.2, self.seed)
        self.vae = vae = CFLVAE(x.shape[1], int(y.max()) + 1, gamma=self.gamma,
                                alpha=self.alpha, seed=self.seed)
        self.history = vae.fit(x[fit_rows], y[fit_rows], x[val_rows], y[val_rows],
                               epochs=self.epochs, batch_size=self.batch_size,
                               patience=self.patience, schedule=self.schedule,
                               callbacks=callbacks, echo=self.echo)
        return self.history

    def generate(self, x, y, goal: dict[int, int]):
        """The rows, then the generated rows that bring each class in `goal` to its target."""
        rng = np.random.default_rng(self.seed)
        new_x, new_y = [x], [y]
        for cls, target in goal.items():
            n = target - int(np.sum(y == cls))
            new_x.append(self.vae.generate(cls, n, rng, self.mode, real=x[y == cls]))
            new_y.append(np.full(n, cls, dtype=y.dtype))
        return np.vstack(new_x), np.concatenate(new_y)


def _stratifiable(y: np.ndarray) -> np.ndarray:
    """Labels for a stratified split; a class with one row joins the majority class there."""
    classes, counts = np.unique(y, return_counts=True)
    lonely = classes[counts < 2]
    return np.where(np.isin(y, lonely), classes[np.argmax(counts)], y)


def make_sampler(name: str, seed: int = 0, ratio: float = 1.0,
                 echo: Callable[[str], None] | None = None, **options):
    """An imbalance method by name (see SAMPLERS); options go to its constructor."""
    if name == "none":
        return NoResampling()
    if name in ("ros", "smote", "adasyn"):
        return ImblearnSampler(name, ratio=ratio, seed=seed, **options)
    if name == "ctgan":
        return CTGANSampler(ratio=ratio, seed=seed, echo=echo, **options)
    if name == "cflvae":
        return CFLVAESampler(ratio=ratio, seed=seed, echo=echo, **options)
    raise ValueError(f"unknown imbalance method {name!r}; choose from {', '.join(SAMPLERS)}")
