"""OASIS-1 import on small synthetic Analyze volumes laid out like the official download."""

import csv
import os

import imageio.v3 as iio
import numpy as np
import pytest

from oasis_gen.cli import prepare as prepare_cli
from oasis_gen.data import oasis1, slices, stream

SHAPE = (40, 48, 20)  # small stand-ins for the 176x208x176 T88 volumes


def _analyze(path, volume):
    import nibabel

    os.makedirs(os.path.dirname(path), exist_ok=True)
    nibabel.save(nibabel.AnalyzeImage(volume, np.eye(4)), path)


def _session(root, subject, session, seed, with_segmentation=True, disc="disc1"):
    rng = np.random.default_rng(seed)
    name = f"OAS1_{subject:04d}_MR{session}"
    folder = os.path.join(root, disc, name)
    volume = np.zeros(SHAPE, np.int16)
    volume[8:32, 10:38, :] = rng.integers(200, 1200, size=(24, 28, SHAPE[2]))
    volume[5, 7, 12] = 4000  # an outlier the percentile scaling must clip
    volume[20, 30, 12] = 1500  # a marker to check orientation
    _analyze(os.path.join(folder, "PROCESSED", "MPRAGE", "T88_111", f"{name}_mpr_n4_anon_111_t88_masked_gfc.hdr"),
             volume)
    if with_segmentation:
        labels = np.zeros(SHAPE, np.uint8)
        labels[8:32, 10:38, :] = rng.integers(1, 4, size=(24, 28, SHAPE[2]))
        _analyze(os.path.join(folder, "FSL_SEG", f"{name}_mpr_n4_anon_111_t88_masked_gfc_fseg.hdr"), labels)
    return folder


@pytest.fixture()
def download(tmp_path):
    root = str(tmp_path / "oasis1")
    for subject in range(1, 8):
        _session(root, subject, 1, seed=subject, disc="disc1" if subject < 5 else "disc2")
    _session(root, 3, 2, seed=33)  # subject 3 was scanned twice
    broken = _session(root, 7, 1, seed=7, disc="disc2")
    image = os.path.join(broken, "PROCESSED", "MPRAGE", "T88_111", "OAS1_0007_MR1_mpr_n4_anon_111_t88_masked_gfc.img")
    with open(image, "r+b") as handle:
        handle.truncate(100)  # an unreadable (truncated) volume
    demographics = str(tmp_path / "oasis_cross-sectional.csv")
    with open(demographics, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "M/F", "Hand", "Age", "Educ", "SES", "MMSE", "CDR", "eTIV", "nWBV", "ASF", "Delay"])
        for subject in range(1, 8):
            writer.writerow([f"OAS1_{subject:04d}_MR1", "F" if subject % 2 else "M", "R", 20 + subject, "", "", "",
                             "0.5" if subject == 2 else "0", "", "", "", ""])
    return root, demographics


def test_import_writes_split_slices_masks_and_subjects(download, tmp_path):
    root, demographics = download
    out = str(tmp_path / "slices")
    with pytest.warns(UserWarning, match="skipping OAS1_0007_MR1"):
        summary = oasis1.import_oasis1(root, out, slice(8, 16), demographics=demographics,
                                        validate_fraction=0.2, test_fraction=0.2, seed=1, progress=False)
    assert summary["subjects"] == 6 and summary["sessions"] == 7 and len(summary["skipped_unreadable"]) == 1
    folder = slices.find_slices(out)
    assert set(folder.masks) == set(slices.SPLITS)
    subjects = {split: {slices.subject_of(p) for p in folder.files[split]} for split in slices.SPLITS}
    assert not subjects["train"] & subjects["validate"] and not subjects["train"] & subjects["test"]
    assert sum(len(folder.files[s]) for s in slices.SPLITS) == 7 * 8
    second = [p for s in slices.SPLITS for p in folder.files[s] if "_mr2_" in p]
    first = [p for s in slices.SPLITS for p in folder.files[s] if "case_0003_slice" in p]
    assert len(second) == 8 and len(first) == 8
    assert os.path.dirname(second[0]) == os.path.dirname(first[0])  # both sessions in the same split
    image = iio.imread(first[4])  # slice index 4 = z 12, which holds the markers
    assert image.shape == (256, 256) and image.dtype == np.uint8
    top, left = (256 - SHAPE[0]) // 2, (256 - SHAPE[1]) // 2
    assert image[top + 5, left + 7] == 255  # the outlier clips to white
    assert image[0, 0] == 0 and image[top + 20, left + 30] > 0  # rows = axis 0, columns = axis 1, no flips
    mask = iio.imread(folder.mask_for(slices.SPLITS[[first[4] in folder.files[s] for s in slices.SPLITS].index(True)],
                                      first[4]))
    assert set(np.unique(mask)) <= {0, 85, 170, 255} and mask.shape == (256, 256)
    rows = list(csv.DictReader(open(os.path.join(out, "subjects.csv"))))
    assert [r["subject"] for r in rows] == [f"OAS1_{s:04d}" for s in range(1, 7)]
    assert rows[2]["sessions"] == "MR1;MR2" and rows[1]["cdr"] == "0.5" and rows[0]["age"] == "21"
    assert {r["split"] for r in rows} == set(slices.SPLITS)
    assert len(stream.resolve_split(folder, "train", 256)) > 0  # the pipeline reads the result as it is


def test_errors_name_what_is_missing(download, tmp_path, capsys):
    root, _ = download
    assert prepare_cli.main(["oasis1", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_cli.main(["oasis1", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no OASIS-1 session folders" in capsys.readouterr().err
    partial = os.path.join(root, "disc1", "OAS1_0002_MR1", "PROCESSED", "MPRAGE", "T88_111",
                           "OAS1_0002_MR1_mpr_n4_anon_111_t88_masked_gfc.img")
    os.remove(partial)
    assert prepare_cli.main(["oasis1", root, "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "OAS1_0002_MR1" in error and "has no matching" in error and "--allow_incomplete" in error
    out = str(tmp_path / "o")
    with pytest.warns(UserWarning, match="skipping OAS1_0007_MR1"):
        assert prepare_cli.main(["oasis1", root, "--out", out, "--allow_incomplete", "--slices", "0:4"]) == 0
    printed = capsys.readouterr().out
    assert "skipped incomplete: 1" in printed and "skipped unreadable: 1" in printed
    assert prepare_cli.main(["oasis1", root, "--out", out, "--allow_incomplete", "--slices", "0:4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert prepare_cli.main(["oasis1", root, "--out", out, "--allow_incomplete", "--slices", "0:400", "--overwrite"]) == 2
    assert "runs past" in capsys.readouterr().err
    assert os.path.isdir(os.path.join(out, "keras_png_slices_train"))  # a failed overwrite keeps the old import
    assert [n for n in os.listdir(out) if n.startswith(".import")] == []
    assert prepare_cli.main(["oasis1", root, "--out", out, "--slices", "9"]) == 2
    assert "START:STOP" in capsys.readouterr().err


def test_fit_to_square_pads_and_shrinks():
    plane = np.arange(12, dtype=np.float64).reshape(3, 4)
    padded = oasis1.fit_to_square(plane, size=8)
    assert padded.shape == (8, 8) and np.array_equal(padded[2:5, 2:6], plane)
    big = np.ones((300, 150))
    shrunk = oasis1.fit_to_square(big, size=256)
    assert shrunk.shape == (256, 256) and np.count_nonzero(shrunk.any(axis=0)) == 128
    labels = oasis1.fit_to_square(np.full((512, 512), 3, np.uint8), size=256, nearest=True)
    assert set(np.unique(labels)) == {3}
