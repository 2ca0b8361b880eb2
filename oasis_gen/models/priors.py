"""Gated PixelCNN priors over VQ-VAE-2 code maps.

Gated PixelCNN with vertical and horizontal stacks (van den Oord et al. 2016, "Conditional
Image Generation with PixelCNN Decoders"): the vertical stack sees every code in the rows at and
above a position, the horizontal stack the codes to the left in the same row; the vertical
features enter the horizontal stack shifted down one row, which removes the blind spot of the
original PixelCNN while keeping the raster order causal. Masking is done by shifted padding
(the convolution only ever sees allowed positions); no kernel is masked or reassigned.

``UnconditionalPrior`` (the top map's prior, and the single map's of a one-level VQ-VAE) adds
causal multi-head self-attention (as the VQ-VAE-2 top prior does, Razavi et al. 2019);
``BottomPrior`` is conditioned on the top code map through a residual conditioning stack
and a x2 upsampling, added inside every gated block. Both output logits over the codebook.

Shape contract: codes are int32 ``[B, H, W]``; logits are float32 ``[B, H, W, num_embeddings]``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from oasis_gen.models.distribute import replica_logs
from oasis_gen.models.distribute import scale_loss_for_replicas as _scale_for_replicas
from oasis_gen.models.pixelcnn import CausalSelfAttention, ConditioningStack, GatedBlock, PositionDropout
from oasis_gen.seeds import derive_seed

_REGISTER = keras.saving.register_keras_serializable(package="oasis_gen")


class _GatedPixelCNN(keras.Model):
    """Shared body of the priors: embedding, gated blocks (+ attention), skip sum + last horizontal, output head."""

    def __init__(self, num_embeddings: int, height: int, width: int, hidden_channels: int = 128,
                 num_layers: int = 12, kernel_size: int = 5, dropout: float = 0.1, num_attention_blocks: int = 0,
                 num_heads: int = 4, conditional: bool = False, num_positions: int = 0,
                 position_frequencies: list[float] | None = None, position_dropout: float = 0.0, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        if num_embeddings < 2 or min(height, width, hidden_channels, num_layers) < 1:
            raise ValueError(f"invalid prior sizes: num_embeddings={num_embeddings}, grid {height}x{width}, "
                             f"hidden_channels={hidden_channels}, num_layers={num_layers}")
        if num_attention_blocks > num_layers:
            raise ValueError(f"num_attention_blocks ({num_attention_blocks}) must not exceed num_layers "
                             f"({num_layers})")
        self.num_embeddings = num_embeddings
        self.height = height
        self.width = width
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.num_attention_blocks = num_attention_blocks
        self.num_heads = num_heads
        self.seed = seed
        if num_positions < 0 or (position_frequencies is not None and len(position_frequencies) != num_positions):
            raise ValueError(f"num_positions must be >= 0 with one frequency per position, got {num_positions} and "
                             f"{position_frequencies}")
        if not 0.0 <= position_dropout < 1.0 or (position_dropout and not num_positions):
            raise ValueError(f"position_dropout must be in [0, 1) and needs num_positions > 0, got {position_dropout} "
                             f"with num_positions={num_positions}")
        self.num_positions = num_positions
        # Classifier-free guidance (Ho & Salimans 2022): in training the position is replaced by an extra
        # "no position" index with this probability, so one network also learns the unconditional model.
        self.position_dropout = float(position_dropout)
        self.null_position = num_positions if position_dropout else None
        if position_dropout:  # only then: its step counter would change the saved weights of earlier priors
            self.position_drop = PositionDropout(position_dropout, num_positions,
                                                 derive_seed(seed, "position_dropout") if seed else 17,
                                                 name="position_dropout")
            self.position_drop.build()
        # how often each position occurs in the training data: positions to sample when none is asked for
        self.position_frequencies = (list(position_frequencies) if position_frequencies is not None
                                     else [1.0 / num_positions] * num_positions if num_positions else [])
        self.embedding = keras.layers.Embedding(num_embeddings, hidden_channels, name="code_embedding")
        self.blocks = [GatedBlock(hidden_channels, kernel_size, dropout, first=(i == 0), conditional=conditional,
                                  seed=derive_seed(seed, f"dropout/{i}") if seed else i,
                                  num_positions=num_positions + (1 if position_dropout else 0), name=f"gated_{i}")
                       for i in range(num_layers)]
        # Attention after evenly spaced gated blocks (the last one among them).
        self.attention_after = {round((a + 1) * num_layers / num_attention_blocks) - 1: a
                                for a in range(num_attention_blocks)} if num_attention_blocks else {}
        self.attention = [CausalSelfAttention(hidden_channels, num_heads, height * width, name=f"attention_{a}")
                          for a in range(num_attention_blocks)]
        self.head_hidden = keras.layers.Conv2D(hidden_channels, 1, name="head_hidden")
        self.head_logits = keras.layers.Conv2D(num_embeddings, 1, name="head_logits")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "bits_per_code", "accuracy")}

    # -------------------------------------------------------------------------- forward
    def _trunk(self, codes, condition, position, training):
        if self.num_positions and position is None:
            raise ValueError(f"this prior is conditioned on the slice position (0..{self.num_positions - 1}): "
                             "pass inputs as a dict with a 'position' entry")
        if self.position_dropout and position is not None:
            position = self.position_drop(position, training=training)
        x = self.embedding(tf.cast(codes, tf.int32))
        vertical, horizontal = x, x
        skip = 0.0
        for index, block in enumerate(self.blocks):
            vertical, horizontal, block_skip = block(vertical, horizontal, condition, position, training=training)
            skip = skip + block_skip
            if index in self.attention_after:
                horizontal = self.attention[self.attention_after[index]](horizontal)
        return skip + horizontal

    def _head(self, skip):
        return tf.cast(self.head_logits(tf.nn.relu(self.head_hidden(tf.nn.relu(skip)))), tf.float32)

    def _split(self, inputs):
        raise NotImplementedError  # each prior says what its inputs are

    def call(self, inputs, training=False):
        codes, condition, position = self._split(inputs)
        return self._head(self._trunk(codes, condition, position, training))

    def _build_inputs(self, **codes):
        inputs = dict(codes)
        if self.num_positions:
            inputs["position"] = tf.zeros((1,), tf.int32)
        return inputs

    def distribution(self, inputs):
        """The predictive ``tfp.distributions.Categorical`` over codes at every position."""
        import tensorflow_probability as tfp

        return tfp.distributions.Categorical(logits=self(inputs, training=False))

    # -------------------------------------------------------------------------- training
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a multi-worker strategy Keras 3 averages the first distributed batch to build the model
        # symbolically, and that reduce fails on dict inputs ("unsupported type <class 'dict'>"). A prior is
        # built when it is made and compiles no losses or metrics, so there is nothing left to build.
        if self.built and getattr(self.distribute_strategy.extended, "_in_multi_worker_mode", lambda: False)():
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _step_values(self, inputs, logits):
        codes = tf.cast(self.target_codes(inputs), tf.int32)
        nats = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=logits))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), codes), tf.float32))
        return nats, accuracy, tf.cast(tf.shape(codes)[0], tf.float32)

    def _track(self, nats, accuracy, batch):
        # weighted by the batch size: a short last batch counts for its maps, not as much as a full one
        self.trackers["loss"].update_state(nats, sample_weight=batch)
        self.trackers["bits_per_code"].update_state(nats / math.log(2.0), sample_weight=batch)
        self.trackers["accuracy"].update_state(accuracy, sample_weight=batch)
        return replica_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def train_step(self, data):
        with tf.GradientTape() as tape:
            logits = self(data, training=True)
            nats, accuracy, batch = self._step_values(data, logits)
            scaled = _scale_for_replicas(self.optimizer, nats)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._track(nats, accuracy, batch)

    def test_step(self, data):
        logits = self(data, training=False)
        return self._track(*self._step_values(data, logits))

    def get_config(self):
        config = super().get_config()
        config.update({"num_embeddings": self.num_embeddings, "height": self.height, "width": self.width,
                       "hidden_channels": self.hidden_channels, "num_layers": self.num_layers,
                       "kernel_size": self.kernel_size, "dropout": self.dropout,
                       "num_attention_blocks": self.num_attention_blocks, "num_heads": self.num_heads,
                       "num_positions": self.num_positions, "position_frequencies": self.position_frequencies,
                       "position_dropout": self.position_dropout, "seed": self.seed})
        return config


@_REGISTER
class UnconditionalPrior(_GatedPixelCNN):
    """Gated PixelCNN with causal self-attention, conditioned on no other code map: the top code
    map's prior, and the single code map's prior of a one-level VQ-VAE (it was called ``TopPrior``;
    files saved under that name still load, and the name remains an alias).

    Example: ``UnconditionalPrior(512, 32, 32)(top_codes)`` with ``top_codes`` int32 [B, 32, 32] gives logits
    [B, 32, 32, 512]. ``fit`` takes batches of top code maps.

    Args:
        num_embeddings (int): codebook size (classes).
        height, width (int): code grid.
        hidden_channels (int, 128), num_layers (int, 12), kernel_size (int, 5), dropout (float, 0.1),
        num_attention_blocks (int, 2), num_heads (int, 4): sizes.
        num_positions (int, 0), position_frequencies (list of float, None): condition on the axial
            slice position (inputs ``{"top": codes, "position": int [B]}``) and how often each
            occurs in the training data.
        position_dropout (float, 0): the probability with which a training map's position is replaced
            by "no position" (index ``num_positions``), so the prior also learns the unconditional model
            and can be sampled with classifier-free guidance (``PriorSampler(..., guidance=w)``).
    """

    def __init__(self, num_embeddings: int, height: int, width: int, hidden_channels: int = 128,
                 num_layers: int = 12, kernel_size: int = 5, dropout: float = 0.1, num_attention_blocks: int = 2,
                 num_heads: int = 4, **kwargs):
        super().__init__(num_embeddings, height, width, hidden_channels, num_layers, kernel_size, dropout,
                         num_attention_blocks, num_heads, conditional=False, **kwargs)

    def build(self, input_shape=None):
        self.call(self._build_inputs(top=tf.zeros((1, self.height, self.width), tf.int32)))

    def target_codes(self, inputs):
        """The code map [B, H, W] this prior models, from its inputs."""
        if isinstance(inputs, dict):  # {"top" (or "bottom" for a single-level model), optional "position"}
            return inputs["top"] if "top" in inputs else inputs["bottom"]
        return inputs[0] if isinstance(inputs, (tuple, list)) else inputs

    def _split(self, inputs):
        return self.target_codes(inputs), None, inputs.get("position") if isinstance(inputs, dict) else None


@_REGISTER
class BottomPrior(_GatedPixelCNN):
    """Gated PixelCNN over the bottom code map, conditioned on the top code map.

    Inputs are ``(bottom_codes [B, H, W], top_codes [B, H/f, W/f])`` with ``f = top_factor`` (2 or 4);
    the top codes pass through a residual ``ConditioningStack`` and a x``f`` upsampling, and the result is added inside every gated
    block. Example: ``BottomPrior(512, 64, 64, top_num_embeddings=512)((bottom, top))`` gives logits
    [B, 64, 64, 512].

    Args:
        num_embeddings (int): bottom codebook size.
        height, width (int): bottom grid (``top_factor`` times the top grid).
        top_factor (int, 2): bottom grid over top grid.
        top_num_embeddings (int): top codebook size.
        num_conditioning_layers (int, 4): residual blocks of the conditioning stack.
        hidden_channels, num_layers, kernel_size, dropout, num_attention_blocks (0), num_heads: sizes.
        num_positions, position_frequencies: slice-position conditioning as in ``UnconditionalPrior`` (inputs
            ``{"bottom", "top", "position"}``).
    """

    def __init__(self, num_embeddings: int, height: int, width: int, top_num_embeddings: int | None = None,
                 hidden_channels: int = 128, num_layers: int = 12, kernel_size: int = 5, dropout: float = 0.1,
                 num_conditioning_layers: int = 4, num_attention_blocks: int = 0, num_heads: int = 4,
                 top_factor: int = 2, **kwargs):
        super().__init__(num_embeddings, height, width, hidden_channels, num_layers, kernel_size, dropout,
                         num_attention_blocks, num_heads, conditional=True, **kwargs)
        if height % top_factor or width % top_factor:
            raise ValueError(f"the bottom grid must be {top_factor} times the top grid, got {height}x{width}")
        self.top_num_embeddings = top_num_embeddings or num_embeddings
        self.num_conditioning_layers = num_conditioning_layers
        self.top_factor = top_factor
        self.conditioning = ConditioningStack(self.top_num_embeddings, hidden_channels, num_conditioning_layers,
                                              upsample=top_factor, name="conditioning")

    def build(self, input_shape=None):
        self.call(self._build_inputs(bottom=tf.zeros((1, self.height, self.width), tf.int32),
                                     top=tf.zeros((1, self.height // self.top_factor, self.width // self.top_factor),
                                                  tf.int32)))

    def target_codes(self, inputs):
        """The bottom code map [B, H, W], from the inputs."""
        return inputs["bottom"] if isinstance(inputs, dict) else inputs[0]

    def _split(self, inputs):
        if isinstance(inputs, dict):
            return inputs["bottom"], self.conditioning(inputs["top"]), inputs.get("position")
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError("BottomPrior takes (bottom_codes, top_codes) or {'bottom', 'top', 'position'}")
        return inputs[0], self.conditioning(inputs[1]), None

    def get_config(self):
        config = super().get_config()
        config.update({"top_num_embeddings": self.top_num_embeddings,
                       "num_conditioning_layers": self.num_conditioning_layers, "top_factor": self.top_factor})
        return config


TopPrior = UnconditionalPrior  # the earlier name, kept for code that imports it
# .keras files written before the rename name the class "oasis_gen>TopPrior"
keras.saving.get_custom_objects().setdefault("oasis_gen>TopPrior", UnconditionalPrior)


def build_prior(level: str, prior_config, num_embeddings: int, top_grid: int, bottom_grid: int,
                conditional: bool = True, position_frequencies: list[float] | None = None, seed: int = 0):
    """A built ``UnconditionalPrior`` or ``BottomPrior`` from a ``PriorConfig`` and the VQ-VAE's derived sizes.

    ``conditional=False`` gives the bottom map of a single-level VQ-VAE an unconditional prior (a
    ``UnconditionalPrior`` over the bottom grid). ``position_frequencies`` (one per axial slice position, from
    the training codes) make the prior conditioned on slice position.
    """
    positions = {"num_positions": len(position_frequencies), "position_frequencies": list(position_frequencies),
                 "position_dropout": getattr(prior_config, "position_dropout", 0.0)} if position_frequencies else {}
    positions["seed"] = seed
    if level == "bottom" and conditional and prior_config.num_attention_blocks:
        raise ValueError(f"the bottom prior has no attention blocks (num_attention_blocks is "
                         f"{prior_config.num_attention_blocks}; set it to 0): attention over its "
                         f"{bottom_grid}x{bottom_grid} map costs {bottom_grid ** 4:,} scores per head and image")
    if level == "top" or (level == "bottom" and not conditional):
        grid = top_grid if level == "top" else bottom_grid
        model = UnconditionalPrior(num_embeddings, grid, grid, prior_config.hidden_channels, prior_config.num_layers,
                         prior_config.kernel_size, prior_config.dropout, prior_config.num_attention_blocks,
                         prior_config.num_heads, **positions)
    elif level == "bottom":
        model = BottomPrior(num_embeddings, bottom_grid, bottom_grid, num_embeddings, prior_config.hidden_channels,
                            prior_config.num_layers, prior_config.kernel_size, prior_config.dropout,
                            prior_config.num_conditioning_layers, 0, prior_config.num_heads,
                            top_factor=bottom_grid // top_grid, **positions)
    else:
        raise ValueError(f"level must be 'top' or 'bottom', got {level!r}")
    model.build()
    return model
