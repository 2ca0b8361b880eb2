"""Fault injection: foreign model files, missing run files, NaN losses."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import TINY_VQVAE_FLAGS
from oasis_gen import training
from oasis_gen.cli import generate, train


def test_a_keras_file_that_is_not_ours_is_refused(tmp_path):
    inputs = keras.Input((4,))
    foreign = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    foreign.save(tmp_path / "foreign.keras")
    with pytest.raises(ValueError, match="foreign.keras holds a Functional, not an oasis_gen model"):
        training.load_model(str(tmp_path / "foreign.keras"))
    (tmp_path / "garbage.keras").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="garbage.keras is not a loadable oasis_gen model"):
        training.load_model(str(tmp_path / "garbage.keras"))


def test_a_lambda_layer_is_not_executed_from_a_model_file(tmp_path):
    inputs = keras.Input((4,))
    sneaky = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    sneaky.save(tmp_path / "sneaky.keras")
    with pytest.raises(ValueError, match="not a loadable oasis_gen model"):
        training.load_model(str(tmp_path / "sneaky.keras"))


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
    weights_before = training.load_model(training.read_checkpoint_state(folder)["path"]).get_weights()
    os.remove(os.path.join(folder, "COMPLETE"))
    capsys.readouterr()
    # An absurd learning rate makes the loss non-finite within a few steps.
    assert train.main(["vqvae", "--run_dir", run_dir, "--epochs", "2", "--learning_rate", "1e30", "--override"]) == 2
    error = capsys.readouterr().err
    assert "NaN/Inf at training step" in error and "(step 4) is kept" in error
    assert json.load(open(os.path.join(folder, "checkpoint.json"))) == good
    weights_after = training.load_model(training.read_checkpoint_state(folder)["path"]).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights_before, weights_after))
    assert not os.path.exists(os.path.join(folder, "COMPLETE"))


def test_a_prior_loads_in_a_fresh_process(tiny_prior_run):
    import subprocess
    import sys

    script = ("from oasis_gen import training; "
              f"print(type(training.load_model({os.path.join(tiny_prior_run, 'prior_bottom', 'model.keras')!r})).__name__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().endswith("BottomPrior"), result.stderr[-2000:]
