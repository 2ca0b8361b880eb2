"""A DCGAN prior over VQ-VAE latent maps: the baseline of earlier OASIS work.

The generator (Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks": strided transposed convolutions, batch norm, ReLU) maps noise
to a continuous latent map of the quantizer's shape; the discriminator (strided convolutions,
batch norm, LeakyReLU 0.2) tells it from real quantized maps (codebook vectors at the codes of
real slices). To sample, the generated map is snapped to the nearest codebook vectors and the
resulting codes are decoded by the VQ-VAE. Both networks train with Adam (2e-4, beta1 0.5) and
one-sided label smoothing (real targets 0.9).

Latent maps are divided by ``latent_scale`` (the standard deviation of the real maps) so both
networks see unit-scale inputs; the codebook is copied into the model, so it samples alone.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from oasis_gen.models.distribute import replica_logs
from oasis_gen.models.quantizer import squared_distances

_REGISTER = keras.saving.register_keras_serializable(package="oasis_gen")


@_REGISTER
class LatentDCGAN(keras.Model):
    """DCGAN whose samples are code maps ``[B, grid, grid]`` of a VQ-VAE's (single) bottom level.

    ``fit`` takes batches of int code maps ``[B, grid, grid]``. Tracked: ``d_loss``, ``g_loss``,
    ``d_real_accuracy``, ``d_fake_accuracy``. ``sample_codes(n, seed)`` gives int32 codes
    ``[n, grid, grid]``; ``generate_latents(noise)`` the continuous maps ``[n, grid, grid, D]``.
    The model's ``optimizer`` (from ``compile``) trains the generator; ``discriminator_optimizer``
    (Adam, same learning rate, beta1 0.5) the discriminator.

    Args:
        codebook (array [K, D]): the VQ-VAE level's codebook (copied into a non-trainable weight).
        grid (int): side of the code map; a power of two >= 8.
        noise_dim (int, 128): generator input size.
        base_channels (int, 64): channels of the discriminator's first layer (doubling per layer;
            the generator mirrors them).
        label_smoothing (float, 0.1): real targets are ``1 - label_smoothing``.
        latent_scale (float, 1.0): standard deviation of the real latent maps.
        discriminator_learning_rate (float, 2e-4).

    Raises:
        ValueError: for a grid that is not a power of two >= 8, or a bad codebook.
    """

    def __init__(self, codebook=None, grid: int = 64, noise_dim: int = 128, base_channels: int = 64,
                 label_smoothing: float = 0.1, latent_scale: float = 1.0,
                 discriminator_learning_rate: float = 2e-4, num_embeddings: int | None = None,
                 embedding_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if grid < 8 or grid & (grid - 1):
            raise ValueError(f"grid must be a power of two >= 8, got {grid}")
        if codebook is not None:
            codebook = np.asarray(codebook, np.float32)
            num_embeddings, embedding_dim = codebook.shape
        if not num_embeddings or not embedding_dim:
            raise ValueError("pass a codebook [K, D] (or num_embeddings and embedding_dim when loading)")
        if not 0.0 <= label_smoothing < 0.5 or latent_scale <= 0:
            raise ValueError(f"label_smoothing must be in [0, 0.5) and latent_scale > 0, got {label_smoothing}, "
                             f"{latent_scale}")
        self.grid = grid
        self.noise_dim = noise_dim
        self.base_channels = base_channels
        self.label_smoothing = label_smoothing
        self.latent_scale = float(latent_scale)
        self.discriminator_learning_rate = discriminator_learning_rate
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self._initial_codebook = codebook
        stages = int(math.log2(grid // 4))  # 4x4 -> grid by x2 steps
        widths = [base_channels * 2 ** i for i in range(stages)]  # discriminator widths, fine to coarse
        self.generator = keras.Sequential(
            [keras.Input((noise_dim,)), keras.layers.Dense(4 * 4 * widths[-1], use_bias=False),
             keras.layers.Reshape((4, 4, widths[-1])), keras.layers.BatchNormalization(), keras.layers.ReLU()]
            + [layer for width in reversed(widths[:-1]) for layer in (
                keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False),
                keras.layers.BatchNormalization(), keras.layers.ReLU())]
            + [keras.layers.Conv2DTranspose(self.embedding_dim, 4, strides=2, padding="same")], name="generator")
        discriminator_layers = [keras.Input((grid, grid, self.embedding_dim))]
        for index, width in enumerate(widths):
            discriminator_layers.append(keras.layers.Conv2D(width, 4, strides=2, padding="same", use_bias=index == 0))
            if index:
                discriminator_layers.append(keras.layers.BatchNormalization())
            discriminator_layers.append(keras.layers.LeakyReLU(0.2))
        discriminator_layers += [keras.layers.Flatten(), keras.layers.Dense(1)]
        self.discriminator = keras.Sequential(discriminator_layers, name="discriminator")
        self.discriminator_optimizer = keras.optimizers.Adam(discriminator_learning_rate, beta_1=0.5)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy")}

    def build(self, input_shape=None):
        initializer = (keras.initializers.Constant(self._initial_codebook) if self._initial_codebook is not None
                       else "zeros")
        self.codebook = self.add_weight(name="codebook", shape=(self.num_embeddings, self.embedding_dim),
                                        initializer=initializer, trainable=False)
        self.generator.build((None, self.noise_dim))
        self.discriminator.build((None, self.grid, self.grid, self.embedding_dim))
        # Built now so a saved model restores its slots (an optimizer built lazily would not).
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -------------------------------------------------------------------------- sampling
    def generate_latents(self, noise, training=False):
        """Continuous latent maps [B, grid, grid, D] (codebook units) from noise [B, noise_dim]."""
        return self.generator(noise, training=training) * self.latent_scale

    def snap(self, latents):
        """Codes [B, grid, grid] of the codebook vectors nearest to ``latents`` [B, grid, grid, D]."""
        flat = tf.reshape(tf.cast(latents, tf.float32), (-1, self.embedding_dim))
        distances = squared_distances(flat, self.codebook)
        return tf.reshape(tf.argmin(distances, axis=1, output_type=tf.int32), tf.shape(latents)[:-1])

    def sample_codes(self, num_samples: int, seed: int = 0, batch_size: int = 64) -> np.ndarray:
        """``num_samples`` code maps int32 [N, grid, grid]; the same seed gives the same maps."""
        noise = np.random.default_rng(seed).standard_normal((num_samples, self.noise_dim)).astype(np.float32)
        if getattr(self, "_sample_function", None) is None:  # traced once per model, not per call
            self._sample_function = tf.function(lambda z: self.snap(self.generate_latents(z)), reduce_retracing=True)
        return np.concatenate([self._sample_function(noise[i:i + batch_size]).numpy()
                               for i in range(0, num_samples, batch_size)]) \
            if num_samples else np.zeros((0, self.grid, self.grid), np.int32)

    def call(self, noise, training=False):
        return self.generate_latents(noise, training=training)

    # -------------------------------------------------------------------------- training
    def train_step(self, data):
        codes = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.gather(tf.convert_to_tensor(self.codebook), tf.cast(codes, tf.int32)) / self.latent_scale
        batch = tf.shape(real)[0]
        # Stateless noise keyed by the (saved) step counter, so a resumed run draws the same noise.
        step = tf.cast(self.optimizer.iterations, tf.int64)
        noise = tf.random.stateless_normal((batch, self.noise_dim), seed=tf.stack([tf.constant(7, tf.int64), step]))
        real_target = tf.fill((batch, 1), 1.0 - self.label_smoothing)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        with tf.GradientTape() as tape:
            fake = self.generator(noise, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = bce(real_target, real_logits) + bce(tf.zeros_like(fake_logits), fake_logits)
        gradients = tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.discriminator_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_variables))
        with tf.GradientTape() as tape:
            fake_logits_for_g = self.discriminator(self.generator(noise, training=True), training=True)
            g_loss = bce(tf.ones_like(fake_logits_for_g), fake_logits_for_g)  # non-saturating loss
        gradients = tape.gradient(g_loss, self.generator.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.generator.trainable_variables))
        for name, value in (("d_loss", d_loss), ("g_loss", g_loss),
                            ("d_real_accuracy", tf.reduce_mean(tf.cast(real_logits > 0, tf.float32))),
                            ("d_fake_accuracy", tf.reduce_mean(tf.cast(fake_logits < 0, tf.float32)))):
            self.trackers[name].update_state(value, sample_weight=tf.cast(batch, tf.float32))
        return replica_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def get_config(self):
        config = super().get_config()
        config.update({"grid": self.grid, "noise_dim": self.noise_dim, "base_channels": self.base_channels,
                       "label_smoothing": self.label_smoothing, "latent_scale": self.latent_scale,
                       "discriminator_learning_rate": self.discriminator_learning_rate,
                       "num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim})
        return config


class DiscriminatorWatch(keras.callbacks.Callback):
    """Warns when the discriminator wins outright: it classifies real and fake maps (almost) perfectly
    while the generator's loss is high, so the generator gets no useful gradient."""

    def __init__(self, accuracy: float = 0.98, generator_loss: float = 4.0):
        super().__init__()
        self.accuracy = accuracy
        self.generator_loss = generator_loss
        self.alerts: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        real, fake, g_loss = (float(logs.get(k, 0.0)) for k in ("d_real_accuracy", "d_fake_accuracy", "g_loss"))
        if real >= self.accuracy and fake >= self.accuracy and g_loss >= self.generator_loss:
            self.alerts.append({"epoch": epoch + 1, "d_real_accuracy": real, "d_fake_accuracy": fake,
                                "g_loss": g_loss})
            print(f"WARNING: the discriminator wins outright at epoch {epoch + 1} (real {real:.1%}, fake {fake:.1%} "
                  f"classified correctly; generator loss {g_loss:.2f}). The generator gets almost no gradient: "
                  f"expect collapsed or noisy samples. Try a lower --learning_rate, more --label_smoothing, or "
                  f"restart with another --seed.", flush=True)


def build_dcgan(dcgan_config, codebook: np.ndarray, grid: int, latent_scale: float) -> LatentDCGAN:
    """A built ``LatentDCGAN`` from a ``DCGANConfig``, a codebook [K, D] and the code grid side."""
    model = LatentDCGAN(codebook, grid, dcgan_config.noise_dim, dcgan_config.base_channels,
                        dcgan_config.label_smoothing, latent_scale, dcgan_config.discriminator_learning_rate)
    model.build()
    return model
