"""Slice-position conditioning: code files, priors, both samplers, generate.py --slice_index."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_round_trip, assert_saving_round_trip

from oasis_gen.cli import generate
from oasis_gen.data import codes as codes_lib
from oasis_gen.models.priors import BottomPrior, UnconditionalPrior
from oasis_gen.sampling import generate as generation
from oasis_gen.sampling.generate import generate as generate_codes
from oasis_gen.sampling.samplers import PriorSampler


def _randomise_positions(prior, rng):
    """Non-zero position biases (they start at zero), so the tests see them matter."""
    for block in prior.blocks:
        for layer in (block.position_vertical, block.position_horizontal):
            layer.embeddings.assign(rng.normal(0, 1.0, layer.embeddings.shape).astype(np.float32))


@pytest.fixture(scope="module")
def position_priors():
    rng = np.random.default_rng(2)
    top = UnconditionalPrior(9, 4, 5, hidden_channels=16, num_layers=3, kernel_size=3, dropout=0.0, num_attention_blocks=1,
                   num_heads=2, num_positions=6, position_frequencies=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    top.build()
    bottom = BottomPrior(9, 8, 10, 9, hidden_channels=16, num_layers=2, kernel_size=3, dropout=0.0,
                         num_conditioning_layers=1, num_positions=6)
    bottom.build()
    for prior in (top, bottom):
        _randomise_positions(prior, rng)
    return top, bottom


def test_position_changes_the_prediction_and_keeps_causality(position_priors):
    top, _ = position_priors
    codes = tf.constant(np.random.default_rng(0).integers(0, 9, (2, 4, 5)), tf.int32)
    first = top({"top": codes, "position": tf.constant([0, 0])}).numpy()
    second = top({"top": codes, "position": tf.constant([0, 5])}).numpy()
    np.testing.assert_allclose(first[0], second[0], atol=1e-6)
    assert np.abs(first[1] - second[1]).max() > 1e-3
    # changing the code at (2, 3) changes no prediction at or before it in raster order
    changed = codes.numpy().copy()
    changed[:, 2, 3] = (changed[:, 2, 3] + 1) % 9
    after = top({"top": tf.constant(changed), "position": tf.constant([0, 5])}).numpy()
    order = np.arange(20).reshape(4, 5)
    np.testing.assert_allclose(after[:, order <= 13], second[:, order <= 13], atol=1e-5)
    with pytest.raises(ValueError, match="conditioned on the slice position"):
        top(codes)


def test_position_priors_round_trip(position_priors, tmp_path):
    top, bottom = position_priors
    rebuilt = assert_config_round_trip(top)
    assert rebuilt.num_positions == 6 and rebuilt.position_frequencies[0] == 0.5
    inputs = {"top": tf.zeros((2, 4, 5), tf.int32), "position": tf.constant([1, 4])}
    assert_saving_round_trip(top, inputs, str(tmp_path / "top.keras"), atol=1e-5)
    inputs = {"bottom": tf.zeros((2, 8, 10), tf.int32), "top": tf.zeros((2, 4, 5), tf.int32),
              "position": tf.constant([1, 4])}
    assert_saving_round_trip(bottom, inputs, str(tmp_path / "bottom.keras"), atol=1e-5)


def test_cached_equals_naive_with_positions(position_priors):
    top, bottom = position_priors
    where = np.array([0, 3, 5, 1, 2], np.int32)
    naive = PriorSampler(top, "naive", batch_size=2)(5, seed=3, slice_positions=where)
    cached = PriorSampler(top, "cached", batch_size=2)(5, seed=3, slice_positions=where)
    np.testing.assert_array_equal(cached, naive)
    naive_bottom = PriorSampler(bottom, "naive", batch_size=3)(5, cached, seed=4, slice_positions=where)
    cached_bottom = PriorSampler(bottom, "cached", batch_size=3)(5, cached, seed=4, slice_positions=where)
    np.testing.assert_array_equal(cached_bottom, naive_bottom)
    # the same noise at another position gives other codes: the position is used
    assert not np.array_equal(PriorSampler(top, "cached", batch_size=2)(5, seed=3, slice_positions=5 - where), cached)
    with pytest.raises(ValueError, match="pass 5 positions"):
        PriorSampler(top, "cached", batch_size=2)(5, seed=3)
    with pytest.raises(ValueError, match="0..5"):
        PriorSampler(top, "cached", batch_size=2)(2, seed=3, slice_positions=[0, 6])


def test_bottom_prior_under_a_16x16_style_top_map_samples_alike_both_ways():
    bottom = BottomPrior(7, 8, 8, 7, hidden_channels=8, num_layers=2, kernel_size=3, dropout=0.0,
                         num_conditioning_layers=1, top_factor=4)
    bottom.build()
    top = np.random.default_rng(1).integers(0, 7, (3, 2, 2)).astype(np.int32)
    naive = PriorSampler(bottom, "naive", batch_size=3)(3, top, seed=2)
    np.testing.assert_array_equal(PriorSampler(bottom, "cached", batch_size=3)(3, top, seed=2), naive)
    assert assert_config_round_trip(bottom).top_factor == 4
    with pytest.raises(ValueError, match="4 times the top grid"):
        BottomPrior(7, 6, 6, top_factor=4)


def test_generate_draws_positions_from_the_training_distribution(position_priors):
    from oasis_gen.models.vqvae import VQVAE2

    top, bottom = position_priors
    vqvae = VQVAE2(image_size=32, num_hiddens=8, num_residual_layers=1, num_residual_hiddens=4, num_embeddings=9,
                   embedding_dim=4)
    vqvae.build()
    result = generate_codes(vqvae, top, bottom, 40, seed=1, batch_size=8, progress=False)
    assert result["position"].shape == (40,) and 0.3 < (result["position"] == 0).mean() < 0.75
    again = generate_codes(vqvae, top, bottom, 40, seed=1, batch_size=8, progress=False)
    np.testing.assert_array_equal(again["position"], result["position"])


def test_code_files_carry_positions(tmp_path):
    files = np.array(["case_001_slice_3.nii.png", "case_002_slice_0.nii.png", "case_002_slice_3.nii.png"])
    codes = {"bottom": np.zeros((3, 4, 4), np.int16), "top": np.zeros((3, 2, 2), np.int16), "files": files,
             "position": codes_lib.positions_of(files)}
    codes_lib.save_codes(str(tmp_path / "c.npz"), codes)
    loaded = codes_lib.load_codes(str(tmp_path / "c.npz"), 4)
    assert loaded["position"].tolist() == [3, 0, 3]
    assert codes_lib.position_frequencies(loaded) == pytest.approx([1 / 3, 0, 0, 2 / 3])
    batch = next(iter(codes_lib.code_dataset(loaded, "top", 3, with_position=True)))
    assert set(batch) == {"top", "position"} and batch["position"].numpy().tolist() == [3, 0, 3]
    np.savez(str(tmp_path / "old.npz"), bottom=codes["bottom"], files=np.array(["a.png", "case_1_slice_2.png",
                                                                                "b.png"]))
    old = codes_lib.load_codes(str(tmp_path / "old.npz"))
    assert old["position"].tolist() == [-1, 2, -1]  # files written before positions were stored
    with pytest.raises(ValueError, match="a.png carries no slice position"):
        codes_lib.position_frequencies(old)


def test_generate_cli_makes_a_stack_by_position(tiny_prior_run, tmp_path, capsys):
    out = str(tmp_path / "stack")
    assert generate.main(["--run_dir", tiny_prior_run, "--slice_index", "0:4", "--out", out, "--batch_size", "4"]) == 0
    summary = json.load(open(os.path.join(out, "generation.json")))
    assert summary["slice_positions"] == [0, 1, 2, 3] and summary["num_samples"] == 4
    assert sorted(summary["files"]) == [f"sample_{i:03d}_slice_{i}.png" for i in range(4)]
    assert all(os.path.exists(os.path.join(out, name)) for name in summary["files"])
    stored = codes_lib.load_codes(os.path.join(out, "codes.npz"))
    assert stored["position"].tolist() == [0, 1, 2, 3]
    assert generate.main(["--run_dir", tiny_prior_run, "--slice_index", "2", "--num_samples", "3", "--out",
                          str(tmp_path / "one")]) == 0
    assert json.load(open(tmp_path / "one" / "generation.json"))["slice_positions"] == [2, 2, 2]
    assert generate.main(["--run_dir", tiny_prior_run, "--slice_index", "9", "--num_samples", "1",
                          "--out", str(tmp_path / "bad")]) == 2
    assert "0..3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate.parse_args(["--run_dir", tiny_prior_run, "--slice_index", "top"])


def test_per_level_temperature_and_top_k(tiny_prior_run, tmp_path):
    args = generate.parse_args(["--run_dir", tiny_prior_run, "--temperature", "0.0,1.0", "--top_k", "1,0"])
    assert args.temperature == (0.0, 1.0) and args.top_k == (1, 0)
    first = generation.run_generation(tiny_prior_run, 4, (0.0, 1.0), (1, 0), seed=0, out=str(tmp_path / "a"),
                                    slice_positions=np.zeros(4, np.int32), progress=False)
    second = generation.run_generation(tiny_prior_run, 4, (0.0, 1.0), (1, 0), seed=5, out=str(tmp_path / "b"),
                                     slice_positions=np.zeros(4, np.int32), progress=False)
    top_a = codes_lib.load_codes(os.path.join(first["out"], "codes.npz"))["top"]
    top_b = codes_lib.load_codes(os.path.join(second["out"], "codes.npz"))["top"]
    np.testing.assert_array_equal(top_a, top_b)  # greedy top level: the seed changes nothing there
    with pytest.raises(SystemExit):
        generate.parse_args(["--run_dir", tiny_prior_run, "--temperature", "1,2,3"])
