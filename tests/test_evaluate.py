import json
import os

import numpy as np
import pytest
from conftest import TINY_VQVAE_FLAGS

from oasis_gen.cli import bench as bench_cli
from oasis_gen.cli import evaluate as evaluate_cli
from oasis_gen.cli import train as train_cli
from oasis_gen.evaluation.runs import layout_probe


def test_reconstruction_json_on_any_folder(tiny_run, tiny_phantom, capsys):
    assert evaluate_cli.main(["reconstruction", "--run_dir", tiny_run, "--data", tiny_phantom, "--split", "validate",
                          "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["images"] == 4 and results["split"] == "validate"
    for key in ("ssim_mean", "ssim_std", "ssim_min", "ms_ssim_mean", "psnr_mean", "mse_mean"):
        assert key in results
    assert 0.0 < results["ssim_mean"] <= 1.0 and results["ssim_min"] <= results["ssim_mean"]
    assert results["brain_slices"] == 4 and -1.0 < results["ssim_brain_min"] <= results["ssim_brain_mean"] <= 1.0
    assert results["psnr_brain_mean"] > 0
    assert set(results["top"]) >= {"perplexity", "usage"} and set(results["bottom"]) >= {"perplexity", "usage"}


def test_reconstruction_errors_name_what_is_missing(tmp_path, tiny_phantom, capsys):
    from oasis_gen import rundir
    from oasis_gen.cli import evaluate as evaluate_cli

    rundir.open_run(str(tmp_path / "empty_run"), "quick", {})
    assert evaluate_cli.main(["reconstruction", "--run_dir", str(tmp_path / "empty_run"), "--data", tiny_phantom]) == 2
    assert "no finished 'vqvae' stage" in capsys.readouterr().err
    assert evaluate_cli.main(["reconstruction", "--run_dir", str(tmp_path / "nope"), "--data", tiny_phantom]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_train_benchmark_json(capsys):
    assert bench_cli.main(["train", "--preset", "quick", "--batch_size", "2", "--steps", "2", "--warmup", "1",
                       "--image_size", "32", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert 0 < small["peak_fraction"] < 1.5 and small["peak_rss_mib"] > 100
    achieved = small["images_per_s"] * small["gflop_per_image"]
    assert small["peak_fraction"] == pytest.approx(achieved / small["matmul_peak_gflops_float32"], rel=0.1)
    assert bench_cli.main(["train", "--preset", "quick", "--batch_size", "2", "--steps", "2", "--warmup", "1",
                       "--image_size", "64", "--json"]) == 0
    large = json.loads(capsys.readouterr().out)
    # an all-convolutional model costs in proportion to its pixels: 4x the area, 4x the work per image
    assert large["gflop_per_image"] == pytest.approx(4 * small["gflop_per_image"], rel=0.1)


@pytest.mark.slow
def test_benchmarks_under_bfloat16_report_both_peaks(capsys, tmp_path):
    assert bench_cli.main(["train", "--preset", "quick", "--batch_size", "2", "--steps", "2", "--warmup", "1",
                       "--image_size", "32", "--precision", "mixed_bfloat16", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["precision"] == "mixed_bfloat16" and results["images_per_s"] > 0
    assert results["matmul_peak_gflops_bfloat16"] > 0 and results["matmul_peak_gflops_float32"] > 0
    achieved = results["images_per_s"] * results["gflop_per_image"]
    assert results["peak_fraction"] == pytest.approx(achieved / results["matmul_peak_gflops_bfloat16"], rel=0.1)
    assert bench_cli.main(["prior", "--preset", "quick", "--level", "bottom", "--batch_size", "2", "--steps", "2",
                       "--warmup", "1", "--precision", "mixed_bfloat16", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["code_maps_per_s"] > 0 and results["precision"] == "mixed_bfloat16"
    assert results["parameters"] > 1000
    # the PyTorch reference is the user's own download: a folder without it is named
    assert bench_cli.main(["train", "--preset", "quick", "--batch_size", "2", "--steps", "1", "--warmup", "1",
                       "--image_size", "32", "--torch_reference", str(tmp_path)]) == 2
    assert "no vqvae.py in" in capsys.readouterr().err


def test_prior_json_on_any_folder(tiny_prior_run, tiny_phantom, capsys):
    assert evaluate_cli.main(["prior", "--run_dir", tiny_prior_run, "--data", tiny_phantom, "--split", "test",
                          "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for level in ("top", "bottom"):
        assert 0 < results[level]["nll_bits_per_code"] < 10 and results[level]["uniform_bits_per_code"] == 5.0
    stored = json.load(open(f"{tiny_prior_run}/prior_top/metrics.json"))["nll_bits_per_code"]["test"]
    assert results["top"]["nll_bits_per_code"] == pytest.approx(stored, rel=1e-3)  # same codes, same number


def test_sample_benchmark_json_on_a_run(tiny_prior_run, capsys):
    assert bench_cli.main(["sample", "--run_dir", tiny_prior_run, "--batch_size", "2", "--naive_positions", "4",
                       "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["cached_seconds_per_brain"] > 0 and results["naive_seconds_per_brain"] > 0
    assert results["speedup"] > 1
    for level in ("top", "bottom"):  # the benchmark timed the run's own priors
        stored = json.load(open(f"{tiny_prior_run}/prior_{level}/metrics.json"))["parameters"]
        assert results[f"{level}_prior_params"] == stored
    assert results["peak_rss_mib"] > 100


def test_figures_from_a_tiny_run(tiny_prior_run, tiny_phantom, tmp_path):

    from oasis_gen.cli import figures as figures_cli

    assert figures_cli.main(["--run_dir", tiny_prior_run, "--data", tiny_phantom, "--out", str(tmp_path),
                         "--num_samples", "2"]) == 0
    from helpers import assert_drawn_figure

    for name in ("data.png", "reconstructions.png", "code_maps.png", "vqvae_curves.png", "prior_curves.png",
                 "samples.png"):
        assert_drawn_figure(str(tmp_path / name))


def test_samples_takes_a_temperature_and_top_k_per_level():
    from oasis_gen.cli import evaluate as evaluate_cli

    args = evaluate_cli.parse_args(["samples", "--run_dir", "R", "--data", "D", "--temperature", "0.9,1.0",
                                "--top_k", "0,50"])
    assert args.temperature == (0.9, 1.0) and args.top_k == (0, 50)
    args = evaluate_cli.parse_args(["samples", "--run_dir", "R", "--data", "D"])
    assert args.temperature == 1.0 and args.top_k == 0
    for bad in (["--run_dir", "R", "--temperature", "1,2,3"], ["--samples", "F", "--temperature", "0.8"]):
        with pytest.raises(SystemExit):
            evaluate_cli.parse_args(["samples", "--data", "D"] + bad)


def test_layout_probe_scores_the_top_codes_and_refuses_a_single_level_run(tiny_run, tiny_phantom, tmp_path, capsys):
    args = ["--run_dir", tiny_run, "--data", tiny_phantom, "--split", "validate"]
    assert evaluate_cli.main(["layout", *args, "--epochs", "30", "--batch_size", "8", "--out", str(tmp_path),
                              "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["top_grid"] == 8 and results["probe_side"] == 16 and results["slices"] == 4
    assert evaluate_cli.main(["reconstruction", *args, "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]  # the same held-out top codes, counted by another command
    assert results["top_codes_used"] == top["codes_used"]
    assert results["top_perplexity"] == pytest.approx(top["perplexity"], rel=1e-5)
    assert 0.0 < results["layout_ssim"] <= 1.0
    assert os.path.getsize(results["figure"]) > 5000
    single = str(tmp_path / "single")
    assert train_cli.main(["vqvae", "--data", tiny_phantom, "--run_dir", single, "--levels", "1", "--steps_per_epoch", "1"]
                      + TINY_VQVAE_FLAGS) == 0
    capsys.readouterr()
    assert evaluate_cli.main(["layout", "--run_dir", single, "--data", tiny_phantom]) == 2
    assert "single level: there are no top codes to probe" in capsys.readouterr().err


def test_the_layout_probe_reads_layout_from_codes_that_hold_it_and_not_from_noise():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:32, :32] / 32
    centres = rng.uniform(0.3, 0.7, (96, 2))
    targets = np.stack([((x - cx) ** 2 + (y - cy) ** 2 < 0.06) * 0.8 for cx, cy in centres])[..., None]
    informative = np.repeat(targets[..., 0].reshape(96, 8, 4, 8, 4).mean(axis=(2, 4))[..., None], 4, axis=-1)
    errors = {}
    for name, vectors in (("informative", informative), ("noise", rng.normal(size=informative.shape))):
        probe = layout_probe(vectors.shape[1:], 32, seed=0)
        probe.compile(optimizer="adam", loss="mse")
        probe.fit(vectors[:64], targets[:64], batch_size=16, epochs=40, verbose=0)
        errors[name] = float(np.mean((probe.predict(vectors[64:], verbose=0) - targets[64:]) ** 2))
    assert probe.output_shape == (None, 32, 32, 1)
    assert errors["informative"] < 0.3 * errors["noise"], errors
