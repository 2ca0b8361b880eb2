"""Fault injection: foreign model files, missing run files, NaN losses."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import TINY_VQVAE_FLAGS

from oasis_gen.cli import generate, train
from oasis_gen.models import loading
from oasis_gen.training import callbacks as training_callbacks
from oasis_gen.training import checkpoints


def test_a_keras_file_that_is_not_ours_is_refused(tmp_path):
    inputs = keras.Input((4,))
    foreign = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    foreign.save(tmp_path / "foreign.keras")
    with pytest.raises(ValueError, match="foreign.keras holds a Functional, not an oasis_gen model"):
        loading.load_model(str(tmp_path / "foreign.keras"))
    (tmp_path / "garbage.keras").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="garbage.keras is not a loadable oasis_gen model"):
        loading.load_model(str(tmp_path / "garbage.keras"))


def test_a_lambda_layer_is_not_executed_from_a_model_file(tmp_path):
    inputs = keras.Input((4,))
    sneaky = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    sneaky.save(tmp_path / "sneaky.keras")
    with pytest.raises(ValueError, match="not a loadable oasis_gen model"):
        loading.load_model(str(tmp_path / "sneaky.keras"))


def test_a_run_with_a_missing_model_file_names_it(tiny_run, tmp_path, capsys):
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny_run, broken)
    os.remove(os.path.join(broken, "vqvae", "model.keras"))
    for name in ("prior_top", "prior_bottom"):
        os.makedirs(os.path.join(broken, name), exist_ok=True)
        open(os.path.join(broken, name, "COMPLETE"), "w").write("{}")
    assert generate.main(["--run_dir", broken, "--num_samples", "1"]) == 2
    assert "no model file at" in capsys.readouterr().err


def test_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(tiny_phantom, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    flags = list(TINY_VQVAE_FLAGS)
    flags[flags.index("--epochs") + 1] = "1"
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + flags) == 0
    folder = os.path.join(run_dir, "vqvae")
    good = json.load(open(os.path.join(folder, "checkpoint.json")))
    weights_before = loading.load_model(checkpoints.read_checkpoint_state(folder)["path"]).get_weights()
    os.remove(os.path.join(folder, "COMPLETE"))
    capsys.readouterr()
    # An absurd learning rate makes the loss non-finite within a few steps; checkpoints are attempted
    # after every step, but none of a broken state is written.
    assert train.main(["vqvae", "--run_dir", run_dir, "--epochs", "2", "--learning_rate", "1e30", "--override",
                       "--checkpoint_steps", "1"]) == 2
    error = capsys.readouterr().err
    failed_at = int(re.search(r"NaN/Inf at training step (\d+)", error).group(1))
    kept = checkpoints.read_checkpoint_state(folder)
    assert good["step"] <= kept["step"] < failed_at and f"(step {kept['step']}) is kept" in error
    weights_after = loading.load_model(kept["path"]).get_weights()
    assert all(np.isfinite(w).all() for w in weights_after)
    if kept["step"] == good["step"]:
        assert all(np.array_equal(a, b) for a, b in zip(weights_before, weights_after))
    assert not os.path.exists(os.path.join(folder, "COMPLETE"))


def test_a_prior_loads_in_a_fresh_process(tiny_prior_run):
    import subprocess
    import sys

    script = ("from oasis_gen.models import loading; "
              f"print(type(loading.load_model({os.path.join(tiny_prior_run, 'prior_bottom', 'model.keras')!r})).__name__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().endswith("BottomPrior"), result.stderr[-2000:]


def test_a_run_directory_from_another_version_is_refused(tiny_run, tmp_path, capsys):
    other = str(tmp_path / "other_version")
    shutil.copytree(tiny_run, other)
    path = os.path.join(other, "config.json")
    values = json.load(open(path))
    values["version"] = 99
    json.dump(values, open(path, "w"))
    assert train.main(["codes", "--run_dir", other]) == 2
    assert "config version 99 is not supported" in capsys.readouterr().err


def test_an_older_config_with_a_retired_field_still_opens(tiny_run, tmp_path):
    from oasis_gen import rundir

    older = str(tmp_path / "older")
    shutil.copytree(tiny_run, older)
    path = os.path.join(older, "config.json")
    values = json.load(open(path))
    values["data"]["shuffle_buffer"] = 4096  # written by earlier versions
    del values["vqvae_train"]["checkpoint_steps"]  # not yet known to them
    json.dump(values, open(path, "w"))
    run = rundir.open_run(older, None, {}, create=False)
    assert run.config.vqvae_train.checkpoint_steps == 200


def test_an_exploding_codebook_is_reported(tiny_phantom, capsys):
    import tensorflow as tf

    from oasis_gen.models.vqvae import VQVAE2

    model = VQVAE2(image_size=32, num_hiddens=8, num_residual_layers=1, num_residual_hiddens=4, num_embeddings=16,
                   embedding_dim=4)
    model.build()
    images = tf.random.uniform((2, 32, 32, 1))
    healthy = model.quantize_levels(images)[1]["norm_ratio"].numpy()
    codebook = model.bottom_quantizer.codebook
    codebook.assign(codebook.numpy() * 1000.0)  # the codebook blows up
    exploded = model.quantize_levels(images)[1]["norm_ratio"].numpy()
    assert healthy < 10 <= exploded
    watch = training_callbacks.CodebookWatch()
    watch.on_epoch_end(0, {"top_norm_ratio": 0.9, "bottom_norm_ratio": float(exploded)})
    watch.on_epoch_end(1, {"top_norm_ratio": float("nan"), "bottom_norm_ratio": 0.8})
    assert [(a["epoch"], a["level"]) for a in watch.alerts] == [(1, "bottom"), (2, "top")]
    assert "exploding bottom codebook at epoch 1" in capsys.readouterr().out
