"""The layers of the gated PixelCNN (van den Oord et al. 2016): causally padded vertical and
horizontal convolutions, the gated block with its conditioning biases, causal self-attention, the
conditioning stack and step-keyed dropout. The priors that stack them are in ``priors``."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

_REGISTER = keras.saving.register_keras_serializable(package="oasis_gen")


def shift_down(x):
    """Moves features one row down (row 0 becomes zeros): position (i, j) then holds row i - 1."""
    return tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


def shift_right(x):
    """Moves features one column right (column 0 becomes zeros)."""
    return tf.pad(x, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1]


class _PaddedConv(keras.layers.Layer):
    """A valid convolution after zero padding (top, left, right): position (i, j) sees only allowed inputs.

    Subclasses set ``kernel_shape(k)`` and ``padding(k)``; the padding, not a kernel mask, does the masking.
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.conv = keras.layers.Conv2D(filters, self.kernel_shape(kernel_size), padding="valid", name="conv",
                                        dtype=self.dtype_policy)

    def build(self, input_shape):
        top, left, right = self.padding(self.kernel_size)
        batch, height, width, channels = tuple(input_shape)
        self.conv.build((batch, None if height is None else height + top,
                         None if width is None else width + left + right, channels))

    def call(self, x):
        top, left, right = self.padding(self.kernel_size)
        return self.conv(tf.pad(x, [[0, 0], [top, 0], [left, right], [0, 0]]))

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size})
        return config


@_REGISTER
class VerticalConv(_PaddedConv):
    """Convolution over the rows at and above each position: kernel (k//2 + 1, k), padded on top and both sides.

    Args:
        filters (int): output channels.
        kernel_size (int): odd k.
    """

    @staticmethod
    def kernel_shape(kernel_size):
        return (kernel_size // 2 + 1, kernel_size)

    @staticmethod
    def padding(kernel_size):
        return kernel_size // 2, kernel_size // 2, kernel_size // 2


@_REGISTER
class HorizontalConv(_PaddedConv):
    """Convolution over each position and the ones to its left in the same row: kernel (1, k//2 + 1).

    Args:
        filters (int): output channels.
        kernel_size (int): odd k.
    """

    @staticmethod
    def kernel_shape(kernel_size):
        return (1, kernel_size // 2 + 1)

    @staticmethod
    def padding(kernel_size):
        return 0, kernel_size // 2, 0


def _gate(x):
    a, b = tf.split(x, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


def _step_uniform(step, seed: int, shape):
    """Uniform [0, 1) draws keyed by ``(seed, step)``, after advancing the saved counter ``step``."""
    step = step.assign_add(1)
    key = tf.constant(seed, tf.int64)
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int64)
        key = key * 4096 + replica_id + 1  # replica r of a distributed run: a stream of its own
    return tf.random.stateless_uniform(shape, seed=tf.stack([key, step]))


@_REGISTER
class StepDropout(keras.layers.Layer):
    """Inverted dropout whose masks are stateless draws keyed by ``(seed, step)``.

    The step counter is a saved weight, so a model restored from a checkpoint draws exactly the
    masks an uninterrupted run would have drawn (Keras' ``Dropout`` keeps its RNG state outside the
    saved weights, which breaks an exact resume). Under ``tf.distribute`` the replica's index is
    folded into the key, so replicas draw different masks for their parts of the batch.

    Args:
        rate (float): fraction of units dropped while training, in [0, 1).
        seed (int, 0): seed of the masks.
    """

    def __init__(self, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed

    def build(self, input_shape):
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
                                    aggregation="only_first_replica")

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep = _step_uniform(self.step, self.seed, tf.shape(inputs))
        return tf.where(keep >= self.rate, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def load_own_variables(self, store):
        if len(store) == 0:  # a file from before the counter existed (Keras Dropout): start it at 0
            return
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@_REGISTER
class PositionDropout(keras.layers.Layer):
    """While training, replaces each slice position [B] by ``null`` ("no position") with probability ``rate``.

    The draws are keyed by ``(seed, step)`` with a saved step counter, as in ``StepDropout``, so a
    resumed run drops the same maps an uninterrupted one would. A prior trained this way also
    learns the unconditional model, for classifier-free guidance (Ho & Salimans 2022).

    Args:
        rate (float): probability of dropping a map's position, in [0, 1).
        null (int): the index that stands for "no position".
        seed (int, 0): seed of the draws.
    """

    def __init__(self, rate: float, null: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0 or null < 1:
            raise ValueError(f"position dropout rate must be in [0, 1) and null >= 1, got {rate}, {null}")
        self.rate = rate
        self.null = null
        self.seed = seed

    def build(self, input_shape=None):
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
                                    aggregation="only_first_replica")

    def call(self, position, training=False):
        position = tf.cast(position, tf.int32)
        if not training or self.rate == 0.0:
            return position
        dropped = _step_uniform(self.step, self.seed, tf.shape(position)) < self.rate
        return tf.where(dropped, tf.fill(tf.shape(position), self.null), position)

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "null": self.null, "seed": self.seed})
        return config


@_REGISTER
class GatedBlock(keras.layers.Layer):
    """One gated PixelCNN layer with vertical and horizontal stacks, residual and skip outputs.

    ``v' = gate(vconv(v) + c_v + p_v)``;
    ``h' = h + 1x1(dropout(gate(hconv(h) + 1x1(shift_down(vconv(v) + c_v + p_v)) + c_h + p_h)))``
    with ``gate(a, b) = tanh(a) * sigmoid(b)``, ``c`` the optional conditioning features and ``p``
    the optional slice-position bias (a learned vector per axial position and block, the class
    conditioning of van den Oord et al. 2016). In the first block (``first=True``) the horizontal
    input is shifted right so position (i, j) never sees its own code, and there is no residual
    connection.

    Args:
        channels (int): stack channels C.
        kernel_size (int): odd kernel size.
        dropout (float): dropout rate on the gated horizontal output.
        first (bool): the input block (mask type A).
        conditional (bool): adds a conditioning input with ``channels`` features.
        seed (int, 0): seed of the dropout masks (see ``StepDropout``).
        num_positions (int, 0): axial slice positions to learn a bias for (0: none).
    """

    def __init__(self, channels: int, kernel_size: int = 5, dropout: float = 0.0, first: bool = False,
                 conditional: bool = False, seed: int = 0, num_positions: int = 0, **kwargs):
        super().__init__(**kwargs)
        if channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"channels must be >= 1 and dropout in [0, 1), got {channels}, {dropout}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.first = first
        self.conditional = conditional
        self.seed = seed
        self.num_positions = num_positions
        self.vertical = VerticalConv(2 * channels, kernel_size, name="vertical", dtype=self.dtype_policy)
        self.horizontal = HorizontalConv(2 * channels, kernel_size, name="horizontal", dtype=self.dtype_policy)
        self.vertical_to_horizontal = keras.layers.Conv2D(2 * channels, 1, name="v_to_h", dtype=self.dtype_policy)
        self.horizontal_out = keras.layers.Conv2D(channels, 1, name="h_out", dtype=self.dtype_policy)
        self.skip = keras.layers.Conv2D(channels, 1, name="skip", dtype=self.dtype_policy)
        self.drop = StepDropout(dropout, seed, name="dropout", dtype=self.dtype_policy)
        if conditional:
            self.condition_vertical = keras.layers.Conv2D(2 * channels, 1, name="cond_v", dtype=self.dtype_policy)
            self.condition_horizontal = keras.layers.Conv2D(2 * channels, 1, name="cond_h", dtype=self.dtype_policy)
        if num_positions:  # zero at the start: training begins from the unconditional model
            self.position_vertical = keras.layers.Embedding(num_positions, 2 * channels, embeddings_initializer="zeros",
                                                            name="position_v", dtype=self.dtype_policy)
            self.position_horizontal = keras.layers.Embedding(num_positions, 2 * channels,
                                                              embeddings_initializer="zeros", name="position_h",
                                                              dtype=self.dtype_policy)

    def position_bias(self, position):
        """``(vertical, horizontal)`` biases [B, 2C] of slice positions [B]."""
        position = tf.cast(position, tf.int32)
        return self.position_vertical(position), self.position_horizontal(position)

    def build(self, input_shape):
        shape = tuple(input_shape)
        wide = shape[:-1] + (2 * self.channels,)
        self.vertical.build(shape)
        self.horizontal.build(shape)
        self.vertical_to_horizontal.build(wide)
        self.horizontal_out.build(shape)
        self.skip.build(shape)
        self.drop.build(shape)
        if self.conditional:
            self.condition_vertical.build(shape)
            self.condition_horizontal.build(shape)
        if self.num_positions:
            self.position_vertical.build((None,))
            self.position_horizontal.build((None,))

    def call(self, vertical, horizontal, condition=None, position=None, training=False):
        v = self.vertical(vertical)
        if self.conditional:
            v = v + self.condition_vertical(condition)
        if self.num_positions:
            bias_v, bias_h = self.position_bias(position)
            v = v + bias_v[:, tf.newaxis, tf.newaxis]
        h_input = shift_right(horizontal) if self.first else horizontal
        h = self.horizontal(h_input) + self.vertical_to_horizontal(shift_down(v))
        if self.conditional:
            h = h + self.condition_horizontal(condition)
        if self.num_positions:
            h = h + bias_h[:, tf.newaxis, tf.newaxis]
        v = _gate(v)
        gated = self.drop(_gate(h), training=training)
        out = self.horizontal_out(gated)
        if not self.first:
            out = out + horizontal
        return v, out, self.skip(gated)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "kernel_size": self.kernel_size, "dropout": self.dropout,
                       "first": self.first, "conditional": self.conditional, "seed": self.seed,
                       "num_positions": self.num_positions})
        return config


@_REGISTER
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention over the raster order where position p attends to positions <= p.

    Applied to horizontal-stack features, which at p already depend only on codes before p, so
    attending to p itself keeps the prior causal. A learned position embedding is added to the
    queries and keys (attention alone is blind to position).

    Args:
        channels (int): feature channels (divisible by ``num_heads``).
        num_heads (int): attention heads.
        length (int): sequence length H * W.
    """

    def __init__(self, channels: int, num_heads: int, length: int, **kwargs):
        super().__init__(**kwargs)
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.channels = channels
        self.num_heads = num_heads
        self.length = length
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=self.dtype_policy)
        self.query_key_value = keras.layers.Dense(3 * channels, name="qkv", dtype=self.dtype_policy)
        self.output_projection = keras.layers.Dense(channels, name="out",
                                                    dtype=self.dtype_policy, kernel_initializer="zeros")

    def build(self, input_shape):
        self.position = self.add_weight(name="position", shape=(self.length, self.channels),
                                        initializer=keras.initializers.RandomNormal(stddev=0.02))
        shape = (None, self.length, self.channels)
        self.norm.build(shape)
        self.query_key_value.build(shape)
        self.output_projection.build(shape)

    def split_heads(self, x):
        batch = tf.shape(x)[0]
        x = tf.reshape(x, [batch, -1, self.num_heads, self.channels // self.num_heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def project(self, sequence, positions):
        """Queries, keys and values [B, heads, L, C/heads] for features [B, L, C] at ``positions``."""
        x = self.norm(sequence)
        x = x + tf.cast(tf.gather(self.position, positions), x.dtype)  # also called outside __call__ (sampling)
        query, key, value = tf.split(self.query_key_value(x), 3, axis=-1)
        return self.split_heads(query), self.split_heads(key), self.split_heads(value)

    def attend(self, query, key, value, mask):
        """Attention output [B, Lq, C] from heads; ``mask`` [Lq, Lk] is True where attending is allowed."""
        # attention logits and softmax in float32 under any policy: bfloat16's 8-bit mantissa blurs them
        scores = tf.matmul(tf.cast(query, tf.float32), tf.cast(key, tf.float32), transpose_b=True)
        scores = tf.where(mask, scores / math.sqrt(self.channels // self.num_heads), -1e9)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), value.dtype)
        out = tf.transpose(tf.matmul(weights, value), [0, 2, 1, 3])
        out = tf.reshape(out, [tf.shape(out)[0], -1, self.channels])
        return self.output_projection(out)

    def call(self, features):
        shape = tf.shape(features)
        sequence = tf.reshape(features, [shape[0], self.length, self.channels])
        query, key, value = self.project(sequence, tf.range(self.length))
        mask = tf.linalg.band_part(tf.ones((self.length, self.length), tf.bool), -1, 0)
        out = self.attend(query, key, value, mask)
        return features + tf.reshape(out, shape)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "num_heads": self.num_heads, "length": self.length})
        return config


@_REGISTER
class ConditioningStack(keras.layers.Layer):
    """Top codes -> features at the bottom grid: embedding, residual 3x3 blocks, transposed-conv upsampling.

    Args:
        num_embeddings (int): top codebook size.
        channels (int): feature channels.
        num_layers (int): residual blocks.
        upsample (int, 2): bottom grid over top grid (2, or 4 for a 16x16 top map under a 64x64 bottom).
    """

    def __init__(self, num_embeddings: int, channels: int, num_layers: int, upsample: int = 2, **kwargs):
        super().__init__(**kwargs)
        if upsample not in (2, 4):
            raise ValueError(f"upsample must be 2 or 4, got {upsample}")
        self.num_embeddings = num_embeddings
        self.channels = channels
        self.num_layers = num_layers
        self.upsample_factor = upsample
        self.embedding = keras.layers.Embedding(num_embeddings, channels, name="embedding", dtype=self.dtype_policy)
        self.blocks = [(keras.layers.Conv2D(channels, 3, padding="same", name=f"res{i}_a", dtype=self.dtype_policy),
                        keras.layers.Conv2D(channels, 3, padding="same", name=f"res{i}_b", dtype=self.dtype_policy))
                       for i in range(num_layers)]
        self.upsample = keras.layers.Conv2DTranspose(channels, 2 * upsample, strides=upsample, padding="same",
                                                     name="upsample", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = tuple(input_shape) + (self.channels,)
        self.embedding.build(tuple(input_shape))
        for first, second in self.blocks:
            first.build(shape)
            second.build(shape)
        self.upsample.build(shape)

    def call(self, top_codes):
        x = self.embedding(tf.cast(top_codes, tf.int32))
        for first, second in self.blocks:
            x = x + second(tf.nn.relu(first(tf.nn.relu(x))))
        return self.upsample(tf.nn.relu(x))

    def get_config(self):
        config = super().get_config()
        config.update({"num_embeddings": self.num_embeddings, "channels": self.channels,
                       "num_layers": self.num_layers, "upsample": self.upsample_factor})
        return config
