"""Hierarchical VQ-VAE-2 (Razavi et al. 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2").

For a 256x256 slice the bottom encoder downsamples x4 (64x64 features), the top encoder x2 more
(32x32). The top level is quantized and decoded back to 64x64; the bottom quantizer sees the
bottom features together with that decoded top; the decoder sees both quantized levels (the top
one upsampled x2) and reconstructs the slice.

With ``levels=1`` the same model family is the single-level VQ-VAE of van den Oord et al. (2017)
that earlier OASIS work used: the bottom encoder, one 64x64 code map, one codebook, the decoder.
Code maps keep their names: the single map is the ``bottom`` one and ``top`` is ``None``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from oasis_gen.models.distribute import replica_logs
from oasis_gen.models.distribute import scale_loss_for_replicas as _scale_for_replicas
from oasis_gen.models.quantizer import VectorQuantizerEMA
from oasis_gen.seeds import derive_seed

_REGISTER = keras.saving.register_keras_serializable(package="oasis_gen")


@_REGISTER
class ResidualStack(keras.layers.Layer):
    """``num_layers`` blocks of ``x + conv1x1(relu(conv3x3(relu(x))))``, then a ReLU (van den Oord et al. 2017).

    Args:
        num_hiddens (int): channels in and out.
        num_residual_hiddens (int): bottleneck channels.
        num_layers (int): residual blocks.
    """

    def __init__(self, num_hiddens: int, num_residual_hiddens: int, num_layers: int, **kwargs):
        super().__init__(**kwargs)
        if min(num_hiddens, num_residual_hiddens) < 1 or num_layers < 0:
            raise ValueError(f"invalid residual stack sizes: num_hiddens={num_hiddens}, "
                             f"num_residual_hiddens={num_residual_hiddens}, num_layers={num_layers}")
        self.num_hiddens = num_hiddens
        self.num_residual_hiddens = num_residual_hiddens
        self.num_layers = num_layers
        policy = self.dtype_policy  # sub-layers compute as this layer does
        self.blocks = [(keras.layers.Conv2D(num_residual_hiddens, 3, padding="same", name=f"res{i}_3x3", dtype=policy),
                        keras.layers.Conv2D(num_hiddens, 1, name=f"res{i}_1x1", dtype=policy)) for i in range(num_layers)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv3, conv1 in self.blocks:
            conv3.build(shape)
            conv1.build(shape[:-1] + (self.num_residual_hiddens,))

    def call(self, inputs):
        x = inputs
        for conv3, conv1 in self.blocks:
            x = x + conv1(tf.nn.relu(conv3(tf.nn.relu(x))))
        return tf.nn.relu(x)

    def get_config(self):
        config = super().get_config()
        config.update({"num_hiddens": self.num_hiddens, "num_residual_hiddens": self.num_residual_hiddens,
                       "num_layers": self.num_layers})
        return config


def _conv(filters, kernel, strides=1, name=None, dtype=None):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", name=name, dtype=dtype)


def _deconv(filters, kernel, strides=2, name=None, dtype=None):
    return keras.layers.Conv2DTranspose(filters, kernel, strides=strides, padding="same", name=name, dtype=dtype)


@_REGISTER
class VQVAE2(keras.Model):
    """Two-level VQ-VAE-2 with EMA codebooks, as a trainable, savable Keras model.

    Shape contract (``image_size = 256``): images ``[B, 256, 256, 1]`` float32 in [0, 1];
    ``encode`` gives ``top_codes [B, 32, 32]`` and ``bottom_codes [B, 64, 64]`` int32;
    ``decode_codes`` maps them back to images ``[B, 256, 256, 1]`` in [0, 1] (the decoder output
    is clipped with a straight-through gradient, so the black background is exact). Example::

        model = VQVAE2(image_size=256)
        top_codes, bottom_codes = model.encode(images)
        reconstructions = model.decode_codes(top_codes, bottom_codes)

    ``train_step``/``test_step`` live on the model (``fit`` works on a dataset of image batches);
    the loss is ``mse / data_variance + top commitment + bottom commitment`` (+ the weighted top-only
    term, see ``top_reconstruction_weight``). Tracked metrics: ``loss``, ``reconstruction_loss``,
    ``commitment_loss``, ``top_only_loss`` (with the top-only term), ``{top,bottom}_perplexity``,
    ``{top,bottom}_usage``, ``{top,bottom}_norm_ratio`` (largest code norm over largest encoder-output
    norm: an exploding codebook shows as a ratio far above 1), and in ``test_step`` also ``ssim`` and ``psnr``.

    Args:
        image_size (int, 256): side of the square input; divisible by 8.
        num_hiddens (int, 128): encoder/decoder channels.
        num_residual_layers (int, 2): residual blocks per stack.
        num_residual_hiddens (int, 32): residual bottleneck channels.
        num_embeddings (int, 512): codebook size per level.
        embedding_dim (int, 64): code vector dimension.
        commitment_cost (float, 0.25), decay (float, 0.99), epsilon (float, 1e-5),
        dead_code_threshold (float, 1.0): quantizer settings (see ``VectorQuantizerEMA``).
        data_variance (float, 0.06): variance of training pixels; normalises the reconstruction loss.
        seed (int, 0): seed of the quantizers' restart draws.
        levels (int, 2): 2 for the hierarchy; 1 for a single 64x64 code map (no top level: ``encode``
            returns ``(None, bottom_codes)`` and ``decode_codes`` takes ``top_codes=None``).
        top_downsample (int, 2): the top map is the bottom map downsampled x2 (32x32 for 256x256
            slices) or x4 (16x16: fewer, coarser codes that carry the layout).
        top_reconstruction_weight (float, 0.0): weight of a top-only reconstruction term. A small
            head decodes the top codes alone to the slice at the bottom map's resolution (64x64 for
            256x256 slices) and its MSE against the slice averaged over 4x4 pixels (over
            ``data_variance``) joins the loss, so the top codes must carry the slice's layout and
            cannot leave it all to the bottom codes. The head is used in training only.

    Raises:
        ValueError: for an image size not divisible by 8, non-positive sizes or levels not 1 or 2.
    """

    def __init__(self, image_size: int = 256, num_hiddens: int = 128, num_residual_layers: int = 2,
                 num_residual_hiddens: int = 32, num_embeddings: int = 512, embedding_dim: int = 64,
                 commitment_cost: float = 0.25, decay: float = 0.99, epsilon: float = 1e-5,
                 dead_code_threshold: float = 1.0, data_variance: float = 0.06, seed: int = 0, levels: int = 2,
                 top_downsample: int = 2, top_reconstruction_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {levels}")
        if top_downsample not in (2, 4):
            raise ValueError(f"top_downsample must be 2 or 4, got {top_downsample}")
        if image_size < 4 * top_downsample or image_size % (4 * top_downsample):
            raise ValueError(f"image_size must be a positive multiple of {4 * top_downsample}, got {image_size}")
        if top_reconstruction_weight < 0 or (top_reconstruction_weight and levels == 1):
            raise ValueError(f"top_reconstruction_weight must be >= 0 and needs two levels, got "
                             f"{top_reconstruction_weight} with levels={levels}")
        if num_hiddens < 2 or data_variance <= 0:
            raise ValueError(f"num_hiddens must be >= 2 (got {num_hiddens}) and data_variance > 0 "
                             f"(got {data_variance})")
        self.image_size = image_size
        self.num_hiddens = num_hiddens
        self.num_residual_layers = num_residual_layers
        self.num_residual_hiddens = num_residual_hiddens
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.epsilon = epsilon
        self.dead_code_threshold = dead_code_threshold
        self.data_variance = data_variance
        self.seed = seed
        self.levels = levels
        self.top_downsample = top_downsample
        self.top_reconstruction_weight = float(top_reconstruction_weight)

        def residual(name):
            return ResidualStack(num_hiddens, num_residual_hiddens, num_residual_layers, name=name)

        half = num_hiddens // 2
        self.bottom_encoder = [_conv(half, 4, 2, "enc_b_down1"), _conv(num_hiddens, 4, 2, "enc_b_down2"),
                               _conv(num_hiddens, 3, 1, "enc_b_conv"), residual("enc_b_res")]
        quantizer_args = dict(num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                              commitment_cost=commitment_cost, decay=decay, epsilon=epsilon,
                              dead_code_threshold=dead_code_threshold)
        if levels == 2:
            coarser = [_conv(num_hiddens, 4, 2, "enc_t_down2")] if top_downsample == 4 else []
            self.top_encoder = [_conv(num_hiddens, 4, 2, "enc_t_down"), *coarser,
                                _conv(num_hiddens, 3, 1, "enc_t_conv"), residual("enc_t_res")]
            self.top_pre_quantize = _conv(embedding_dim, 1, 1, "top_pre_vq", dtype="float32")
            self.top_quantizer = VectorQuantizerEMA(**quantizer_args, seed=derive_seed(seed, "restart/top"),
                                                   name="top_quantizer")
            finer = [_deconv(num_hiddens, 4, 2, "dec_t_up2")] if top_downsample == 4 else []
            self.top_decoder = [_conv(num_hiddens, 3, 1, "dec_t_conv"), residual("dec_t_res"), *finer,
                                _deconv(embedding_dim, 4, 2, "dec_t_up")]
        # Under a mixed policy the layers next to the quantizers and the image compute in float32: the
        # codebook sees full-precision vectors and the output pixels are not rounded to bfloat16's 8 bits.
        # They are cheap: 1x1 convolutions to the embedding and the two 1-channel output convolutions.
        self.bottom_pre_quantize = _conv(embedding_dim, 1, 1, "bottom_pre_vq", dtype="float32")
        self.bottom_quantizer = VectorQuantizerEMA(**quantizer_args, seed=derive_seed(seed, "restart/bottom"),
                                                name="bottom_quantizer")
        if levels == 2:  # created here to keep the variable order of saved two-level models
            self.top_upsample = _deconv(embedding_dim, 4, 2, "top_upsample")
            if top_downsample == 4:
                self.top_upsample_coarse = _deconv(embedding_dim, 4, 2, "top_upsample2")
        self.decoder = [_conv(num_hiddens, 3, 1, "dec_conv"), residual("dec_res"),
                        _deconv(half, 4, 2, "dec_up1"), _deconv(1, 4, 2, "dec_up2", dtype="float32")]
        if self.top_reconstruction_weight:  # top codes alone -> the slice at the bottom grid's resolution
            ups = [_deconv(half, 4, 2, f"top_only_up{i}") for i in range(int(math.log2(top_downsample)))]
            self.top_only_decoder = [_conv(num_hiddens, 3, 1, "top_only_conv"), *ups,
                                     _conv(1, 3, 1, "top_only_out", dtype="float32")]

        per_level = [f"{level}_{name}" for level in self.level_names for name in ("perplexity", "usage", "norm_ratio")]
        losses = ["loss", "reconstruction_loss", "commitment_loss"]
        if self.top_reconstruction_weight:
            losses.append("top_only_loss")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in losses + per_level}
        self.eval_trackers = {name: keras.metrics.Mean(name=name) for name in ("ssim", "psnr")}

    @property
    def level_names(self) -> tuple[str, ...]:
        """The code maps this model has, coarse to fine: ``("top", "bottom")`` or ``("bottom",)``."""
        return ("top", "bottom") if self.levels == 2 else ("bottom",)

    @property
    def top_grid(self) -> int:
        """Side of the top code map (image_size / 8, or / 16 with ``top_downsample=4``)."""
        return self.image_size // (4 * self.top_downsample)

    @property
    def bottom_grid(self) -> int:
        """Side of the bottom code map (image_size / 4)."""
        return self.image_size // 4

    def build(self, input_shape=None):
        images = tf.zeros((1, self.image_size, self.image_size, 1))
        if self.top_reconstruction_weight:  # builds the top-only head too
            self._forward_losses(images, training=False)
        else:
            self.call(images)

    # -------------------------------------------------------------------------- building blocks
    @staticmethod
    def _run(layers, x, relu_between=True):
        for index, layer in enumerate(layers):
            x = layer(x)
            if relu_between and index < len(layers) - 1 and not isinstance(layer, ResidualStack):
                x = tf.nn.relu(x)
        return x

    def _check(self, images):
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != 1 or any(
                side is not None and side != self.image_size for side in shape[1:3]):
            raise ValueError(f"expected images [B, {self.image_size}, {self.image_size}, 1] in [0, 1], "
                             f"got shape {tuple(shape)}")

    def _quantize(self, images, training=False):
        """Quantizer outputs ``(top or None, bottom)``."""
        self._check(images)
        x = tf.cast(images, self.compute_dtype) - 0.5
        bottom_features = self._run(self.bottom_encoder, x)
        if self.levels == 1:
            return None, self.bottom_quantizer(self.bottom_pre_quantize(bottom_features), training=training)
        top_features = self._run(self.top_encoder, bottom_features)
        top = self.top_quantizer(self.top_pre_quantize(top_features), training=training)
        decoded_top = self._run(self.top_decoder, tf.cast(top["quantized"], self.compute_dtype))
        bottom_input = self.bottom_pre_quantize(tf.concat([bottom_features, decoded_top], axis=-1))
        bottom = self.bottom_quantizer(bottom_input, training=training)
        return top, bottom

    def _decode(self, top_quantized, bottom_quantized):
        x = tf.cast(bottom_quantized, self.compute_dtype)
        if self.levels == 2:
            top = tf.cast(top_quantized, self.compute_dtype)
            if self.top_downsample == 4:
                top = tf.nn.relu(self.top_upsample_coarse(top))
            x = tf.concat([x, self.top_upsample(top)], axis=-1)
        x = tf.cast(self._run(self.decoder, x), tf.float32) + 0.5
        # Clip to [0, 1] with a straight-through gradient: the black MRI background is reproduced
        # exactly (any negative output is 0), while a brain pixel stuck below 0 still gets a gradient.
        # A linear output leaves a faint background haze that MSE ignores but SSIM punishes hard.
        return x + tf.stop_gradient(tf.clip_by_value(x, 0.0, 1.0) - x)

    @staticmethod
    def _quantized(level):
        return None if level is None else level["quantized"]

    # -------------------------------------------------------------------------- public API
    def call(self, images, training=False):
        top, bottom = self._quantize(images, training=training)
        return self._decode(self._quantized(top), bottom["quantized"])

    def encode(self, images):
        """Code maps of ``images`` [B, H, W, 1]: ``(top_codes [B, H/8, W/8] (H/16 with top_downsample 4),
        bottom_codes [B, H/4, W/4])`` int32 (``top_codes`` is None for a single-level model)."""
        top, bottom = self._quantize(images, training=False)
        return (None if top is None else top["indices"]), bottom["indices"]

    def decode_codes(self, top_codes, bottom_codes):
        """Images [B, H, W, 1] (float32 in [0, 1]) from the code maps (``top_codes`` None for one level)."""
        top = None if self.levels == 1 else self.top_quantizer.lookup(top_codes)
        return self._decode(top, self.bottom_quantizer.lookup(bottom_codes))

    def decode_quantized(self, top_quantized, bottom_quantized):
        """Images [B, H, W, 1] in [0, 1] from the levels' quantized vectors (``quantize_levels``' outputs)."""
        return self._decode(top_quantized, bottom_quantized)

    def quantize_levels(self, images):
        """The quantizer outputs ``(top or None, bottom)`` (dicts, see ``VectorQuantizerEMA``), without EMA updates."""
        return self._quantize(images, training=False)

    # -------------------------------------------------------------------------- training
    @property
    def metrics(self):
        return list(self.trackers.values()) + list(self.eval_trackers.values())

    def _forward_losses(self, images, training):
        """``(reconstructions, losses, top, bottom)``; ``losses`` holds ``loss`` (what is minimised) and its terms."""
        top, bottom = self._quantize(images, training=training)
        reconstructions = self._decode(self._quantized(top), bottom["quantized"])
        losses = {"reconstruction_loss": tf.reduce_mean(tf.square(reconstructions - images)) / self.data_variance,
                  "commitment_loss": bottom["loss"] + (0.0 if top is None else top["loss"])}
        losses["loss"] = losses["reconstruction_loss"] + losses["commitment_loss"]
        if self.top_reconstruction_weight:
            coarse = self._run(self.top_only_decoder, tf.cast(top["quantized"], self.compute_dtype))
            target = tf.nn.avg_pool2d(images, 4, 4, "VALID")
            losses["top_only_loss"] = tf.reduce_mean(
                tf.square(tf.cast(coarse, tf.float32) + 0.5 - target)) / self.data_variance
            losses["loss"] += self.top_reconstruction_weight * losses["top_only_loss"]
        return reconstructions, losses, top, bottom

    def _track(self, losses, top, bottom, batch):
        values = dict(losses)
        for name, level in (("top", top), ("bottom", bottom)):
            if level is not None:
                values.update({f"{name}_{key}": level[key] for key in ("perplexity", "usage", "norm_ratio")})
        for name, value in values.items():  # weighted by batch size: a short last batch is not over-weighted
            self.trackers[name].update_state(value, sample_weight=batch)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            _, losses, top, bottom = self._forward_losses(images, training=True)
            scaled = _scale_for_replicas(self.optimizer, losses["loss"])
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._track(losses, top, bottom, tf.cast(tf.shape(images)[0], tf.float32))
        return replica_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def test_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        reconstructions, losses, top, bottom = self._forward_losses(images, training=False)
        self._track(losses, top, bottom, tf.cast(tf.shape(images)[0], tf.float32))
        self.eval_trackers["ssim"].update_state(tf.image.ssim(images, reconstructions, max_val=1.0))
        self.eval_trackers["psnr"].update_state(psnr(images, reconstructions))
        return replica_logs({tracker.name: tracker.result() for tracker in self.metrics})

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": self.image_size, "num_hiddens": self.num_hiddens,
                       "num_residual_layers": self.num_residual_layers,
                       "num_residual_hiddens": self.num_residual_hiddens, "num_embeddings": self.num_embeddings,
                       "embedding_dim": self.embedding_dim, "commitment_cost": self.commitment_cost,
                       "decay": self.decay, "epsilon": self.epsilon,
                       "dead_code_threshold": self.dead_code_threshold, "data_variance": self.data_variance,
                       "seed": self.seed, "levels": self.levels, "top_downsample": self.top_downsample,
                       "top_reconstruction_weight": self.top_reconstruction_weight})
        return config


def build_vqvae(vqvae_config, image_size: int, data_variance: float | None = None, seed: int = 0) -> VQVAE2:
    """A built ``VQVAE2`` from a ``VQVAEConfig`` (``data_variance`` used when the config's is 0)."""
    variance = vqvae_config.data_variance or data_variance or 0.06
    model = VQVAE2(image_size=image_size, num_hiddens=vqvae_config.num_hiddens,
                   num_residual_layers=vqvae_config.num_residual_layers,
                   num_residual_hiddens=vqvae_config.num_residual_hiddens,
                   num_embeddings=vqvae_config.num_embeddings, embedding_dim=vqvae_config.embedding_dim,
                   commitment_cost=vqvae_config.commitment_cost, decay=vqvae_config.decay,
                   epsilon=vqvae_config.epsilon, dead_code_threshold=vqvae_config.dead_code_threshold,
                   data_variance=float(variance), seed=seed, levels=vqvae_config.levels,
                   top_downsample=vqvae_config.top_downsample,
                   top_reconstruction_weight=vqvae_config.top_reconstruction_weight)
    model.build()
    return model


# A reconstruction identical to its slice has infinite PSNR; it is counted at the PSNR of the noise
# that rounding to 8 bits adds (MSE = (1/255)^2 / 12): 58.9 dB, above any real reconstruction's.
PERFECT_MSE = (1.0 / 255.0) ** 2 / 12.0


PERFECT_PSNR_DB = 10.0 * math.log10(1.0 / PERFECT_MSE)


def psnr(images, reconstructions):
    """Per-image PSNR in dB [B], at most ``PERFECT_PSNR_DB`` (a perfect reconstruction counts as that)."""
    return tf.minimum(tf.image.psnr(images, reconstructions, max_val=1.0), PERFECT_PSNR_DB)
