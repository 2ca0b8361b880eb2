import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_round_trip, assert_saving_round_trip

from oasis_gen.models.priors import BottomPrior, UnconditionalPrior

K = 12


def _top(**kwargs):
    model = UnconditionalPrior(K, 6, 6, hidden_channels=16, num_layers=4, kernel_size=3, dropout=0.0,
                     num_attention_blocks=kwargs.pop("num_attention_blocks", 1), num_heads=2, **kwargs)
    model.build()
    rng = np.random.default_rng(9)
    for attention in model.attention:  # the output projection starts at zero; give it weights to test
        kernel = attention.output_projection.kernel
        kernel.assign(rng.normal(0, 0.3, size=kernel.shape).astype(np.float32))
    return model


def _bottom():
    model = BottomPrior(K, 8, 8, top_num_embeddings=7, hidden_channels=16, num_layers=4, kernel_size=3,
                        dropout=0.0, num_conditioning_layers=1)
    model.build()
    return model


def _changed_positions(logits_a, logits_b):
    return np.abs(np.asarray(logits_a) - np.asarray(logits_b)).max(-1)[0] > 1e-6


@pytest.mark.parametrize("attention", [0, 2])
def test_top_prior_is_causal_and_has_no_blind_spot(attention):
    model = _top(num_attention_blocks=attention)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, size=(1, 6, 6)).astype(np.int32)
    base = model(codes).numpy()
    width = 6
    for i in range(6):
        for j in range(6):
            changed_codes = codes.copy()
            changed_codes[0, i, j] = (changed_codes[0, i, j] + 1) % K
            changed = _changed_positions(model(changed_codes), base)
            order = np.arange(36).reshape(6, 6)
            assert not changed[order <= i * width + j].any(), f"position ({i},{j}) leaks into itself or earlier"
            # the next position and the one below-left (the classic blind spot) must see (i, j)
            if j + 1 < 6:
                assert changed[i, j + 1]
            if i + 1 < 6 and j > 0:
                assert changed[i + 1, j - 1]
            if i + 1 < 6:
                assert changed[i + 1, j]


def test_attention_reaches_beyond_the_convolutional_field():
    model = _top(num_attention_blocks=1)
    codes = np.zeros((1, 6, 6), np.int32)
    base = model(codes).numpy()
    changed_codes = codes.copy()
    changed_codes[0, 0, 0] = 5
    changed = _changed_positions(model(changed_codes), base)
    assert changed[5, 5], "with attention the last position must depend on the first"
    conv_only = _top(num_attention_blocks=0)
    changed = _changed_positions(conv_only(changed_codes), conv_only(codes))
    assert not changed[5, 5]


def test_bottom_prior_is_causal_in_its_own_codes_and_depends_on_the_top():
    model = _bottom()
    rng = np.random.default_rng(1)
    bottom = rng.integers(0, K, size=(1, 8, 8)).astype(np.int32)
    top = rng.integers(0, 7, size=(1, 4, 4)).astype(np.int32)
    base = model((bottom, top)).numpy()
    order = np.arange(64).reshape(8, 8)
    for i, j in [(0, 0), (3, 4), (7, 7), (5, 0)]:
        changed_codes = bottom.copy()
        changed_codes[0, i, j] = (changed_codes[0, i, j] + 1) % K
        changed = _changed_positions(model((changed_codes, top)), base)
        assert not changed[order <= i * 8 + j].any()
        if i * 8 + j < 63:
            assert changed[order > i * 8 + j].any()
    other_top = top.copy()
    other_top[0, 0, 0] = (other_top[0, 0, 0] + 1) % 7
    changed = _changed_positions(model((bottom, other_top)), base)
    assert changed[0, 0], "the first bottom code must depend on the top codes"
    assert model((bottom, top)).shape == (1, 8, 8, K)


def test_config_and_keras_round_trips(tmp_path):
    top = _top()
    assert_config_round_trip(top)
    codes = np.random.default_rng(2).integers(0, K, size=(2, 6, 6)).astype(np.int32)
    assert_saving_round_trip(top, codes, str(tmp_path / "top.keras"), atol=1e-5)
    bottom = _bottom()
    assert_config_round_trip(bottom)
    inputs = (np.random.default_rng(3).integers(0, K, size=(2, 8, 8)).astype(np.int32),
              np.random.default_rng(4).integers(0, 7, size=(2, 4, 4)).astype(np.int32))
    bottom.save(str(tmp_path / "bottom.keras"))
    loaded = keras.models.load_model(str(tmp_path / "bottom.keras"), safe_mode=True)
    assert isinstance(loaded, BottomPrior)
    np.testing.assert_allclose(loaded(inputs).numpy(), bottom(inputs).numpy(), atol=1e-5)


def test_distribution_is_a_categorical_over_codes():
    model = _top()
    codes = np.zeros((2, 6, 6), np.int32)
    distribution = model.distribution(codes)
    log_prob = distribution.log_prob(codes).numpy()
    logits = model(codes).numpy()
    expected = logits[..., 0] - np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(log_prob, expected, atol=1e-4)
    assert distribution.entropy().shape == (2, 6, 6)


def test_small_overfit_on_a_handful_of_code_maps():
    keras.utils.set_random_seed(0)
    model = _top()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    codes = np.random.default_rng(5).integers(0, K, size=(4, 6, 6)).astype(np.int32)
    before = model.evaluate(codes, batch_size=4, verbose=0, return_dict=True)["bits_per_code"]
    model.fit(codes, batch_size=4, epochs=150, verbose=0)
    after = model.evaluate(codes, batch_size=4, verbose=0, return_dict=True)["bits_per_code"]
    assert before > 3.0 and after < 0.5 * before


def test_every_weight_gets_a_gradient():
    model = _bottom()
    rng = np.random.default_rng(5)
    inputs = (tf.constant(rng.integers(0, K, (2, 8, 8)), tf.int32), tf.constant(rng.integers(0, 7, (2, 4, 4)), tf.int32))
    with tf.GradientTape() as tape:
        logits = model(inputs, training=False)  # no dropout: every path open
        loss = tf.reduce_sum(logits * tf.constant(rng.normal(size=logits.shape), logits.dtype))  # a generic direction
    gradients = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, gradients) if g is None]
    assert not missing
    # a gradient that is all zeros would mean a weight that never influences the output
    silent = [w.path for w, g in zip(model.trainable_weights, gradients) if not np.any(tf.convert_to_tensor(g).numpy())]
    assert not silent, silent


def test_codes_and_prior_stages_on_a_tiny_run(tiny_prior_run):
    from oasis_gen.data import codes as codes_lib

    train_codes = codes_lib.load_codes(os.path.join(tiny_prior_run, "codes", "train.npz"), 32)
    assert train_codes["top"].dtype == np.int16 and train_codes["top"].shape == (16, 8, 8)
    assert train_codes["bottom"].shape == (16, 16, 16) and len(train_codes["files"]) == 16
    assert str(train_codes["files"][0]).startswith("case_")
    for level in ("top", "bottom"):
        metrics = json.load(open(os.path.join(tiny_prior_run, f"prior_{level}", "metrics.json")))
        assert set(metrics["nll_bits_per_code"]) == {"train", "validate", "test"}
        assert all(0 < v < 10 for v in metrics["nll_bits_per_code"].values())
        assert metrics["uniform_bits_per_code"] == 5.0 and metrics["parameters"] > 0
        for name in ("model.keras", "history.csv", "plots/curves.png", "COMPLETE"):
            assert os.path.exists(os.path.join(tiny_prior_run, f"prior_{level}", name))


def test_code_files_are_validated(tmp_path):
    from oasis_gen.data import codes as codes_lib

    with pytest.raises(FileNotFoundError, match="missing.npz"):
        codes_lib.load_codes(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "bad.npz", top=np.zeros((2, 4, 4)), bottom=np.zeros((2, 4, 4)), files=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="expected top"):
        codes_lib.load_codes(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "range.npz", top=np.full((1, 2, 2), 40), bottom=np.zeros((1, 4, 4)), files=np.array(["a"]))
    with pytest.raises(ValueError, match="outside"):
        codes_lib.load_codes(str(tmp_path / "range.npz"), 32)


def test_mirrored_training_codes_are_the_codes_of_mirrored_slices(tiny_prior_run, tmp_path):
    import shutil

    from conftest import TINY_PRIOR_FLAGS

    from oasis_gen import rundir
    from oasis_gen.cli import train
    from oasis_gen.data import codes as codes_lib
    from oasis_gen.data import stream
    from oasis_gen.training import stages

    codes = {name: codes_lib.load_codes(os.path.join(tiny_prior_run, "codes", f"{name}.npz"), 32)
             for name in ("train", codes_lib.MIRRORED)}
    assert list(codes["train"]["files"]) == list(codes[codes_lib.MIRRORED]["files"])
    np.testing.assert_array_equal(codes["train"]["position"], codes[codes_lib.MIRRORED]["position"])
    # the first slice, flipped top to bottom by hand and encoded, gives the stored mirrored codes
    run = rundir.open_run(tiny_prior_run, None, {}, create=False)
    dataset, _ = stream.load_split(run.config.data, "train", 4, with_paths=True)
    images, _ = next(iter(dataset))
    top, bottom = stages.load_vqvae(run).encode(tf.constant(images.numpy()[:, ::-1]))
    np.testing.assert_array_equal(top.numpy(), codes[codes_lib.MIRRORED]["top"][:4])
    np.testing.assert_array_equal(bottom.numpy(), codes[codes_lib.MIRRORED]["bottom"][:4])
    assert not np.array_equal(codes["train"]["bottom"][:4], codes[codes_lib.MIRRORED]["bottom"][:4])

    # a prior trained with --mirror takes twice the steps per epoch
    copy = str(tmp_path / "run")
    shutil.copytree(tiny_prior_run, copy)
    assert train.main(["prior", "--level", "top", "--run_dir", copy, "--mirror", "--force", "--override",
                       "--num_attention_blocks", "1"] + TINY_PRIOR_FLAGS) == 0
    state = json.load(open(os.path.join(copy, "prior_top", "checkpoint.json")))
    assert state["steps_per_epoch"] == 2 * len(codes["train"]["files"]) // 4
    os.remove(os.path.join(copy, "codes", f"{codes_lib.MIRRORED}.npz"))
    with pytest.raises(rundir.RunError, match="codes --run_dir"):
        stages._training_codes(rundir.open_run(copy, None, {}, create=False),
                               rundir.open_run(copy, None, {}, create=False).config.top_prior, 32, codes["train"])


def test_a_prior_saved_under_its_earlier_name_still_loads(tmp_path):
    """Runs made before the rename store "oasis_gen>TopPrior" in their .keras files."""
    import zipfile

    top = _top()
    codes = np.random.default_rng(2).integers(0, K, size=(2, 6, 6)).astype(np.int32)
    top.save(str(tmp_path / "new.keras"))
    with zipfile.ZipFile(tmp_path / "new.keras") as source, zipfile.ZipFile(tmp_path / "old.keras", "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                assert config["registered_name"] == "oasis_gen>UnconditionalPrior"
                config["registered_name"] = "oasis_gen>TopPrior"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.models.load_model(str(tmp_path / "old.keras"), safe_mode=True)
    assert isinstance(loaded, UnconditionalPrior)
    np.testing.assert_allclose(loaded(codes).numpy(), top(codes).numpy(), atol=1e-5)
