import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_round_trip, assert_saving_round_trip

from oasis_gen.models.vqvae import VQVAE2

SMALL = dict(num_hiddens=16, num_residual_layers=1, num_residual_hiddens=8, num_embeddings=32, embedding_dim=8)


def _images(count, size, seed=0):
    """Smooth random blobs in [0, 1] on a black background, brain-slice-like enough to learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    images = []
    for _ in range(count):
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.3)
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < r ** 2
        images.append(disc * (0.4 + 0.4 * np.sin(6 * x + rng.uniform(0, 3)) ** 2))
    return np.asarray(images, np.float32)[..., None]


def test_code_and_image_shapes_at_256():
    model = VQVAE2(image_size=256, **SMALL)
    model.build()
    images = _images(2, 256)
    top_codes, bottom_codes = model.encode(images)
    assert top_codes.shape == (2, 32, 32) and bottom_codes.shape == (2, 64, 64)
    assert top_codes.dtype == tf.int32 and bottom_codes.dtype == tf.int32
    decoded = model.decode_codes(top_codes, bottom_codes)
    assert decoded.shape == (2, 256, 256, 1) and decoded.dtype == tf.float32
    assert model(images).shape == (2, 256, 256, 1)
    with pytest.raises(ValueError, match="expected images \\[B, 256, 256, 1\\]"):
        model(tf.zeros((1, 128, 128, 1)))


def test_a_16x16_top_map_round_trips_and_trains(tmp_path):
    model = VQVAE2(image_size=256, top_downsample=4, **SMALL)
    model.build()
    images = _images(2, 256)
    top_codes, bottom_codes = model.encode(images)
    assert top_codes.shape == (2, 16, 16) and bottom_codes.shape == (2, 64, 64) and model.top_grid == 16
    assert model.decode_codes(top_codes, bottom_codes).shape == (2, 256, 256, 1)
    rebuilt = assert_config_round_trip(model)
    assert rebuilt.top_downsample == 4
    assert_saving_round_trip(model, images, str(tmp_path / "coarse.keras"), atol=1e-5)
    with pytest.raises(ValueError, match="top_downsample must be 2 or 4"):
        VQVAE2(image_size=64, top_downsample=3)
    with pytest.raises(ValueError, match="multiple of 16, got 40"):
        VQVAE2(image_size=40, top_downsample=4)


def test_small_size_and_invalid_arguments():
    model = VQVAE2(image_size=32, **SMALL)
    model.build()
    top_codes, bottom_codes = model.encode(_images(3, 32))
    assert top_codes.shape == (3, 4, 4) and bottom_codes.shape == (3, 8, 8)
    assert model.top_grid == 4 and model.bottom_grid == 8
    with pytest.raises(ValueError, match="multiple of 8, got 30"):
        VQVAE2(image_size=30)


def test_config_and_keras_file_round_trip_gives_a_trainable_model(tmp_path):
    model = VQVAE2(image_size=32, data_variance=0.05, seed=2, **SMALL)
    model.build()
    assert_config_round_trip(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = _images(4, 32)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    loaded = assert_saving_round_trip(model, images, str(tmp_path / "model.keras"))
    np.testing.assert_array_equal(loaded.encode(images)[1].numpy(), model.encode(images)[1].numpy())
    np.testing.assert_array_equal(loaded.bottom_quantizer.codebook.numpy(), model.bottom_quantizer.codebook.numpy())
    before = [w.numpy().copy() for w in loaded.trainable_weights]
    codebook = loaded.top_quantizer.codebook.numpy().copy()
    loaded.fit(images, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, loaded.trainable_weights))
    assert not np.array_equal(codebook, loaded.top_quantizer.codebook.numpy())


def test_small_overfit_clearly_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = VQVAE2(image_size=32, **SMALL)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    images = _images(8, 32)
    first = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    model.fit(images, batch_size=8, epochs=150, verbose=0)
    last = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    assert last["reconstruction_loss"] < 0.2 * first["reconstruction_loss"]
    assert last["ssim"] > first["ssim"] + 0.2


def test_gradients_reach_every_trainable_weight():
    model = VQVAE2(image_size=32, **SMALL)
    model.build()
    images = tf.constant(_images(2, 32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - images))
        loss += sum(level["loss"] for level in model.quantize_levels(images))
    gradients = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, gradients) if g is None]
    assert not missing, missing


def test_vqvae_stage_on_tiny_phantom(tiny_run):
    folder = os.path.join(tiny_run, "vqvae")
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    for key in ("ssim_mean", "ssim_std", "ssim_min", "ms_ssim_mean", "psnr_mean", "mse_mean"):
        assert np.isfinite(metrics[key])
    for level in ("top", "bottom"):
        assert 0 < metrics[level]["usage"] <= 1 and metrics[level]["perplexity"] >= 1
    assert metrics["synthetic_data"] is True and metrics["images"] == 12 and metrics["epochs_trained"] == 2
    for name in ("model.keras", "checkpoint_step000000008.keras", "checkpoint.json", "history.csv", "COMPLETE",
                 "plots/curves.png", "plots/reconstructions_epoch_002.png", "plots/reconstructions_test.png"):
        assert os.path.exists(os.path.join(folder, name)), name
    assert len(open(os.path.join(folder, "history.csv")).read().strip().splitlines()) == 3


def test_rerun_skips_and_more_epochs_resume_from_the_checkpoint(tiny_phantom, tmp_path, capsys):

    from conftest import TINY_VQVAE_FLAGS

    from oasis_gen.cli import train

    run_dir = str(tmp_path / "run")
    flags = [f for f in TINY_VQVAE_FLAGS]
    flags[flags.index("--epochs") + 1] = "1"
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + flags) == 0
    capsys.readouterr()
    assert train.main(["vqvae", "--run_dir", run_dir]) == 0
    assert "already finished" in capsys.readouterr().out
    assert train.main(["vqvae", "--run_dir", run_dir, "--epochs", "2", "--override", "--force"]) == 0
    # --force retrains from scratch; a plain re-run after an unfinished stage resumes instead:
    os.remove(os.path.join(run_dir, "vqvae", "COMPLETE"))
    assert train.main(["vqvae", "--run_dir", run_dir, "--epochs", "3", "--override"]) == 0
    assert "resuming stage 1" in capsys.readouterr().out
    history = open(os.path.join(run_dir, "vqvae", "history.csv")).read().strip().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]


def test_top_only_term_matches_a_numpy_reference_and_is_learned(tmp_path):
    keras.utils.set_random_seed(0)
    model = VQVAE2(image_size=32, top_reconstruction_weight=0.5, data_variance=0.05, **SMALL)
    model.build()
    images = _images(8, 32)
    _, losses, top, bottom = model._forward_losses(tf.constant(images), training=False)
    coarse = model._run(model.top_only_decoder, top["quantized"]).numpy()[..., 0] + 0.5
    assert coarse.shape == (8, 8, 8)  # the bottom grid's resolution
    target = images[..., 0].reshape(8, 8, 4, 8, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(losses["top_only_loss"], np.mean((coarse - target) ** 2) / 0.05, rtol=1e-5)
    np.testing.assert_allclose(losses["loss"], losses["reconstruction_loss"] + losses["commitment_loss"]
                               + 0.5 * losses["top_only_loss"], rtol=1e-6)
    with tf.GradientTape() as tape:  # the term alone trains the head and the top encoder (straight through)
        top_only = model._forward_losses(tf.constant(images), training=True)[1]["top_only_loss"]
    gradients = dict(zip([w.path for w in model.trainable_weights],
                         tape.gradient(top_only, model.trainable_weights)))
    for prefix in ("top_only_out", "enc_t_conv", "enc_b_down1"):
        grads = [g for path, g in gradients.items() if prefix in path]
        assert grads and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads), prefix
    assert all(g is None for path, g in gradients.items() if "dec_up2" in path)  # the main decoder is not involved
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    first = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    model.fit(images, batch_size=8, epochs=60, verbose=0)
    last = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    assert last["top_only_loss"] < 0.3 * first["top_only_loss"]
    assert assert_config_round_trip(model).top_reconstruction_weight == 0.5
    loaded = assert_saving_round_trip(model, images, str(tmp_path / "top_only.keras"))
    np.testing.assert_allclose(loaded._forward_losses(tf.constant(images), False)[1]["top_only_loss"],
                               model._forward_losses(tf.constant(images), False)[1]["top_only_loss"], rtol=1e-5)
    for bad in (dict(top_reconstruction_weight=-1.0), dict(top_reconstruction_weight=1.0, levels=1)):
        with pytest.raises(ValueError, match="top_reconstruction_weight must be >= 0 and needs two levels"):
            VQVAE2(image_size=32, **bad)
