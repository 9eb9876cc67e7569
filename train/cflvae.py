"""CFLVAE (Khanam et al. 2022): a conditional VAE trained with a class-wise focal reconstruction
loss, used to generate training samples for minority classes.

Architecture 87-40-20-10(z)-20-40-87: the encoder reads [x, one-hot class], the decoder reads
[z, one-hot class] and ends in a sigmoid (features are min-max scaled to [0, 1]); ReLU6,
GlorotNormal and a 5e-4 bias regulariser as in the paper. The loss per sample is

    sum over features of alpha_c * (1 - e^-BCE)^gamma_c * BCE  +  KL(q(z|x,c) || N(0, I))

with gamma_c, alpha_c those of the sample's class: the focal term of train/losses.py applied to
p_t = e^-BCE, which for a 0/1 feature is exactly the probability given to the true value, and for
a continuous one keeps BCE's minimum at x_hat = x.

Encoder and decoder are functional Keras models (TOOLCHAIN.md section 1: a subclassed VAE does
not convert to TFLite); `deploy_graph` gives x_hat = decoder([z_mean(x, c), c]) for export.

Generation (`generate`): "prior" decodes z drawn from N(0, I) with the class, as the paper's
section 3.3.3 describes; "encoded" decodes z drawn from q(z | x, c) of real rows of the class,
so each new row is a variation of a real one (the fidelity study compares both).
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import ops

from .determinism import seed_everything
from .fit import STEPS_PER_EXECUTION, _EpochLine
from .losses import default_classwise, focal_term


@keras.saving.register_keras_serializable(package="edge_ids")
class _Sampling(keras.layers.Layer):
    """z = mean + sigma * eps, and the KL divergence to N(0, I) added as a model loss."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        kl = -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)
        self.add_loss(ops.mean(kl))
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps


class _ClassWiseFocalReconstruction(keras.losses.Loss):
    """y_true = [x, one-hot class]; y_pred = x_hat. Summed over features."""

    def __init__(self, n_features: int, gamma, alpha):
        super().__init__(name="cfl_reconstruction")
        self.n_features, self.gamma, self.alpha = n_features, gamma, alpha

    def call(self, y_true, y_pred):
        x, one_hot = y_true[:, :self.n_features], y_true[:, self.n_features:]
        x_hat = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        bce = -(x * ops.log(x_hat) + (1.0 - x) * ops.log(1.0 - x_hat))
        gamma = ops.sum(one_hot * ops.convert_to_tensor(self.gamma, y_pred.dtype), -1, True)
        alpha = ops.sum(one_hot * ops.convert_to_tensor(self.alpha, y_pred.dtype), -1, True)
        return ops.sum(focal_term(ops.exp(-bce), gamma, alpha), axis=-1)


class CFLVAE:
    def __init__(self, n_features: int, n_classes: int, hidden: tuple[int, ...] = (40, 20),
                 latent: int = 10, gamma: list[float] | None = None,
                 alpha: list[float] | None = None, bias_l2: float = 5e-4, seed: int = 0):
        default_gamma, default_alpha = default_classwise(n_classes)
        self.gamma, self.alpha = gamma or default_gamma, alpha or default_alpha
        self.n_features, self.n_classes, self.latent, self.seed = (n_features, n_classes,
                                                                   latent, seed)

        def dense(units, i, activation="relu6"):
            return keras.layers.Dense(units, activation=activation, name=f"dense_{i}",
                                      kernel_initializer=keras.initializers.GlorotNormal(seed + i),
                                      bias_regularizer=keras.regularizers.L2(bias_l2))

        x_in = keras.Input((n_features,), name="x")
        c_in = keras.Input((n_classes,), name="c")
        h = keras.layers.Concatenate(name="x_and_c")([x_in, c_in])
        for i, units in enumerate(hidden):
            h = dense(units, i)(h)
        z_mean = dense(latent, 10, activation=None)(h)
        z_log_var = dense(latent, 11, activation=None)(h)
        self.encoder = keras.Model([x_in, c_in], [z_mean, z_log_var], name="encoder")

        z_in = keras.Input((latent,), name="z")
        c_dec = keras.Input((n_classes,), name="c")
        h = keras.layers.Concatenate(name="z_and_c")([z_in, c_dec])
        for i, units in enumerate(reversed(hidden)):
            h = dense(units, 20 + i)(h)
        x_hat = dense(n_features, 30, activation="sigmoid")(h)
        self.decoder = keras.Model([z_in, c_dec], x_hat, name="decoder")

        mean, log_var = self.encoder([x_in, c_in])
        z = _Sampling(seed, name="sampling")([mean, log_var])
        self.trainer = keras.Model([x_in, c_in], self.decoder([z, c_in]), name="cflvae")

    def fit(self, x, y, x_val, y_val, *, epochs: int = 500, batch_size: int = 64,
            learning_rate: float = 1e-3, patience: int | None = 10,
            schedule: str | None = None, decay_epochs: int = 10,
            steps_per_execution: int = STEPS_PER_EXECUTION, callbacks: tuple = (),
            echo: Callable[[str], None] | None = None) -> dict:
        """Train on (x, y). patience: early stopping on the validation loss, best weights kept;
        None runs every epoch (the paper). schedule "polynomial": Adam's rate decays to 1e-5
        over `decay_epochs` epochs, as for the paper's DNN (its table 1 covers both models)."""
        seed_everything(self.seed)
        rate = learning_rate
        if schedule == "polynomial":
            steps = decay_epochs * int(np.ceil(len(y) / batch_size))
            rate = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 1e-5,
                                                              power=0.5)
        elif schedule is not None:
            raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'polynomial' "
                             "or None")
        self.trainer.compile(optimizer=keras.optimizers.Adam(rate),
                             loss=_ClassWiseFocalReconstruction(self.n_features, self.gamma,
                                                                self.alpha),
                             steps_per_execution=steps_per_execution)
        c, c_val = self._one_hot(y), self._one_hot(y_val)
        callbacks = list(callbacks) + ([_EpochLine(epochs, echo)] if echo else [])
        if patience is not None:
            callbacks.append(keras.callbacks.EarlyStopping(patience=patience, min_delta=1e-3,
                                                           restore_best_weights=True))
        history = self.trainer.fit([x, c], np.hstack([x, c]), batch_size=batch_size,
                                   epochs=epochs, verbose=0, shuffle=True, callbacks=callbacks,
                                   validation_data=([x_val, c_val], np.hstack([x_val, c_val])))
        val_loss = history.history["val_loss"]
        best = int(np.argmin(val_loss))
        return {"epochs_run": len(val_loss), "best_epoch": best + 1,
                "best_val_loss": float(val_loss[best]),
                "weights_from_epoch": len(val_loss) if patience is None else best + 1}

    def generate(self, cls: int, n: int, rng: np.random.Generator, mode: str = "prior",
                 real: np.ndarray | None = None) -> np.ndarray:
        """n new samples of class `cls`, decoded with the class from z drawn from the prior
        N(0, I) ("prior"), or from q(z | x, c) of `real` rows of the class taken in turn
        ("encoded"; real rows are cycled in a random order)."""
        c = self._one_hot(np.full(n, cls))
        if mode == "prior":
            z = rng.standard_normal((n, self.latent)).astype(np.float32)
        elif mode == "encoded":
            if real is None or not len(real):
                raise ValueError("mode 'encoded' needs real rows of the class")
            rows = real[np.resize(rng.permutation(len(real)), n)]
            mean, log_var = self.encoder.predict([rows, c], batch_size=4096, verbose=0)
            eps = rng.standard_normal(mean.shape).astype(np.float32)
            z = (mean + np.exp(0.5 * log_var) * eps).astype(np.float32)
        else:
            raise ValueError(f"unknown generation mode {mode!r}; use 'prior' or 'encoded'")
        return self.decoder.predict([z, c], batch_size=4096, verbose=0).astype(np.float32)

    def deploy_graph(self) -> keras.Model:
        """x_hat = decoder([z_mean(x, c), c]): deterministic, functional, convertible."""
        x_in = keras.Input((self.n_features,), name="x")
        c_in = keras.Input((self.n_classes,), name="c")
        z_mean, _ = self.encoder([x_in, c_in])
        return keras.Model([x_in, c_in], self.decoder([z_mean, c_in]), name="cflvae_deploy")

    def _one_hot(self, y) -> np.ndarray:
        return np.eye(self.n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
