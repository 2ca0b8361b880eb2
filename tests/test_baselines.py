"""The baselines of earlier OASIS work: a single-level VQ-VAE, a DCGAN latent prior, and the compare command."""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DCGAN_FLAGS, TINY_PRIOR_FLAGS
from helpers import assert_config_round_trip, assert_drawn_figure, assert_saving_round_trip

from oasis_gen.cli import evaluate as evaluate_cli
from oasis_gen.cli import generate, train
from oasis_gen.models import loading
from oasis_gen.models.dcgan import DiscriminatorWatch, LatentDCGAN
from oasis_gen.models.vqvae import VQVAE2


def test_single_level_model_shapes_and_round_trips(tmp_path):
    model = VQVAE2(image_size=32, num_hiddens=8, num_residual_layers=1, num_residual_hiddens=4, num_embeddings=16,
                   embedding_dim=4, levels=1)
    model.build()
    images = tf.random.uniform((2, 32, 32, 1))
    top, bottom = model.encode(images)
    assert top is None and bottom.shape == (2, 8, 8) and bottom.dtype == tf.int32
    assert model.decode_codes(None, bottom).shape == (2, 32, 32, 1)
    assert model.level_names == ("bottom",) and not hasattr(model, "top_quantizer")
    two_level = VQVAE2(image_size=32, num_hiddens=8, num_residual_layers=1, num_residual_hiddens=4,
                       num_embeddings=16, embedding_dim=4)
    two_level.build()
    assert model.count_params() < two_level.count_params()  # the same family, minus the top level
    assert_config_round_trip(model)
    loaded = assert_saving_round_trip(model, images, str(tmp_path / "one.keras"))
    assert loaded.levels == 1
    with pytest.raises(ValueError, match="levels must be 1 or 2"):
        VQVAE2(image_size=32, levels=3)


def test_dcgan_shapes_snapping_and_one_step_changes_both_networks(tmp_path):
    codebook = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    gan = LatentDCGAN(codebook, grid=8, noise_dim=6, base_channels=4, latent_scale=1.5)
    gan.build()
    gan.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    gan.optimizer.build(gan.trainable_variables)
    latents = gan.generate_latents(tf.random.normal((3, 6)))
    assert latents.shape == (3, 8, 8, 4)  # the quantizer's latent map shape
    codes = gan.sample_codes(5, seed=1)
    assert codes.shape == (5, 8, 8) and codes.min() >= 0 and codes.max() < 16
    np.testing.assert_array_equal(codes, gan.sample_codes(5, seed=1))
    # Snapping picks the nearest codebook vector (NumPy reference).
    flat = latents.numpy().reshape(-1, 4)
    expected = np.argmin(((flat[:, None, :] - codebook[None]) ** 2).sum(-1), axis=1).reshape(3, 8, 8)
    np.testing.assert_array_equal(gan.snap(latents).numpy(), expected)
    generator_before = [w.copy() for w in gan.generator.get_weights()]
    discriminator_before = [w.copy() for w in gan.discriminator.get_weights()]
    logs = gan.train_on_batch(np.random.default_rng(1).integers(0, 16, (4, 8, 8)), return_dict=True)
    assert np.isfinite(logs["d_loss"]) and np.isfinite(logs["g_loss"])
    assert any(not np.allclose(a, b) for a, b in zip(generator_before, gan.generator.get_weights()))
    assert any(not np.allclose(a, b) for a, b in zip(discriminator_before, gan.discriminator.get_weights()))
    path = str(tmp_path / "gan.keras")
    loading.save_model_atomic(gan, path)
    loaded = loading.load_model(path)
    np.testing.assert_array_equal(loaded.sample_codes(3, seed=2), gan.sample_codes(3, seed=2))
    with pytest.raises(ValueError, match="power of two"):
        LatentDCGAN(codebook, grid=12)


def test_discriminator_watch_warns_when_it_wins_outright(capsys):
    watch = DiscriminatorWatch()
    watch.on_epoch_end(0, {"d_real_accuracy": 0.7, "d_fake_accuracy": 0.8, "g_loss": 1.2})
    watch.on_epoch_end(1, {"d_real_accuracy": 1.0, "d_fake_accuracy": 0.995, "g_loss": 7.5})
    assert [alert["epoch"] for alert in watch.alerts] == [2]
    assert "discriminator wins outright at epoch 2" in capsys.readouterr().out


def test_single_level_pipeline_end_to_end(tiny_single_run, tmp_path, capsys):
    with np.load(os.path.join(tiny_single_run, "codes", "train.npz")) as archive:
        assert "top" not in archive.files and archive["bottom"].shape == (16, 16, 16)
    assert train.main(["prior", "--level", "top", "--run_dir", tiny_single_run] + TINY_PRIOR_FLAGS) == 2
    assert "no top codes" in capsys.readouterr().err
    metrics = json.load(open(os.path.join(tiny_single_run, "prior_dcgan", "metrics.json")))
    assert metrics["kind"] == "dcgan" and metrics["epochs_trained"] == 2 and metrics["latent_scale"] > 0
    for name in ("samples_epoch_001.png", "samples_epoch_002.png", "curves.png"):
        assert os.path.exists(os.path.join(tiny_single_run, "prior_dcgan", "plots", name)), name
    for prior in ("pixelcnn", "dcgan"):
        out = str(tmp_path / prior)
        assert generate.main(["--run_dir", tiny_single_run, "--num_samples", "3", "--prior", prior, "--out", out]) == 0
        names = sorted(n for n in os.listdir(out) if n.startswith("sample_"))
        if prior == "dcgan":  # the DCGAN knows no slice position; the PixelCNN prior is position-conditioned
            assert names == [f"sample_00{i}.png" for i in range(3)]
        else:
            assert [re.sub(r"_slice_\d+", "", n) for n in names] == [f"sample_00{i}.png" for i in range(3)]
    capsys.readouterr()
    assert evaluate_cli.main(["prior", "--run_dir", tiny_single_run, "--data", json.load(open(
        os.path.join(tiny_single_run, "config.json")))["data"]["data_dir"], "--json"]) == 0
    nll = json.loads(capsys.readouterr().out)
    assert "top" not in nll and 0 < nll["bottom"]["nll_bits_per_code"] < 6


def test_dcgan_refuses_a_two_level_run(tiny_prior_run, capsys):
    assert train.main(["prior", "--run_dir", tiny_prior_run] + DCGAN_FLAGS) == 2
    assert "--levels 1" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_puts_runs_side_by_side(tiny_single_run, tiny_prior_run, tiny_phantom, tmp_path, capsys):
    out = str(tmp_path / "comparison")
    assert evaluate_cli.main(["compare", "--run_dir", tiny_single_run, "--run_dir", tiny_prior_run, "--data", tiny_phantom,
                          "--num_samples", "4", "--c2st_epochs", "1", "--out", out, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    rows = {(row["run"], row["prior"]): row for row in results["rows"]}
    assert set(rows) == {("single", "pixelcnn"), ("single", "dcgan"), ("tiny", "pixelcnn")}
    assert rows[("single", "dcgan")]["nll_bits_per_slice"] is None
    assert rows[("tiny", "pixelcnn")]["levels"] == 2 and rows[("tiny", "pixelcnn")]["nll_bits_per_slice"] > 0
    for row in rows.values():
        assert 0 <= row["c2st_auc"] <= 1 and 0 < row["ssim"] <= 1
    table = open(os.path.join(out, "comparison.md")).read()
    assert table.count("| single |") == 2 and "| tiny | 2 | pixelcnn |" in table
    assert_drawn_figure(os.path.join(out, "comparison.png"))
