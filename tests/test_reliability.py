"""Reliability: time limits across resumes, seeds and their streams, weighted stage metrics, perfect
reconstructions, NaN models, refused settings and the pipeline's sampling settings."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VQVAE_FLAGS

from oasis_gen import config as config_lib
from oasis_gen import fileio
from oasis_gen.cli import train
from oasis_gen.evaluation import metrics
from oasis_gen.models.priors import UnconditionalPrior, build_prior
from oasis_gen.sampling import generate as generation
from oasis_gen.sampling import samplers
from oasis_gen.training import callbacks as training_callbacks
from oasis_gen.training import checkpoints


def test_the_time_limit_counts_training_done_before_a_resume(tiny_phantom, tmp_path, capsys, monkeypatch):
    run_dir = str(tmp_path / "r")
    flags = [flag if flag != "2" or previous != "--epochs" else "1"
             for previous, flag in zip([""] + TINY_VQVAE_FLAGS, TINY_VQVAE_FLAGS)]
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + flags) == 0
    folder = os.path.join(run_dir, "vqvae")
    state = json.load(open(os.path.join(folder, "checkpoint.json")))
    assert 0 < state["train_seconds"] < 600
    # the process died after this checkpoint, 10 minutes into a 5-minute budget
    state["train_seconds"] = 600.0
    open(os.path.join(folder, "checkpoint.json"), "w").write(json.dumps(state))
    os.remove(os.path.join(folder, "COMPLETE"))
    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(1))
    capsys.readouterr()
    assert train.main(["vqvae", "--run_dir", run_dir, "--epochs", "3", "--time_limit_minutes", "5",
                       "--op_determinism", "--override"]) == 0
    assert "10.0 of its 5 minutes were trained before this resume" in capsys.readouterr().out
    assert len(fileio.read_history(os.path.join(folder, "history.csv"))["epoch"]) == 1  # nothing more trained
    assert calls == [1]  # deterministic kernels were asked for


class _StepClock:
    """A training clock that advances one minute per reading (TimeLimit reads it once per step)."""

    before = 0.0

    def __init__(self):
        self.readings = 0

    def total(self):
        self.readings += 1
        return 60.0 * self.readings


def test_the_time_limit_stops_within_a_step_and_the_checkpoint_keeps_the_step(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    clock = _StepClock()
    limit = training_callbacks.TimeLimit(3.5, clock)  # over budget at the 4th step of a 10-step epoch
    checkpoint = checkpoints.StageCheckpoint(str(tmp_path), monitor="val_loss", mode="min", steps_per_epoch=10,
                                          clock=clock)
    x, y = np.ones((40, 2), np.float32), np.ones((40, 1), np.float32)
    history = model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y), callbacks=[checkpoint, limit],
                        verbose=0)
    assert limit.reached and len(history.history["loss"]) == 1
    state = json.load(open(tmp_path / "checkpoint.json"))
    assert (state["epoch"], state["step"]) == (0, 4)  # mid-epoch: a resume continues at step 4
    assert os.path.exists(tmp_path / "model.keras")  # validated, and the best model kept


def test_an_unmonitored_stage_never_saves_a_nan_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = checkpoints.StageCheckpoint(str(tmp_path), monitor=None)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert os.path.exists(tmp_path / "model.keras")
    os.remove(tmp_path / "model.keras")
    model.layers[0].kernel.assign(np.full((2, 1), np.nan, np.float32))
    checkpoint.on_epoch_end(1, {"loss": 1.0})  # finite logs, broken weights
    assert not os.path.exists(tmp_path / "model.keras")


class _PerfectModel:
    """Quantizes to the images themselves: every reconstruction is exact."""

    num_embeddings = 4
    level_names = ("bottom",)

    def quantize_levels(self, images):
        indices = tf.zeros(tf.shape(images)[:3], tf.int32)
        return None, {"quantized": images, "indices": indices}

    def decode_quantized(self, top, bottom):
        return bottom


def test_perfect_reconstructions_count_in_the_psnr():
    images = np.zeros((4, 32, 32, 1), np.float32)
    images[:, 8:24, 8:24] = 0.5
    result = metrics.evaluate_reconstruction(_PerfectModel(), tf.data.Dataset.from_tensor_slices(images).batch(3),
                                             progress=False)
    assert result["perfect_slices"] == 4 and result["images"] == 4
    assert result["psnr_mean"] == pytest.approx(metrics.PERFECT_PSNR_DB, abs=1e-3)
    assert result["psnr_brain_mean"] == pytest.approx(metrics.PERFECT_PSNR_DB, abs=1e-3)
    assert metrics.PERFECT_PSNR_DB == pytest.approx(58.92, abs=0.01)


def test_prior_metrics_weigh_every_code_map_equally():
    prior = UnconditionalPrior(8, 4, 4, hidden_channels=8, num_layers=2, kernel_size=3, num_attention_blocks=0, dropout=0.0)
    prior.build()
    prior.compile()
    codes = np.random.default_rng(0).integers(0, 8, (5, 4, 4)).astype(np.int32)
    logits = prior(codes, training=False).numpy().astype(np.float64)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probabilities, codes[..., None], -1)[..., 0] / np.log(2.0)
    result = prior.evaluate(tf.data.Dataset.from_tensor_slices(codes).batch(4), verbose=0, return_dict=True)
    assert result["bits_per_code"] == pytest.approx(nll.mean(), rel=1e-4)  # batches of 4 and 1


def test_the_seed_reaches_dropout_and_the_bottom_prior_refuses_attention():
    cfg = config_lib.PriorConfig(hidden_channels=8, num_layers=2, kernel_size=3, num_attention_blocks=0, dropout=0.2)
    seeds = [[block.drop.seed for block in build_prior("top", cfg, 8, 4, 8, seed=s).blocks] for s in (1, 2)]
    assert seeds[0] != seeds[1] and len(set(seeds[0])) == 2
    with pytest.raises(ValueError, match="bottom prior has no attention blocks.*num_attention_blocks is 1"):
        build_prior("bottom", config_lib.PriorConfig(num_attention_blocks=1), 8, 4, 8)
    assert config_lib.Config().bottom_prior.num_attention_blocks == 0


def test_top_and_bottom_sampling_noise_never_share_a_stream(tiny_prior_run, monkeypatch):
    from oasis_gen.rundir import open_run
    from oasis_gen.sampling.generate import load_models

    models = load_models(open_run(tiny_prior_run, None, {}, create=False))
    seen = []
    original = samplers.gumbel_noise

    def recording(batch_size, positions, num_embeddings, seed, chunk):
        seen.append(seed)
        return original(batch_size, positions, num_embeddings, seed, chunk)

    monkeypatch.setattr(samplers, "gumbel_noise", recording)
    streams = {}
    for seed in (0, 1):
        seen.clear()
        generation.generate_from(models, 1, seed=seed, batch_size=1, progress=False)
        streams[seed] = tuple(seen)  # (top, bottom)
    assert len(set(streams[0] + streams[1])) == 4  # top at seed 1 is not bottom at seed 0


def test_the_pipeline_sampling_settings_are_config_fields(tiny_prior_run, tmp_path):
    run_dir = str(tmp_path / "copy")
    shutil.copytree(tiny_prior_run, run_dir)
    assert train.main(["samples", "--run_dir", run_dir, "--num_samples", "3", "--temperature", "0.9,1.0",
                       "--seed", "5"]) == 0
    written = [n for n in os.listdir(os.path.join(run_dir, "samples")) if n.startswith("sample_")]
    assert len([n for n in written if n.endswith(".png")]) == 3
    stored = json.load(open(os.path.join(run_dir, "config.json")))["sampling"]
    assert stored["num_samples"] == 3 and stored["temperature"] == "0.9,1.0" and stored["seed"] == 5
    assert train.main(["samples", "--run_dir", run_dir, "--temperature", "a,b,c", "--force"]) == 2


MIRRORED_DROPOUT = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from oasis_gen.models.pixelcnn import StepDropout
    from oasis_gen.models.priors import UnconditionalPrior

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = StepDropout(0.5, seed=3)
        layer.build((4, 64))
    ones = tf.ones((4, 64))
    masks = strategy.run(tf.function(lambda: layer(ones, training=True)))
    first, second = (m.numpy() for m in strategy.experimental_local_results(masks))
    assert not np.array_equal(first, second), "both replicas drew the same dropout mask"
    with strategy.scope():
        prior = UnconditionalPrior(8, 4, 4, hidden_channels=8, num_layers=2, kernel_size=3, num_attention_blocks=0, dropout=0.3)
        prior.build()
        prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    codes = np.random.default_rng(0).integers(0, 8, (8, 4, 4)).astype(np.int32)
    history = prior.fit(tf.data.Dataset.from_tensor_slices(codes).batch(8).repeat(), steps_per_epoch=3, epochs=2,
                        verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    print("DROPOUT_OK")
""")


def test_dropout_draws_a_mask_of_its_own_on_every_replica():
    result = subprocess.run([sys.executable, "-c", MIRRORED_DROPOUT], capture_output=True, text=True, timeout=600)
    assert "DROPOUT_OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
