"""Shared fixtures: small synthetic data made on the fly (the tests never read ../shared)."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in two processes (``-n 2`` in setup.cfg; ``pytest -n 0`` runs it in one): one
    # TensorFlow thread each rather than two threads each on both cores (measured 439 s against 491 s on
    # 2 cores), and GPU memory claimed as needed, so that the two processes can share one GPU. Set before
    # TensorFlow starts; the subprocesses some tests start inherit both.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """An 8-subject, 4-slice, 64x64 phantom data set in the OASIS layout (with masks): 4 training subjects,
    1 validation subject and 3 test subjects (subject-grouped two-sample tests need at least 2)."""
    from oasis_gen.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(str(root), num_subjects=8, slices_per_subject=4, size=64, seed=3, fractions=(0.5, 0.125, 0.375))
    return str(root)


def write_png(path, array):
    """Writes ``array`` (uint8/uint16, HxW or HxWxC) as a PNG, creating folders."""
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path), exist_ok=True)
    iio.imwrite(path, np.asarray(array))
    return str(path)


def make_flat_folder(root, subjects=5, slices=3, size=32, seed=0):
    """A flat folder of case_NNN_slice_S.nii.png files with random content."""
    rng = np.random.default_rng(seed)
    for case in range(1, subjects + 1):
        for index in range(slices):
            write_png(os.path.join(root, f"case_{case:03d}_slice_{index}.nii.png"),
                      rng.integers(0, 256, size=(size, size), dtype=np.uint8))
    return str(root)


@pytest.fixture(scope="session")
def eval_phantom(tmp_path_factory):
    """A 64x64 phantom with enough subjects for the sample metrics: 12 training and 8 test subjects of 8 slices."""
    from oasis_gen.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("eval_phantom")
    write_phantom(str(root), num_subjects=24, slices_per_subject=8, size=64, seed=11, fractions=(0.5, 0.166, 0.334))
    return str(root)


TINY_VQVAE_FLAGS = ["--image_size", "64", "--num_hiddens", "16", "--num_residual_layers", "1",
                    "--num_embeddings", "32", "--embedding_dim", "8", "--batch_size", "4", "--epochs", "2"]


@pytest.fixture(scope="session")
def tiny_run(tiny_phantom, tmp_path_factory):
    """A run directory with a finished (tiny) VQ-VAE stage on the tiny phantom data."""
    from oasis_gen.cli import train

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + TINY_VQVAE_FLAGS) == 0
    return run_dir


TINY_PRIOR_FLAGS = ["--hidden_channels", "8", "--num_layers", "2", "--kernel_size", "3", "--num_heads", "2",
                    "--dropout", "0.0", "--batch_size", "4", "--epochs", "1"]


@pytest.fixture(scope="session")
def tiny_prior_run(tiny_run):
    """``tiny_run`` with its codes extracted and both (tiny) priors trained."""
    from oasis_gen.cli import train

    assert train.main(["codes", "--run_dir", tiny_run]) == 0
    for level, extra in (("top", ["--num_attention_blocks", "1"]), ("bottom", ["--num_conditioning_layers", "1"])):
        assert train.main(["prior", "--level", level, "--run_dir", tiny_run] + TINY_PRIOR_FLAGS + extra) == 0
    return tiny_run


DCGAN_FLAGS = ["--kind", "dcgan", "--noise_dim", "16", "--base_channels", "8", "--batch_size", "4", "--epochs", "2"]


@pytest.fixture(scope="session")
def tiny_single_run(tiny_phantom, tmp_path_factory):
    """A single-level (--levels 1) run on the tiny phantom with its PixelCNN and DCGAN priors trained."""
    from oasis_gen.cli import train

    run_dir = str(tmp_path_factory.mktemp("runs") / "single")
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", run_dir, "--levels", "1"] + TINY_VQVAE_FLAGS) == 0
    assert train.main(["codes", "--run_dir", run_dir]) == 0
    assert train.main(["prior", "--level", "bottom", "--run_dir", run_dir, "--num_attention_blocks", "0"]
                      + TINY_PRIOR_FLAGS) == 0
    assert train.main(["prior", "--run_dir", run_dir] + DCGAN_FLAGS) == 0
    return run_dir
