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

Both draw each code by the Gumbel-max trick with the same noise, drawn once per batch outside
any XLA code from the seed and the batch chunk only, so for the same seed, batch size and
temperature they give the same codes (exactly, in our tests; the cached sampler runs under XLA,
so logits agree to float rounding, and a code could differ only where two perturbed logits tie
to within it). Temperature scales the logits; ``top_k`` keeps the k most likely codes; a temperature
at or below ``1e-6`` takes the argmax (greedy) path.

Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance"), for a prior
trained with ``position_dropout``: each step runs the prior on the batch twice, with the requested
slice positions and with "no position", and draws from ``l_c + w * (l_c - l_u)`` of the two logits
``l_c``, ``l_u``; both halves then take the same code. ``w = 0`` is plain conditional sampling;
larger ``w`` follows the position more closely at some cost in diversity.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from oasis_gen.models.pixelcnn import _gate
from oasis_gen.models.priors import BottomPrior, UnconditionalPrior

GREEDY_TEMPERATURE = 1e-6


def gumbel_noise(batch_size: int, positions: int, num_embeddings: int, seed: int, chunk: int):
    """Gumbel noise [positions, B, K] keyed on (seed, chunk) only.

    Drawn once per batch, outside any XLA-compiled code: stateless random ops may give other bits
    under XLA, and both samplers must see exactly the same noise.
    """
    seeds = tf.constant([seed, chunk], tf.int64)
    uniform = tf.random.stateless_uniform((positions, batch_size, num_embeddings), seed=seeds, minval=1e-20,
                                          maxval=1.0)
    return -tf.math.log(-tf.math.log(uniform))


def choose_codes(logits, temperature, top_k: int, noise):
    """Codes [B] from logits [B, K] by the Gumbel-max trick with ``noise`` [B, K]. ``temperature`` is a
    number or a float32 scalar tensor (a tensor is never taken as greedy: its caller decides that)."""
    logits = tf.cast(logits, tf.float32)
    if top_k and top_k < logits.shape[-1]:
        threshold = tf.math.top_k(logits, k=top_k).values[:, -1:]
        logits = tf.where(logits < threshold, tf.constant(-np.inf, tf.float32), logits)
    if not tf.is_tensor(temperature) and temperature <= GREEDY_TEMPERATURE:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.argmax(logits / temperature + noise, axis=-1, output_type=tf.int32)


def guided_logits(logits, batch: int, guidance: float):
    """Logits [B, K] from the stacked conditional and unconditional logits [2B, K]."""
    conditional, unconditional = logits[:batch], logits[batch:]
    return conditional + guidance * (conditional - unconditional)


def _guided_inputs(prior, condition_codes, slice_position, guidance: float):
    """Top codes and positions with the batch doubled for guidance: the second half has no position."""
    if not guidance:
        return condition_codes, slice_position
    null = tf.fill(tf.shape(slice_position), prior.null_position)
    return (None if condition_codes is None else tf.concat([condition_codes, condition_codes], 0),
            tf.concat([slice_position, null], 0))


def _check_prior(prior, condition):
    if isinstance(prior, BottomPrior) and condition is None:
        raise ValueError("the bottom prior samples conditioned on top codes: pass condition=top_codes")
    if isinstance(prior, UnconditionalPrior) and condition is not None:
        raise ValueError("this prior is unconditional (a UnconditionalPrior) and takes no condition")
    if not isinstance(prior, (UnconditionalPrior, BottomPrior)):
        raise TypeError(f"expected a UnconditionalPrior or BottomPrior, got {type(prior).__name__}")


class NaiveSampler:
    """Reference sampler: the whole prior on the whole grid, once per position (compiled loop)."""

    def __init__(self, prior):
        self.prior = prior
        self._functions = {}

    def __call__(self, batch_size: int, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                 chunk: int = 0, positions: int | None = None, slice_positions=None, guidance: float = 0.0):
        """Codes [B, H, W] int32; only the first ``positions`` are sampled when given (for timing).
        ``slice_positions`` int [B]: the axial positions of a position-conditioned prior; ``guidance``:
        the classifier-free guidance weight (see the module docstring)."""
        prior = self.prior
        key = (batch_size, float(temperature), int(top_k), float(guidance))
        if key not in self._functions:
            height, width = prior.height, prior.width

            @tf.function
            def run(condition_codes, noise, count, slice_position):
                codes = tf.zeros((batch_size, height, width), tf.int32)
                condition_codes, slice_position = _guided_inputs(prior, condition_codes, slice_position, guidance)
                for position in tf.range(count):
                    row, column = position // width, position % width
                    grid = tf.concat([codes, codes], 0) if guidance else codes
                    inputs = _prior_inputs(prior, grid, condition_codes, slice_position)
                    logits = prior(inputs, training=False)[:, row, column]
                    if guidance:
                        logits = guided_logits(logits, batch_size, guidance)
                    chosen = choose_codes(logits, temperature, top_k, noise[position])
                    index = tf.stack([tf.range(batch_size), tf.fill([batch_size], row),
                                      tf.fill([batch_size], column)], axis=1)
                    codes = tf.tensor_scatter_nd_update(codes, index, chosen)
                return codes

            self._functions[key] = run
        count = prior.height * prior.width if positions is None else positions
        condition = None if condition is None else tf.convert_to_tensor(condition, tf.int32)
        slice_positions = None if slice_positions is None else tf.convert_to_tensor(slice_positions, tf.int32)
        noise = gumbel_noise(batch_size, prior.height * prior.width, prior.num_embeddings, seed, chunk)
        return self._functions[key](condition, noise, tf.constant(count), slice_positions)


def _prior_inputs(prior, codes, condition_codes, slice_position):
    """The prior's inputs for a whole grid: codes, the top codes (bottom prior), the slice position."""
    if slice_position is None:
        return codes if condition_codes is None else (codes, condition_codes)
    if condition_codes is None:
        return {"top": codes, "position": slice_position}
    return {"bottom": codes, "top": condition_codes, "position": slice_position}


def _set_column(rows, column, values):
    """``rows`` [B, W, C] with column ``column`` replaced by ``values`` [B, C]."""
    batch = tf.shape(rows)[0]
    index = tf.stack([tf.range(batch), tf.fill([batch], column)], axis=1)
    return tf.tensor_scatter_nd_update(rows, index, values)


class CachedSampler:
    """Fast sampler with per-layer activation caches (see the module docstring).

    The caches are loop-carried tensors of one ``tf.while_loop`` over positions, compiled with XLA
    (``jit_compile``), which updates them in place and fuses the few hundred small ops of a step;
    without XLA, op dispatch would dominate small priors.
    """

    def __init__(self, prior, batch_size: int, jit_compile: bool = True):
        self.prior = prior
        self.batch_size = batch_size
        self.jit_compile = jit_compile
        self.half = prior.kernel_size // 2
        self._functions = {}

    def _initial_state(self, batch):
        prior, half = self.prior, self.half
        channels, height, width = prior.hidden_channels, prior.height, prior.width
        dtype = prior.compute_dtype  # the caches hold activations: bfloat16/float16 under a mixed policy
        return {
            "codes": tf.zeros((batch, height, width), tf.int32),
            # Horizontal input of the first block is the embedding shifted right: half + 1 zero columns.
            "embedded_row": tf.zeros((batch, width + half + 1, channels), dtype),
            "horizontal_rows": [tf.zeros((batch, width + half, channels), dtype) for _ in prior.blocks],
            "vertical_windows": [tf.zeros((batch, half + 1, width + 2 * half, channels), dtype) for _ in prior.blocks],
            "vertical_previous": [tf.zeros((batch, width, 2 * channels), dtype) for _ in prior.blocks],
            "keys": [tf.zeros((batch, a.num_heads, height * width, channels // a.num_heads), dtype) for a in prior.attention],
            "values": [tf.zeros((batch, a.num_heads, height * width, channels // a.num_heads), dtype)
                       for a in prior.attention],
        }

    def _advance_vertical(self, state, row, condition_features, position_biases):
        """Runs the vertical stacks over the finished row ``row`` (before sampling row + 1)."""
        prior, half = self.prior, self.half
        v = prior.embedding(tf.gather(state["codes"], row, axis=1))  # [B, W, C]
        windows, previous = [], []
        for index, block in enumerate(prior.blocks):
            padded = tf.pad(v, [[0, 0], [half, half], [0, 0]])
            window = tf.concat([state["vertical_windows"][index][:, 1:], padded[:, tf.newaxis]], axis=1)
            features = block.vertical.conv(window)[:, 0]  # [B, W, 2C]
            if block.conditional:
                features = features + block.condition_vertical(
                    tf.gather(condition_features, [row], axis=1))[:, 0]
            if position_biases is not None:
                features = features + position_biases[index][0][:, tf.newaxis]
            windows.append(window)
            previous.append(features)
            v = _gate(features)
        return dict(state, vertical_windows=windows, vertical_previous=previous,
                    embedded_row=tf.zeros_like(state["embedded_row"]),
                    horizontal_rows=[tf.zeros_like(r) for r in state["horizontal_rows"]])

    def _step(self, state, row, column, condition_features, position_biases):
        """Logits [B, K] at (row, column) from the caches, and the caches updated with this position."""
        prior, half = self.prior, self.half
        position = row * prior.width + column
        above = tf.cast(row > 0, prior.compute_dtype)  # shift_down: row 0 sees zeros above
        horizontal_rows, keys, values = list(state["horizontal_rows"]), list(state["keys"]), list(state["values"])
        # Columns (column - 1 - half .. column - 1) of the embedding, as the first block's shifted input.
        h_input = tf.slice(state["embedded_row"], [0, column, 0], [-1, half + 1, -1])[:, tf.newaxis]
        skip, h_current = 0.0, None
        for index, block in enumerate(prior.blocks):
            if index > 0:
                h_input = tf.slice(horizontal_rows[index], [0, column, 0], [-1, half + 1, -1])[:, tf.newaxis]
            vertical_above = tf.gather(state["vertical_previous"][index], column, axis=1) * above
            features = block.horizontal.conv(h_input) + block.vertical_to_horizontal(
                vertical_above[:, tf.newaxis, tf.newaxis])
            if block.conditional:
                features = features + block.condition_horizontal(
                    tf.slice(condition_features, [0, row, column, 0], [-1, 1, 1, -1]))
            if position_biases is not None:
                features = features + position_biases[index][1][:, tf.newaxis, tf.newaxis]
            gated = _gate(features)
            out = block.horizontal_out(gated)
            if index > 0:
                out = out + h_current
            skip = skip + block.skip(gated)
            if index in prior.attention_after:
                a = prior.attention_after[index]
                attention = prior.attention[a]
                query, key, value = attention.project(out[:, 0], tf.reshape(position, [1]))
                keys[a] = _scatter_position(keys[a], position, key)
                values[a] = _scatter_position(values[a], position, value)
                allowed = tf.range(prior.height * prior.width) <= position
                out = out + attention.attend(query, keys[a], values[a], allowed[tf.newaxis, :])[:, tf.newaxis]
            h_current = out  # [B, 1, 1, C]: this position's output of block `index`
            if index + 1 < len(prior.blocks):
                horizontal_rows[index + 1] = _set_column(horizontal_rows[index + 1], column + half, out[:, 0, 0])
        logits = prior._head(skip + h_current)[:, 0, 0]
        return logits, dict(state, horizontal_rows=horizontal_rows, keys=keys, values=values)

    def __call__(self, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0, chunk: int = 0,
                 slice_positions=None, guidance: float = 0.0):
        """Codes [B, H, W] int32 for one batch (``slice_positions`` int [B] for a position-conditioned prior;
        ``guidance``: the classifier-free guidance weight, see the module docstring)."""
        prior, half, batch = self.prior, self.half, self.batch_size
        greedy, guided = temperature <= GREEDY_TEMPERATURE, bool(guidance)
        rows = 2 * batch if guided else batch  # guidance runs a conditional and an unconditional half
        # temperature and guidance weight are inputs, not constants: another value reuses the compiled loop
        key = (int(top_k), greedy, guided)
        if key not in self._functions:

            @tf.function(jit_compile=self.jit_compile)
            def run(condition_codes, noise, slice_position, temperature, guidance):
                condition_codes, slice_position = _guided_inputs(prior, condition_codes, slice_position, guided)
                condition_features = None if condition_codes is None else prior.conditioning(condition_codes)
                # each block's (vertical, horizontal) position bias, constant over the grid
                biases = None if slice_position is None else [block.position_bias(slice_position)
                                                              for block in prior.blocks]

                def body(position, state):
                    row, column = position // prior.width, position % prior.width
                    state = tf.cond(tf.logical_and(column == 0, row > 0),
                                    lambda: self._advance_vertical(state, row - 1, condition_features, biases),
                                    lambda: state)
                    logits, state = self._step(state, row, column, condition_features, biases)
                    if guided:
                        logits = guided_logits(logits, batch, guidance)
                    chosen = choose_codes(logits, GREEDY_TEMPERATURE if greedy else temperature, top_k,
                                          tf.gather(noise, position))
                    if guided:
                        chosen = tf.concat([chosen, chosen], 0)
                    index = tf.stack([tf.range(rows), tf.fill([rows], row), tf.fill([rows], column)], axis=1)
                    codes = tf.tensor_scatter_nd_update(state["codes"], index, chosen)
                    embedded_row = _set_column(state["embedded_row"], column + half + 1, prior.embedding(chosen))
                    return position + 1, dict(state, codes=codes, embedded_row=embedded_row)

                _, final = tf.while_loop(lambda position, state: position < prior.height * prior.width, body,
                                         (tf.constant(0), self._initial_state(rows)))
                return final["codes"][:batch]

            self._functions[key] = run
        condition = None if condition is None else tf.convert_to_tensor(condition, tf.int32)
        slice_positions = None if slice_positions is None else tf.convert_to_tensor(slice_positions, tf.int32)
        noise = gumbel_noise(batch, prior.height * prior.width, prior.num_embeddings, seed, chunk)
        return self._functions[key](condition, noise, slice_positions, tf.constant(float(temperature), tf.float32),
                                    tf.constant(float(guidance), tf.float32))


def _scatter_position(cache, position, update):
    """``cache`` [B, heads, L, d] with sequence position ``position`` set to ``update`` [B, heads, 1, d]."""
    moved = tf.transpose(cache, [2, 0, 1, 3])  # [L, B, heads, d]
    moved = tf.tensor_scatter_nd_update(moved, tf.reshape(position, [1, 1]), tf.transpose(update, [2, 0, 1, 3]))
    return tf.transpose(moved, [1, 2, 0, 3])


def _padded(values, size: int) -> np.ndarray:
    """int32 ``values`` padded to ``size`` rows by repeating the last (the compiled batch size)."""
    values = np.asarray(values, np.int32)
    return values if len(values) == size else np.concatenate([values, np.repeat(values[-1:], size - len(values), 0)])


def _check_positions(prior, slice_positions, num_samples: int):
    if prior.num_positions == 0:
        if slice_positions is not None:
            raise ValueError("this prior was trained without slice positions; sample it without them")
        return None
    if slice_positions is None:
        raise ValueError(f"this prior is conditioned on the slice position: pass {num_samples} positions in "
                         f"0..{prior.num_positions - 1}")
    slice_positions = np.asarray(slice_positions, np.int32).reshape(-1)
    if len(slice_positions) != num_samples or slice_positions.min(initial=0) < 0 or \
            slice_positions.max(initial=0) >= prior.num_positions:
        raise ValueError(f"expected {num_samples} slice positions in 0..{prior.num_positions - 1}, got "
                         f"{slice_positions.tolist()}")
    return slice_positions


def _shared_cached_sampler(prior, batch_size: int) -> CachedSampler:
    """The prior's own ``CachedSampler`` for ``batch_size``, kept on the prior, so that the next call (another
    temperature or guidance weight, the next ``generate``, a temperature sweep) reuses its compiled loops."""
    samplers = prior.__dict__.get("_cached_samplers")
    if samplers is None:
        samplers = {}
        object.__setattr__(prior, "_cached_samplers", samplers)  # a plain attribute: Keras neither tracks nor saves it
    if batch_size not in samplers:
        samplers[batch_size] = CachedSampler(prior, batch_size)
    return samplers[batch_size]


class PriorSampler:
    """Samples code maps from one prior in batches: ``PriorSampler(prior, "cached")(num_samples, ...)``.

    Args:
        prior: a ``UnconditionalPrior`` or ``BottomPrior``.
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
        self._sampler = _shared_cached_sampler(prior, batch_size) if method == "cached" else NaiveSampler(prior)

    def __call__(self, num_samples: int, condition=None, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                 progress=None, slice_positions=None, guidance: float = 0.0) -> np.ndarray:
        """Codes [num_samples, H, W] int32. ``condition``: top codes [num_samples, H/2, W/2] for the bottom prior;
        ``slice_positions``: int [num_samples] axial positions, for a position-conditioned prior;
        ``guidance``: classifier-free guidance weight (0: none), for a prior trained with ``position_dropout``.

        Raises:
            ValueError: for a negative temperature, a bad ``top_k``, a missing/extra condition,
                positions missing, given to an unconditioned prior, or out of range, or guidance that is
                negative or asked of a prior trained without position dropout.
        """
        _check_prior(self.prior, condition)
        slice_positions = _check_positions(self.prior, slice_positions, num_samples)
        if temperature < 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k < 0 or top_k > self.prior.num_embeddings:
            raise ValueError(f"top_k must be in [0, {self.prior.num_embeddings}], got {top_k}")
        if guidance < 0 or not math.isfinite(guidance):
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        if guidance and getattr(self.prior, "null_position", None) is None:
            raise ValueError(f"guidance {guidance} needs a prior trained with position dropout (prior flag "
                             "--position_dropout, e.g. 0.1); this one was not: use guidance 0 for it")
        outputs = []
        for chunk, start in enumerate(range(0, num_samples, self.batch_size)):
            count = min(self.batch_size, num_samples - start)
            batch_condition, batch_positions = (None if values is None else _padded(values[start:start + count],
                                                                                     self.batch_size)
                                                for values in (condition, slice_positions))
            if self.method == "cached":
                codes = self._sampler(batch_condition, temperature, top_k, seed, chunk, batch_positions, guidance)
            else:
                codes = self._sampler(self.batch_size, batch_condition, temperature, top_k, seed, chunk,
                                      slice_positions=batch_positions, guidance=guidance)
            outputs.append(codes.numpy()[:count])
            if progress is not None:
                progress.update(count)
        return np.concatenate(outputs) if outputs else np.zeros((0, self.prior.height, self.prior.width), np.int32)


def draw_positions(prior, num_samples: int, seed: int = 0) -> np.ndarray:
    """Axial positions int32 [num_samples] drawn from how often each occurred in the prior's training data."""
    frequencies = np.asarray(prior.position_frequencies, np.float64)
    rng = np.random.default_rng([seed, 7919])  # a stream of its own, apart from the samplers' noise
    return rng.choice(len(frequencies), size=num_samples, p=frequencies / frequencies.sum()).astype(np.int32)


def per_level(value) -> tuple:
    """``(top, bottom)`` from one value for both levels, or from a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected one value or a (top, bottom) pair, got {value!r}")
        return tuple(value)
    return value, value

