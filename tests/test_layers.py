"""Every layer and model of the package passes the shared ``run_layer_test``: shapes (eager and
symbolic), config round trip, float32 weights and finite outputs under a mixed policy, ``.keras`` round trip."""

import numpy as np
import pytest
from helpers import run_layer_test

from oasis_gen.evaluation.feature_net import SpatialStd
from oasis_gen.models.pixelcnn import (
    CausalSelfAttention,
    ConditioningStack,
    GatedBlock,
    HorizontalConv,
    StepDropout,
    VerticalConv,
)
from oasis_gen.models.priors import BottomPrior, UnconditionalPrior
from oasis_gen.models.quantizer import VectorQuantizerEMA
from oasis_gen.models.vqvae import VQVAE2, ResidualStack

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(2, 6, 6, 8)).astype("float32")
CODES = RNG.integers(0, 7, size=(2, 4, 4)).astype("int32")

CASES = {
    "quantizer": (VectorQuantizerEMA, {"num_embeddings": 16, "embedding_dim": 8}, [FEATURES],
                  # outputs in key order: distances, indices, loss, norm_ratio, perplexity, quantized, usage
                  [(2, 6, 6, 16), (2, 6, 6), (), (), (), (2, 6, 6, 8), ()], {}, ("float32",)),
    "residual_stack": (ResidualStack, {"num_hiddens": 8, "num_residual_hiddens": 4, "num_layers": 2}, [FEATURES],
                       [(2, 6, 6, 8)], {}),
    "vertical_conv": (VerticalConv, {"filters": 5, "kernel_size": 3}, [FEATURES], [(2, 6, 6, 5)], {}),
    "horizontal_conv": (HorizontalConv, {"filters": 5, "kernel_size": 3}, [FEATURES], [(2, 6, 6, 5)], {}),
    "step_dropout": (StepDropout, {"rate": 0.3, "seed": 1}, [FEATURES], [(2, 6, 6, 8)], {}),
    "gated_block": (GatedBlock, {"channels": 8, "kernel_size": 3}, [FEATURES, FEATURES],
                    [(2, 6, 6, 8), (2, 6, 6, 8), (2, 6, 6, 8)], {}),
    "attention": (CausalSelfAttention, {"channels": 8, "num_heads": 2, "length": 36}, [FEATURES],
                  [(2, 6, 6, 8)], {}),
    "conditioning_stack": (ConditioningStack, {"num_embeddings": 7, "channels": 8, "num_layers": 1}, [CODES],
                           [(2, 8, 8, 8)], {}),
    "spatial_std": (SpatialStd, {}, [FEATURES], [(2, 8)], {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name, tmp_path):
    layer_class, kwargs, inputs, shapes, call_kwargs, *policies = CASES[name]
    # the quantizer is float32 by design: VQVAE2 builds it so under every policy (test_precision checks that)
    run_layer_test(layer_class, kwargs, inputs, shapes, call_kwargs, tmp_path=tmp_path,
                   policies=policies[0] if policies else ("float32", "mixed_bfloat16"))


def test_vqvae_model():
    images = RNG.uniform(size=(2, 32, 32, 1)).astype("float32")
    kwargs = {"image_size": 32, "num_hiddens": 8, "num_residual_layers": 1, "num_residual_hiddens": 4,
              "num_embeddings": 8, "embedding_dim": 4}
    # the models' mixed-policy training is covered end to end in test_precision; here float32
    run_layer_test(VQVAE2, kwargs, [images], [(2, 32, 32, 1)], policies=("float32",))


def test_priors():
    top_codes = RNG.integers(0, 8, size=(2, 4, 4)).astype("int32")
    bottom_codes = RNG.integers(0, 8, size=(2, 8, 8)).astype("int32")
    small = {"num_embeddings": 8, "hidden_channels": 8, "num_layers": 2, "kernel_size": 3, "dropout": 0.0}
    run_layer_test(UnconditionalPrior, {**small, "height": 4, "width": 4, "num_attention_blocks": 1}, [top_codes],
                   [(2, 4, 4, 8)], policies=("float32",))
    run_layer_test(BottomPrior, {**small, "height": 8, "width": 8, "num_conditioning_layers": 1},
                   [(bottom_codes, top_codes)], [(2, 8, 8, 8)], policies=("float32",),
                   symbolic=False)
