"""Sample-quality metrics against NumPy references, the two-sample test's power, and the samples command."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from oasis_gen import evaluate, metrics, realism


def _phantoms(count, size=64, seed=0):
    from oasis_gen.phantom import make_subject, render_slice

    rng = np.random.default_rng(seed)
    slices = [render_slice(make_subject(i, rng), int(rng.integers(0, 8)), 8, size, rng)[0] for i in range(count)]
    return (np.stack(slices)[..., None] / 255.0).astype(np.float32)


def test_roc_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    assert metrics.roc_auc(labels, scores) == pytest.approx(wins / (len(positives) * len(negatives)))
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    with pytest.raises(ValueError, match="both positive and negative"):
        metrics.roc_auc([1, 1], [0.1, 0.2])


def test_wasserstein_distances_match_sorted_differences():
    rng = np.random.default_rng(1)
    first = (rng.integers(0, 256, 5000) + 0.5) / 256  # on bin centres, so binning is exact
    second = (np.clip(rng.normal(128, 40, 5000), 0, 255).astype(int) + 0.5) / 256
    exact = np.abs(np.sort(first) - np.sort(second)).mean()
    assert metrics.histogram_wasserstein(first, second) == pytest.approx(exact, rel=1e-9)
    assert metrics.wasserstein_1d(first, second) == pytest.approx(exact, rel=1e-9)
    assert metrics.wasserstein_1d(first, first) == 0.0
    tissue = metrics.histogram_wasserstein(first, second, low=0.5)
    exact_tissue = metrics.wasserstein_1d(first[first > 0.5], second[second > 0.5])
    assert tissue == pytest.approx(exact_tissue, rel=1e-6)


def test_frechet_distance_matches_eigenvalue_reference():
    rng = np.random.default_rng(2)
    first = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    second = rng.normal(0.5, 1.0, size=(300, 6)) @ rng.normal(size=(6, 6))
    cov1, cov2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    trace_root = np.sqrt(np.linalg.eigvals(cov1 @ cov2).real.clip(0)).sum()  # tr sqrtm(S1 S2)
    expected = np.square(first.mean(0) - second.mean(0)).sum() + np.trace(cov1 + cov2) - 2 * trace_root
    assert metrics.frechet_distance(first, second) == pytest.approx(expected, rel=1e-6)
    assert metrics.frechet_distance(first, first) == pytest.approx(0.0, abs=1e-6)


def test_pairwise_and_nearest_ssim():
    images = _phantoms(6)
    values = metrics.pairwise_ms_ssim(images)
    assert values.shape == (15,) and np.all(values < 1.0)
    assert metrics.pairwise_ms_ssim(images, max_pairs=4).shape == (4,)
    assert np.allclose(metrics.pairwise_ms_ssim(np.repeat(images[:1], 3, axis=0)), 1.0, atol=1e-5)
    references = _phantoms(20, seed=5)
    samples = np.concatenate([references[7:8], _phantoms(3, seed=9)])
    best, index = metrics.nearest_ssim(samples, references, candidates=4)
    assert best[0] == pytest.approx(1.0, abs=1e-5) and index[0] == 7  # an exact copy is found
    brute = np.array([[metrics.ssim(tf.constant(s[None]), tf.constant(r[None])).numpy()[0] for r in references]
                      for s in samples])
    assert np.all(best <= brute.max(axis=1) + 1e-6) and np.all(best >= np.sort(brute, axis=1)[:, -4] - 1e-6)
    assert np.allclose(metrics.brain_area(np.zeros((2, 8, 8, 1))), 0.0)


def test_two_sample_test_tells_apart_only_different_sets():
    real = _phantoms(48, seed=0)
    same = _phantoms(48, seed=1)
    rng = np.random.default_rng(3)
    noisy = np.clip(same + rng.normal(0, 0.08, same.shape), 0, 1).astype(np.float32)
    different = realism.two_sample_test(real, noisy, folds=3, epochs=15, seed=0)
    alike = realism.two_sample_test(real, same, folds=3, epochs=15, seed=0)
    assert different["auc"] > 0.9, different["auc"]
    assert alike["auc"] < 0.75, alike["auc"]
    assert different["labels"].shape == (96,) and different["per_image"] == 48
    with pytest.raises(ValueError, match="differ in shape"):
        realism.two_sample_test(real, real[:, :32, :32], seed=0)


def test_inception_features_with_a_local_weights_file(tmp_path):
    import keras

    path = str(tmp_path / "inception_notop.weights.h5")
    keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                   input_shape=(299, 299, 3)).save_weights(path)
    features = realism.inception_features(_phantoms(3), path)
    assert features.shape == (3, 2048) and np.all(np.isfinite(features))
    bad = tmp_path / "not_weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not_weights.h5"):
        realism.inception_features(_phantoms(1), str(bad))
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        realism.inception_features(_phantoms(1), str(tmp_path / "missing.h5"))


def test_samples_command_writes_metrics_report_and_sweep(tiny_prior_run, tiny_phantom, tmp_path, capsys):
    out = str(tmp_path / "evaluation")
    assert evaluate.main(["samples", "--run_dir", tiny_prior_run, "--data", tiny_phantom, "--num_samples", "6",
                          "--temperatures", "0.5,1.0", "--c2st_epochs", "2", "--out", out, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for key in ("c2st_auc", "diversity_ms_ssim_samples", "diversity_ms_ssim_real", "novelty_ssim_nearest_mean",
                "histogram_wasserstein"):
        assert np.isfinite(results[key]), key
    assert 0 <= results["c2st_auc"] <= 1 and results["fid"] is None and results["synthetic_data"]
    assert json.load(open(os.path.join(out, "metrics.json")))["c2st_auc"] == results["c2st_auc"]
    sweep = json.load(open(os.path.join(out, "temperature_sweep.json")))
    assert [entry["temperature"] for entry in sweep] == [0.5, 1.0]
    report = open(os.path.join(out, "report.md")).read()
    assert "C2ST AUC" in report and "SYNTHETIC" in report and "Temperature sweep" in report
    for name in ("samples_vs_real.png", "nearest_neighbours.png", "sample_statistics.png", "temperature_sweep.png"):
        assert os.path.getsize(os.path.join(out, "figures", name)) > 1000, name


def test_samples_command_refuses_bad_requests(tiny_prior_run, tiny_phantom, tmp_path, capsys):
    base = ["samples", "--run_dir", tiny_prior_run, "--data", tiny_phantom]
    assert evaluate.main(base + ["--inception_weights", str(tmp_path / "none.h5")]) == 2
    assert "none.h5" in capsys.readouterr().err
    assert evaluate.main(base + ["--num_samples", "2"]) == 2
    assert "num_samples" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(base + ["--temperatures", "hot"])
