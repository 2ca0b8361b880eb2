"""Precision policies: bfloat16/float16 training of every stage, one policy per stage, float32 model files,
float32 code extraction, and both samplers under mixed policies."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import DCGAN_FLAGS, TINY_PRIOR_FLAGS, TINY_VQVAE_FLAGS

from oasis_gen import config as config_lib
from oasis_gen import fileio
from oasis_gen.cli import train
from oasis_gen.data import codes as codes_lib
from oasis_gen.data import stream
from oasis_gen.models import loading, precision
from oasis_gen.models.priors import BottomPrior, UnconditionalPrior
from oasis_gen.sampling.samplers import PriorSampler
from oasis_gen.training import loop as training

BF16 = ["--precision", "mixed_bfloat16"]


def _weights_are_float32(path):
    model = loading.load_model(path, precision=None)
    return all(np.asarray(weight).dtype == np.float32 for weight in model.get_weights()
               if np.issubdtype(np.asarray(weight).dtype, np.floating))


def _finite_history(folder):
    history = fileio.read_history(os.path.join(folder, "history.csv"))
    checked = {key: values for key, values in history.items() if ("loss" in key or "bits" in key)
               and not (key.startswith("val_") and np.all(np.isnan(values)))}  # a stage without validation
    return bool(checked) and all(np.all(np.isfinite(values)) for values in checked.values())


@pytest.fixture(scope="module")
def bf16_run(tiny_phantom, tmp_path_factory):
    """Stage 1, codes and both priors of a tiny run, all in this one process, the training stages in bfloat16."""
    run_dir = str(tmp_path_factory.mktemp("bf16") / "run")
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + TINY_VQVAE_FLAGS + BF16) == 0
    assert keras.config.dtype_policy().name == "float32"  # restored after the stage
    assert train.main(["codes", "--run_dir", run_dir]) == 0
    for level, extra in (("top", ["--num_attention_blocks", "1"]), ("bottom", ["--num_conditioning_layers", "1"])):
        assert train.main(["prior", "--level", level, "--run_dir", run_dir] + TINY_PRIOR_FLAGS + extra + BF16) == 0
        assert keras.config.dtype_policy().name == "float32"
    return run_dir


def test_every_stage_trains_under_bfloat16_into_float32_files(bf16_run):
    stored = json.load(open(os.path.join(bf16_run, "config.json")))
    for section in ("vqvae_train", "top_prior_train", "bottom_prior_train"):
        assert stored[section]["precision"] == "mixed_bfloat16", section
    for stage in ("vqvae", "prior_top", "prior_bottom"):
        folder = os.path.join(bf16_run, stage)
        assert _finite_history(folder), stage
        assert _weights_are_float32(os.path.join(folder, "model.keras")), stage
        # the file remembers how it was trained (for resume); loading gives a float32 model by default
        assert loading.load_model(os.path.join(folder, "model.keras"), precision=None).compute_dtype == "bfloat16"
        loaded = loading.load_model(os.path.join(folder, "model.keras"))
        assert {layer.compute_dtype for layer in loaded._flatten_layers()} == {"float32"}, stage
    metrics = json.load(open(os.path.join(bf16_run, "prior_bottom", "metrics.json")))
    assert all(np.isfinite(v) for v in metrics["nll_bits_per_code"].values())


def test_codes_after_a_bfloat16_stage_one_are_encoded_in_float32(bf16_run):
    run = config_lib.load_config(os.path.join(bf16_run, "config.json"))
    vqvae = loading.load_model(os.path.join(bf16_run, "vqvae", "model.keras"))
    dataset, _ = stream.load_split(run.data, "validate", 4, with_paths=True)
    expected = codes_lib.encode_dataset(vqvae, dataset, progress=False)
    stored = codes_lib.load_codes(os.path.join(bf16_run, "codes", "validate.npz"), vqvae.num_embeddings)
    np.testing.assert_array_equal(stored["bottom"], expected["bottom"])
    np.testing.assert_array_equal(stored["top"], expected["top"])


def test_dcgan_stage_trains_under_bfloat16(tiny_single_run, tmp_path):
    import shutil

    run_dir = str(tmp_path / "single")
    shutil.copytree(tiny_single_run, run_dir)
    assert train.main(["prior", "--run_dir", run_dir, "--force", "--override"] + DCGAN_FLAGS + BF16) == 0
    assert keras.config.dtype_policy().name == "float32"
    assert _finite_history(os.path.join(run_dir, "prior_dcgan"))
    path = os.path.join(run_dir, "prior_dcgan", "model.keras")
    assert _weights_are_float32(path) and loading.load_model(path, precision=None).compute_dtype == "bfloat16"


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_cached_sampler_runs_and_agrees_under_mixed_policies(policy):
    rng = np.random.default_rng(3)
    with precision.precision_scope(policy):
        top = UnconditionalPrior(12, 4, 5, hidden_channels=16, num_layers=3, kernel_size=3, dropout=0.0,
                       num_attention_blocks=1, num_heads=2)
        top.build()
        bottom = BottomPrior(12, 4, 6, 5, hidden_channels=16, num_layers=2, kernel_size=3, dropout=0.0,
                             num_conditioning_layers=1)
        bottom.build()
    assert top.compute_dtype == policy.split("_")[1]
    condition = rng.integers(0, 5, size=(4, 2, 3)).astype(np.int32)
    for prior, extra in ((top, ()), (bottom, (condition,))):
        naive = PriorSampler(prior, "naive", batch_size=2)(4, *extra, seed=1)
        cached = PriorSampler(prior, "cached", batch_size=2)(4, *extra, seed=1)
        assert cached.shape == naive.shape
        # in reduced precision the two samplers sum in other orders; the first positions must agree
        np.testing.assert_array_equal(cached[:, 0, :3], naive[:, 0, :3])
        assert (cached == naive).mean() > 0.7


def test_bfloat16_vqvae_keeps_quantizer_inputs_and_pixels_in_float32():
    from oasis_gen.models.vqvae import VQVAE2

    with precision.precision_scope("mixed_bfloat16"):
        model = VQVAE2(image_size=32, num_hiddens=16, num_residual_layers=1, num_residual_hiddens=8,
                       num_embeddings=16, embedding_dim=4, top_reconstruction_weight=0.5)
        model.build()
    assert model.compute_dtype == "bfloat16" and model.decoder[0].compute_dtype == "bfloat16"
    for layer in (model.top_pre_quantize, model.bottom_pre_quantize, model.decoder[-1], model.top_only_decoder[-1]):
        assert layer.compute_dtype == "float32", layer.name
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    pixels = np.asarray(model(images)).ravel()
    inside = pixels[(pixels > 0) & (pixels < 1)] - 0.5
    assert inside.size > 100
    # a bfloat16 output layer would leave every pixel on bfloat16's grid (8 significant bits)
    on_grid = inside == keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(inside, "bfloat16"), "float32"))
    assert on_grid.mean() < 0.2


def test_auto_precision_and_stored_configs(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    assert precision.resolve_precision("auto") == "float32"
    assert precision.resolve_precision("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="'half'"):
        precision.resolve_precision("half")
    # configs written before `precision` existed keep what they trained with
    old = config_lib.preset("cpu").to_dict()
    for section, flag in (("vqvae_train", True), ("top_prior_train", False)):
        del old[section]["precision"]
        old[section]["mixed_precision"] = flag
    loaded = config_lib.Config.from_dict(old)
    assert loaded.vqvae_train.precision == "mixed_float16" and loaded.top_prior_train.precision == "float32"
    assert loaded.bottom_prior_train.precision == "auto"


def test_precision_scope_restores_the_policy_after_an_error():
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision.precision_scope("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("stage failed")
    assert keras.config.dtype_policy().name == "float32"


def test_cosine_schedule_with_warm_up_and_clipping():
    import math

    train_config = config_lib.TrainConfig(learning_rate=1e-3, warmup_steps=10, lr_schedule="cosine", clip_norm=0.5)
    schedule = training.learning_rate(train_config, 110)
    for step, expected in ((0, 0.0), (5, 5e-4), (10, 1e-3), (60, 5e-4), (110, 0.0)):
        cosine = 1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 100)) if step >= 10 else expected
        assert float(schedule(step)) == pytest.approx(cosine, abs=1e-7), step
    # a short run warms up for at most half its steps
    assert float(training.learning_rate(train_config, 8)(4)) == pytest.approx(1e-3)
    optimizer = training.make_optimizer(train_config, total_steps=110)
    assert optimizer.global_clipnorm == 0.5
    constant = config_lib.TrainConfig(learning_rate=2e-4, lr_schedule="constant", clip_norm=0.0)
    assert training.learning_rate(constant, 100) == 2e-4
    assert training.make_optimizer(constant).global_clipnorm is None
