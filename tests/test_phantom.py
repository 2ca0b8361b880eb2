import os

import numpy as np

from oasis_gen.data import phantom


def test_render_is_deterministic_and_has_every_tissue():
    rng = np.random.default_rng(0)
    subject = phantom.make_subject(1, rng)
    image, labels = phantom.render_slice(subject, 16, 32)
    again, _ = phantom.render_slice(subject, 16, 32)
    assert image.dtype == np.uint8 and image.shape == (256, 256)
    assert np.array_equal(image, again)
    assert set(np.unique(labels)) == {phantom.BACKGROUND, phantom.CSF, phantom.GREY, phantom.WHITE}
    background = labels == phantom.BACKGROUND
    assert 0.35 < background.mean() < 0.8
    assert np.percentile(image[background], 95) == 0 and image[background].mean() < 1.0
    means = [image[labels == t].mean() for t in (phantom.CSF, phantom.GREY, phantom.WHITE)]
    assert means[0] < means[1] < means[2]


def test_older_subjects_have_larger_ventricles_and_sections_change_with_slice():
    rng = np.random.default_rng(0)
    young = phantom.make_subject(1, rng).__class__(**{**phantom.make_subject(1, rng).__dict__, "age": 20.0})
    old = young.__class__(**{**young.__dict__, "age": 90.0})
    _, young_labels = phantom.render_slice(young, 16, 32)
    _, old_labels = phantom.render_slice(old, 16, 32)
    centre = (slice(96, 160), slice(96, 160))
    assert (old_labels[centre] == phantom.CSF).sum() > 1.5 * (young_labels[centre] == phantom.CSF).sum()
    _, low = phantom.render_slice(young, 1, 32)
    assert (low > 0).sum() < 0.8 * (young_labels > 0).sum()


def test_written_data_set_is_deterministic_and_marked_synthetic(tmp_path):
    first = phantom.write_phantom(str(tmp_path / "a"), num_subjects=5, slices_per_subject=2, size=32, seed=4)
    phantom.write_phantom(str(tmp_path / "b"), num_subjects=5, slices_per_subject=2, size=32, seed=4)
    assert sum(first.values()) == 10 and min(first.values()) >= 2
    for split in ("train", "validate", "test"):
        folder = f"keras_png_slices_{split}"
        names = sorted(os.listdir(tmp_path / "a" / folder))
        assert names == sorted(os.listdir(tmp_path / "b" / folder))
        for name in names:
            assert (tmp_path / "a" / folder / name).read_bytes() == (tmp_path / "b" / folder / name).read_bytes()
        masks = sorted(os.listdir(tmp_path / "a" / f"keras_png_slices_seg_{split}"))
        assert masks == ["seg" + n[4:] for n in names]
    assert (tmp_path / "a" / "SYNTHETIC_PHANTOM_DATA.txt").exists()
