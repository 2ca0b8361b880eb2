"""Autoregressive sampling of the priors, then decoding with the VQ-VAE-2.

Two samplers behind one interface (``sample_codes(..., method=...)``):

- ``naive``: the reference. For each of the H*W positions in raster order the prior runs on the
  whole grid, inside one compiled ``tf.function`` loop.
- ``cached`` (default): fast generation in the spirit of Ramachandran et al. 2017 ("Fast
  Generation for Convolutional Autoregressive Models"). Each layer keeps what later positions
  need: the current row of every horizontal stack, a rolling window of the last k//2+1 rows of
  every vertical stack, the vertical features of the previous row, and the keys and values of
  every attention block. The vertical stack advances once per row; per position only that
  position's activations are computed, with the priors' own layers applied to small windows.

Both draw each code by the Gumbel-max trick with noise that depends only on the seed, the batch
chunk and the position, so for the same seed, batch size and temperature they give exactly the
same codes. Temperature scales the logits; ``top_k`` keeps the k most likely codes; a temperature
at or below ``1e-6`` takes the argmax (greedy) path.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from oasis_gen.prior import BottomPrior, TopPrior, _gate

GREEDY_TEMPERATURE = 1e-6


def choose_codes(logits, temperature: float, top_k: int, seed: int, chunk: int, position):
    """Codes [B] from logits [B, K]: Gumbel-max with noise keyed on (seed, chunk, position)."""
    logits = tf.cast(logits, tf.float32)
    if top_k and top_k < logits.shape[-1]:
        threshold = tf.math.top_k(logits, k=top_k).values[:, -1:]
        logits = tf.where(logits < threshold, tf.constant(-np.inf, tf.float32), logits)
    if temperature <= GREEDY_TEMPERATURE:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    seeds = tf.stack([tf.cast(seed * 100003 + chunk, tf.int64), tf.cast(position, tf.int64)])
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed=seeds, minval=1e-20, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(logits / temperature + gumbel, axis=-1, output_type=tf.int32)


def _check_prior(prior, condition):
    if isinstance(prior, BottomPrior) and condition is None:
        raise ValueError("the bottom prior samples conditioned on top codes: pass condition=top_codes")
    if isinstance(prior, TopPrior) and condition is not None:
        raise ValueError("the top prior takes no condition")
    if not isinstance(prior, (TopPrior, BottomPrior)):
        raise TypeError(f"expected a TopPrior or BottomPrior, got {type(prior).__name__}")


class NaiveSampler:
    """Reference sampler: the whole prior on the whole grid, once per position (compiled loop)."""

    def __init__(self, prior):
        self.prior = prior
        self._functions = {}

    def __call__(self, batch_size: int, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                 chunk: int = 0, positions: int | None = None):
        """Codes [B, H, W] int32; only the first ``positions`` are sampled when given (for timing)."""
        prior = self.prior
        key = (batch_size, float(temperature), int(top_k))
        if key not in self._functions:
            height, width = prior.height, prior.width

            @tf.function
            def run(condition_codes, seed_value, chunk_value, count):
                codes = tf.zeros((batch_size, height, width), tf.int32)
                for position in tf.range(count):
                    row, column = position // width, position % width
                    inputs = codes if condition_codes is None else (codes, condition_codes)
                    logits = prior(inputs, training=False)[:, row, column]
                    chosen = choose_codes(logits, temperature, top_k, seed_value, chunk_value, position)
                    index = tf.stack([tf.range(batch_size), tf.fill([batch_size], row),
                                      tf.fill([batch_size], column)], axis=1)
                    codes = tf.tensor_scatter_nd_update(codes, index, chosen)
                return codes

            self._functions[key] = run
        count = prior.height * prior.width if positions is None else positions
        condition = None if condition is None else tf.convert_to_tensor(condition, tf.int32)
        return self._functions[key](condition, tf.constant(seed, tf.int64), tf.constant(chunk, tf.int64),
                                    tf.constant(count))


class CachedSampler:
    """Fast sampler with per-layer activation caches (see the module docstring)."""

    def __init__(self, prior, batch_size: int):
        self.prior = prior
        self.batch_size = batch_size
        channels, half = prior.hidden_channels, prior.kernel_size // 2
        self.half = half
        height, width = prior.height, prior.width
        zeros = lambda shape: tf.Variable(tf.zeros(shape), trainable=False)  # noqa: E731
        # Horizontal input of the first block is the embedding shifted right: keep half + 1 zero columns.
        self.embedded_row = zeros((batch_size, width + half + 1, channels))
        self.horizontal_rows = [zeros((batch_size, width + half, channels)) for _ in prior.blocks]
        self.vertical_windows = [zeros((batch_size, half + 1, width + 2 * half, channels)) for _ in prior.blocks]
        self.vertical_previous = [zeros((batch_size, width, 2 * channels)) for _ in prior.blocks]
        self.codes = tf.Variable(tf.zeros((batch_size, height, width), tf.int32), trainable=False)
        self.keys = [zeros((batch_size, a.num_heads, height * width, channels // a.num_heads)) for a in prior.attention]
        self.values = [zeros((batch_size, a.num_heads, height * width, channels // a.num_heads))
                       for a in prior.attention]
        self._functions = {}

    def _reset(self):
        for variable in ([self.embedded_row] + self.horizontal_rows + self.vertical_windows + self.vertical_previous
                         + self.keys + self.values):
            variable.assign(tf.zeros_like(variable))
        self.codes.assign(tf.zeros_like(self.codes))

    def _advance_vertical(self, row, condition_features):
        """Runs the vertical stacks over the finished row ``row`` (called before sampling row + 1)."""
        prior, half = self.prior, self.half
        codes_row = self.codes[:, row, :]
        v = prior.embedding(codes_row)  # [B, W, C]: the input of the first vertical stack
        for index, block in enumerate(prior.blocks):
            padded = tf.pad(v, [[0, 0], [half, half], [0, 0]])
            window = tf.concat([self.vertical_windows[index][:, 1:], padded[:, tf.newaxis]], axis=1)
            self.vertical_windows[index].assign(window)
            features = block.vertical.conv(window)[:, 0]  # [B, W, 2C]
            if block.conditional:
                features = features + block.condition_vertical(condition_features[:, row:row + 1])[:, 0]
            self.vertical_previous[index].assign(features)
            v = _gate(features)

    def _step(self, row, column, condition_features):
        """Logits [B, K] at (row, column) from the caches, updating them with this position's activations."""
        prior, half = self.prior, self.half
        width = prior.width
        position = row * width + column
        h_input = self.embedded_row[:, column:column + half + 1][:, tf.newaxis]  # columns (column-1-half .. column-1)
        skip = 0.0
        h_current = None
        above = tf.where(row > 0, 1.0, 0.0)  # shift_down: row 0 sees zeros above
        for index, block in enumerate(prior.blocks):
            if index > 0:
                h_input = self.horizontal_rows[index][:, column:column + half + 1][:, tf.newaxis]
            vertical_above = self.vertical_previous[index][:, column][:, tf.newaxis, tf.newaxis] * above
            features = block.horizontal.conv(h_input) + block.vertical_to_horizontal(vertical_above)
            if block.conditional:
                features = features + block.condition_horizontal(
                    condition_features[:, row:row + 1, column:column + 1])
            gated = _gate(features)
            out = block.horizontal_out(gated)
            if index > 0:
                out = out + h_current
            skip = skip + block.skip(gated)
            if index in prior.attention_after:
                attention_index = prior.attention_after[index]
                attention = prior.attention[attention_index]
                query, key, value = attention.project(out[:, 0], tf.reshape(position, [1]))
                self.keys[attention_index][:, :, position].assign(key[:, :, 0])
                self.values[attention_index][:, :, position].assign(value[:, :, 0])
                allowed = tf.range(prior.height * width) <= position
                out = out + attention.attend(query, self.keys[attention_index], self.values[attention_index],
                                             allowed[tf.newaxis, :])[:, tf.newaxis]
            h_current = out  # [B, 1, 1, C]: this position's output of block `index`
            if index + 1 < len(prior.blocks):
                self.horizontal_rows[index + 1][:, column + half].assign(out[:, 0, 0])
        return prior._head(skip + h_current)[:, 0, 0]

    def __call__(self, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0, chunk: int = 0):
        """Codes [B, H, W] int32 for one batch."""
        prior = self.prior
        key = (float(temperature), int(top_k))
        if key not in self._functions:
            half = self.half

            @tf.function
            def run(condition_codes, seed_value, chunk_value):
                self._reset()
                condition_features = (None if condition_codes is None else prior.conditioning(condition_codes))
                for row in tf.range(prior.height):
                    if row > 0:
                        self._advance_vertical(row - 1, condition_features)
                    self.embedded_row.assign(tf.zeros_like(self.embedded_row))
                    for variable in self.horizontal_rows:
                        variable.assign(tf.zeros_like(variable))
                    for column in tf.range(prior.width):
                        logits = self._step(row, column, condition_features)
                        chosen = choose_codes(logits, temperature, top_k, seed_value, chunk_value,
                                              row * prior.width + column)
                        self.codes[:, row, column].assign(chosen)
                        self.embedded_row[:, column + half + 1].assign(prior.embedding(chosen))
                return tf.identity(self.codes)

            self._functions[key] = run
        condition = None if condition is None else tf.convert_to_tensor(condition, tf.int32)
        return self._functions[key](condition, tf.constant(seed, tf.int64), tf.constant(chunk, tf.int64))


class PriorSampler:
    """Samples code maps from one prior in batches: ``PriorSampler(prior, "cached")(num_samples, ...)``.

    Args:
        prior: a ``TopPrior`` or ``BottomPrior``.
        method: ``"cached"`` (default) or ``"naive"``.
        batch_size: samples generated together.
    """

    def __init__(self, prior, method: str = "cached", batch_size: int = 8):
        if method not in ("cached", "naive"):
            raise ValueError(f"method must be 'cached' or 'naive', got {method!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prior = prior
        self.method = method
        self.batch_size = batch_size
        self._sampler = CachedSampler(prior, batch_size) if method == "cached" else NaiveSampler(prior)

    def __call__(self, num_samples: int, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                 progress=None) -> np.ndarray:
        """Codes [num_samples, H, W] int32. ``condition``: top codes [num_samples, H/2, W/2] for the bottom prior.

        Raises:
            ValueError: for a negative temperature, a bad ``top_k`` or a missing/extra condition.
        """
        _check_prior(self.prior, condition)
        if temperature < 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k < 0 or top_k > self.prior.num_embeddings:
            raise ValueError(f"top_k must be in [0, {self.prior.num_embeddings}], got {top_k}")
        outputs = []
        for chunk, start in enumerate(range(0, num_samples, self.batch_size)):
            count = min(self.batch_size, num_samples - start)
            batch_condition = None
            if condition is not None:
                batch_condition = np.asarray(condition[start:start + count], np.int32)
                if count < self.batch_size:  # pad the last chunk to the compiled batch size
                    batch_condition = np.concatenate(
                        [batch_condition, np.repeat(batch_condition[-1:], self.batch_size - count, axis=0)])
            if self.method == "cached":
                codes = self._sampler(batch_condition, temperature, top_k, seed, chunk)
            else:
                codes = self._sampler(self.batch_size, batch_condition, temperature, top_k, seed, chunk)
            outputs.append(codes.numpy()[:count])
            if progress is not None:
                progress.update(count)
        return np.concatenate(outputs) if outputs else np.zeros((0, self.prior.height, self.prior.width), np.int32)


def generate(vqvae, top_prior, bottom_prior, num_samples: int, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, method: str = "cached", batch_size: int = 8, progress: bool = True) -> dict:
    """New slices: top codes from the top prior, bottom codes from the bottom prior given them, then decoding.

    Returns:
        ``{"images": float32 [N, S, S, 1] in [0, 1], "top": int32 [N, h, w], "bottom": int32 [N, 2h, 2w]}``.
    """
    from tqdm.auto import tqdm

    with tqdm(total=2 * num_samples, desc=f"sampling ({method})", disable=not progress) as bar:
        top = PriorSampler(top_prior, method, batch_size)(num_samples, None, temperature, top_k, seed, bar)
        bottom = PriorSampler(bottom_prior, method, batch_size)(num_samples, top, temperature, top_k, seed + 1, bar)
    images = np.concatenate([vqvae.decode_codes(top[i:i + batch_size], bottom[i:i + batch_size]).numpy()
                             for i in range(0, num_samples, batch_size)]) if num_samples else np.zeros((0,))
    return {"images": images, "top": top, "bottom": bottom}
