import json
import os

import numpy as np
import pytest

from oasis_gen.models.priors import BottomPrior, UnconditionalPrior
from oasis_gen.sampling.samplers import PriorSampler


@pytest.fixture(scope="module")
def priors():
    rng = np.random.default_rng(9)
    top = UnconditionalPrior(12, 5, 6, hidden_channels=16, num_layers=4, kernel_size=3, dropout=0.0, num_attention_blocks=2,
                   num_heads=2)
    top.build()
    for attention in top.attention:  # non-zero attention output, so the caches matter
        kernel = attention.output_projection.kernel
        kernel.assign(rng.normal(0, 0.3, size=kernel.shape).astype(np.float32))
    bottom = BottomPrior(12, 6, 8, 7, hidden_channels=16, num_layers=3, kernel_size=5, dropout=0.0,
                         num_conditioning_layers=1)
    bottom.build()
    return top, bottom, rng.integers(0, 7, size=(5, 3, 4)).astype(np.int32)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 4)])
def test_cached_equals_naive_for_both_priors(priors, temperature, top_k):
    top, bottom, condition = priors
    naive = PriorSampler(top, "naive", batch_size=3)(5, temperature=temperature, top_k=top_k, seed=4)
    cached = PriorSampler(top, "cached", batch_size=3)(5, temperature=temperature, top_k=top_k, seed=4)
    np.testing.assert_array_equal(cached, naive)
    naive = PriorSampler(bottom, "naive", batch_size=2)(5, condition, temperature, top_k, seed=5)
    cached = PriorSampler(bottom, "cached", batch_size=2)(5, condition, temperature, top_k, seed=5)
    np.testing.assert_array_equal(cached, naive)
    assert cached.shape == (5, 6, 8) and cached.dtype == np.int32
    assert len(np.unique(cached)) > 3  # really sampled, not a constant map


def test_one_compiled_loop_serves_every_temperature_and_every_sampler_of_a_prior(priors):
    top, bottom, condition = priors
    for temperature in (1.3, 0.6):  # the second temperature, in a new PriorSampler, runs the loop compiled first
        naive = PriorSampler(top, "naive", batch_size=3)(5, temperature=temperature, seed=6)
        np.testing.assert_array_equal(PriorSampler(top, "cached", batch_size=3)(5, temperature=temperature, seed=6),
                                      naive)
        naive = PriorSampler(bottom, "naive", batch_size=2)(5, condition, temperature, seed=7)
        np.testing.assert_array_equal(PriorSampler(bottom, "cached", batch_size=2)(5, condition, temperature, seed=7),
                                      naive)
    for prior, batch in ((top, 3), (bottom, 2)):
        loop = prior._cached_samplers[batch]._functions[(0, False, False)]  # top_k 0, not greedy, no guidance
        assert loop.experimental_get_tracing_count() == 1


def test_seed_determinism_and_top_k(priors):
    top, _, _ = priors
    sampler = PriorSampler(top, "cached", batch_size=2)
    first = sampler(4, seed=1)
    np.testing.assert_array_equal(first, sampler(4, seed=1))
    assert not np.array_equal(first, sampler(4, seed=2))
    restricted = sampler(4, top_k=1, seed=3)
    greedy = sampler(4, temperature=0.0, seed=3)
    np.testing.assert_array_equal(restricted, greedy)  # top-1 sampling is the argmax path


def test_low_temperature_gives_the_argmax_path(priors):
    top, _, _ = priors
    codes = PriorSampler(top, "cached", batch_size=2)(2, temperature=0.0)
    logits = top(codes).numpy()
    np.testing.assert_array_equal(codes, logits.argmax(-1))  # each code is the argmax given its past
    np.testing.assert_array_equal(codes[0], codes[1])
    near_zero = PriorSampler(top, "naive", batch_size=2)(2, temperature=1e-7, seed=8)
    np.testing.assert_array_equal(near_zero, codes)


def test_bad_arguments_are_named(priors):
    top, bottom, condition = priors
    with pytest.raises(ValueError, match="condition=top_codes"):
        PriorSampler(bottom)(2)
    with pytest.raises(ValueError, match="temperature"):
        PriorSampler(top)(2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        PriorSampler(top)(2, top_k=99)
    with pytest.raises(ValueError, match="method"):
        PriorSampler(top, "fast")


def test_generate_cli_on_a_tiny_run(tiny_prior_run, tmp_path, capsys):
    import imageio.v3 as iio

    from oasis_gen.cli import generate

    out = str(tmp_path / "samples")
    assert generate.main(["--run_dir", tiny_prior_run, "--num_samples", "3", "--batch_size", "2", "--seed", "1",
                          "--out", out, "--gif"]) == 0
    summary = json.load(open(os.path.join(out, "generation.json")))
    # positions drawn from the training data, and named: sample_000_slice_S.png
    assert [name.split("_slice_")[0] for name in summary["files"]] == [f"sample_{i:03d}" for i in range(3)]
    assert [int(name.split("_slice_")[1][:-4]) for name in summary["files"]] == summary["slice_positions"]
    images = [iio.imread(os.path.join(out, name)) for name in summary["files"]]
    assert images[0].shape == (64, 64) and images[0].dtype == np.uint8
    for name in ("grid.png", "codes.npz", "sampling.gif"):
        assert os.path.exists(os.path.join(out, name))
    codes = np.load(os.path.join(out, "codes.npz"))
    assert codes["top"].shape == (3, 8, 8) and codes["bottom"].shape == (3, 16, 16)
    assert summary["trained_on_synthetic_data"] is True
    again = str(tmp_path / "again")
    assert generate.main(["--run_dir", tiny_prior_run, "--num_samples", "3", "--batch_size", "2", "--seed", "1",
                          "--out", again]) == 0
    np.testing.assert_array_equal(np.load(os.path.join(again, "codes.npz"))["bottom"], codes["bottom"])
    # a folder holding an earlier batch is refused; by default every call gets a new folder
    capsys.readouterr()
    assert generate.main(["--run_dir", tiny_prior_run, "--num_samples", "2", "--out", again]) == 2
    assert "already holds 3 slices of an earlier batch" in capsys.readouterr().err
    for _ in range(2):
        assert generate.main(["--run_dir", tiny_prior_run, "--num_samples", "2", "--batch_size", "2"]) == 0
    made = sorted(os.listdir(os.path.join(tiny_prior_run, "generated")))
    assert len(made) == 2 and all(len(os.listdir(os.path.join(tiny_prior_run, "generated", m))) >= 2 for m in made)


def test_generate_names_the_missing_stage(tiny_run, tmp_path, capsys):
    from oasis_gen import rundir
    from oasis_gen.cli import generate

    rundir.open_run(str(tmp_path / "fresh"), "quick", {})
    assert generate.main(["--run_dir", str(tmp_path / "fresh")]) == 2
    assert "no finished 'vqvae' stage" in capsys.readouterr().err
