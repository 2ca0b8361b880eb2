"""Classifier-free guidance on the slice position: position dropout in training, guided sampling."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_round_trip, assert_saving_round_trip

from oasis_gen import config as config_lib
from oasis_gen.cli import evaluate as evaluate_cli
from oasis_gen.cli import generate
from oasis_gen.models.priors import BottomPrior, UnconditionalPrior
from oasis_gen.sampling.samplers import PriorSampler


def _randomise_positions(prior, rng):
    for block in prior.blocks:
        for layer in (block.position_vertical, block.position_horizontal):
            layer.embeddings.assign(rng.normal(0, 1.0, layer.embeddings.shape).astype(np.float32))


@pytest.fixture(scope="module")
def guided_priors():
    rng = np.random.default_rng(3)
    top = UnconditionalPrior(9, 4, 5, hidden_channels=16, num_layers=3, kernel_size=3, dropout=0.0,
                             num_attention_blocks=1, num_heads=2, num_positions=6, position_dropout=0.2)
    top.build()
    bottom = BottomPrior(9, 8, 10, 9, hidden_channels=16, num_layers=2, kernel_size=3, dropout=0.0,
                         num_conditioning_layers=1, num_positions=6, position_dropout=0.2)
    bottom.build()
    for prior in (top, bottom):
        _randomise_positions(prior, rng)
    return top, bottom


def test_position_dropout_adds_a_no_position_row_and_round_trips(guided_priors, tmp_path):
    top, bottom = guided_priors
    assert top.null_position == 6 and top.blocks[0].position_vertical.embeddings.shape[0] == 7
    assert assert_config_round_trip(top).position_dropout == 0.2
    inputs = {"top": tf.zeros((2, 4, 5), tf.int32), "position": tf.constant([1, 6])}  # 6: no position
    assert_saving_round_trip(top, inputs, str(tmp_path / "top.keras"), atol=1e-5)
    inputs = {"bottom": tf.zeros((2, 8, 10), tf.int32), "top": tf.zeros((2, 4, 5), tf.int32),
              "position": tf.constant([1, 6])}
    assert_saving_round_trip(bottom, inputs, str(tmp_path / "bottom.keras"), atol=1e-5)
    plain = UnconditionalPrior(9, 4, 5, hidden_channels=8, num_layers=1, kernel_size=3, num_attention_blocks=0,
                               num_positions=6)
    plain.build()
    # without dropout, no extra row and no random-generator state: files saved before guidance load as they were
    assert plain.null_position is None and plain.blocks[0].position_vertical.embeddings.shape[0] == 6
    assert not any("position_dropout" in variable.path for variable in plain.variables)
    with pytest.raises(ValueError, match="position_dropout"):
        UnconditionalPrior(9, 4, 5, position_dropout=0.1)  # nothing to drop without positions
    with pytest.raises(ValueError, match="position_dropout"):
        UnconditionalPrior(9, 4, 5, num_positions=6, position_dropout=1.0)


def test_training_drops_positions_and_inference_does_not():
    prior = UnconditionalPrior(5, 3, 3, hidden_channels=8, num_layers=2, kernel_size=3, dropout=0.0,
                               num_attention_blocks=0, num_positions=4, position_dropout=0.5, seed=3)
    prior.build()
    _randomise_positions(prior, np.random.default_rng(0))
    codes = tf.constant(np.random.default_rng(1).integers(0, 5, (64, 3, 3)), tf.int32)
    inputs = {"top": codes, "position": tf.fill([64], 2)}
    evaluated = prior(inputs, training=False).numpy()
    np.testing.assert_array_equal(prior(inputs, training=False).numpy(), evaluated)
    unconditional = prior({"top": codes, "position": tf.fill([64], 4)}, training=False).numpy()
    trained = prior(inputs, training=True).numpy()
    as_given = np.all(np.isclose(trained, evaluated, atol=1e-5), axis=(1, 2, 3))
    as_dropped = np.all(np.isclose(trained, unconditional, atol=1e-5), axis=(1, 2, 3))
    assert np.all(as_given | as_dropped)  # every map is either conditioned or "no position", nothing else
    assert 16 <= as_dropped.sum() <= 48  # about half of 64 (binomial: outside this band p < 1e-4)
    # the "no position" row learns: one training step moves it
    prior.compile(optimizer="adam")
    before = prior.blocks[0].position_vertical.embeddings.numpy()[4].copy()
    prior.fit(tf.data.Dataset.from_tensors(inputs), epochs=1, verbose=0)
    assert np.abs(prior.blocks[0].position_vertical.embeddings.numpy()[4] - before).max() > 0


def _numpy_guided_greedy(prior, positions, guidance, condition=None):
    """Greedy (argmax) raster sampling with the guided logits computed outside the samplers, in NumPy."""
    batch = len(positions)
    codes = np.zeros((batch, prior.height, prior.width), np.int32)
    null = np.full(batch, prior.null_position, np.int32)

    def logits(where):
        inputs = {"position": tf.constant(where)}
        if condition is None:
            inputs["top"] = tf.constant(codes)
        else:
            inputs.update(bottom=tf.constant(codes), top=tf.constant(condition))
        return prior(inputs, training=False).numpy().astype(np.float64)

    for row in range(prior.height):
        for column in range(prior.width):
            conditional, unconditional = logits(positions)[:, row, column], logits(null)[:, row, column]
            codes[:, row, column] = np.argmax(conditional + guidance * (conditional - unconditional), axis=-1)
    return codes


def test_guided_sampling_matches_a_numpy_reference_and_both_samplers_agree(guided_priors):
    top, bottom = guided_priors
    where = np.array([0, 3, 5, 1, 2], np.int32)
    greedy_top = PriorSampler(top, "cached", batch_size=5)(5, temperature=0.0, slice_positions=where, guidance=2.0)
    np.testing.assert_array_equal(greedy_top, _numpy_guided_greedy(top, where, 2.0))
    # another weight runs the loop compiled for the first (the weight is an input of it, not a constant)
    np.testing.assert_array_equal(PriorSampler(top, "cached", batch_size=5)(5, temperature=0.0, slice_positions=where,
                                                                            guidance=0.5),
                                  _numpy_guided_greedy(top, where, 0.5))
    assert top._cached_samplers[5]._functions[(0, True, True)].experimental_get_tracing_count() == 1
    greedy_bottom = PriorSampler(bottom, "cached", batch_size=5)(5, greedy_top, temperature=0.0, slice_positions=where,
                                                                 guidance=1.5)
    np.testing.assert_array_equal(greedy_bottom, _numpy_guided_greedy(bottom, where, 1.5, greedy_top))
    # with noise: the cached sampler (XLA, caches, doubled batch) draws what the naive one draws
    for sampler_prior, condition in ((top, None), (bottom, greedy_top)):
        naive = PriorSampler(sampler_prior, "naive", batch_size=2)(5, condition, seed=4, slice_positions=where,
                                                                   guidance=1.5)
        cached = PriorSampler(sampler_prior, "cached", batch_size=2)(5, condition, seed=4, slice_positions=where,
                                                                     guidance=1.5)
        np.testing.assert_array_equal(cached, naive)
        unguided = PriorSampler(sampler_prior, "cached", batch_size=2)(5, condition, seed=4, slice_positions=where)
        assert not np.array_equal(unguided, cached)  # the same noise under guidance gives other codes


def test_guidance_is_refused_where_it_cannot_apply(guided_priors, tiny_prior_run, tmp_path, capsys):
    top, _ = guided_priors
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        PriorSampler(top, "cached", batch_size=2)(2, slice_positions=[0, 1], guidance=-1.0)
    plain = UnconditionalPrior(9, 4, 5, hidden_channels=8, num_layers=1, kernel_size=3, num_attention_blocks=0,
                               num_positions=6)
    plain.build()
    with pytest.raises(ValueError, match="--position_dropout"):
        PriorSampler(plain, "cached", batch_size=2)(2, slice_positions=[0, 1], guidance=1.0)
    # the CLI says so and exits 2 for a run whose priors were trained without position dropout
    code = generate.main(["--run_dir", tiny_prior_run, "--num_samples", "2", "--guidance", "2",
                          "--out", str(tmp_path / "guided")])
    assert code == 2 and "--position_dropout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate.parse_args(["--run_dir", tiny_prior_run, "--guidance", "1,2,3"])


def test_generate_uses_the_runs_own_guidance_unless_told(tiny_prior_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_prior_run, run_dir)
    path = os.path.join(run_dir, "config.json")
    config = json.load(open(path))
    config["sampling"]["guidance"] = "2,0"  # as a preset with guidance would set it
    json.dump(config, open(path, "w"))
    # these priors were trained without position dropout: the run's guidance is applied, so it is refused
    assert generate.main(["--run_dir", run_dir, "--num_samples", "2", "--out", str(tmp_path / "default")]) == 2
    assert "--position_dropout" in capsys.readouterr().err
    assert generate.main(["--run_dir", run_dir, "--num_samples", "2", "--guidance", "0",
                          "--out", str(tmp_path / "plain")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["guidance"] == 0.0


def test_evaluate_samples_defaults_to_the_runs_own_guidance():
    sampling = config_lib.preset("cpu").sampling
    assert sampling.guidance_for("pixelcnn") == (1.0, 0.0) and sampling.guidance_for("dcgan") == 0.0
    assert config_lib.preset("quick").sampling.guidance_for() == 0.0
    args = evaluate_cli.parse_args(["samples", "--run_dir", "R", "--data", "D"])
    assert args.guidance is None  # resolved from the run's config.json by evaluate_samples
    assert evaluate_cli.parse_args(["samples", "--run_dir", "R", "--data", "D", "--guidance", "0.5,0"]).guidance \
        == (0.5, 0.0)
    with pytest.raises(SystemExit):  # a folder of PNGs was sampled already: no guidance applies
        evaluate_cli.parse_args(["samples", "--samples", "F", "--data", "D", "--guidance", "0"])
    with pytest.raises(ValueError, match="sampling.guidance takes one number or TOP,BOTTOM"):
        config_lib.SamplingConfig(guidance="1,2,3").guidance_for()
