import json
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import make_flat_folder, write_png

from oasis_gen.config import DataConfig
from oasis_gen.data import slices, stream


def _batches(dataset):
    return [b.numpy() if not isinstance(b, tuple) else tuple(x.numpy() for x in b) for b in dataset]


def test_phantom_layout_streams_float_images(tiny_phantom):
    dataset, source = stream.load_split(DataConfig(data_dir=tiny_phantom, image_size=64), "train", batch_size=5)
    batches = _batches(dataset)
    assert source.shape == (64, 64, 1) and source.synthetic
    images = np.concatenate(batches)
    assert images.dtype == np.float32 and images.shape == (len(source), 64, 64, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    assert batches[0].shape[0] == 5


def test_resize_and_crop_to_configured_size(tiny_phantom):
    for method in ("resize", "crop"):
        dataset, source = stream.load_split(DataConfig(data_dir=tiny_phantom, image_size=32, resize_method=method),
                                          "test", batch_size=2)
        assert next(iter(dataset)).shape == (2, 32, 32, 1)


def test_evaluation_order_follows_files_and_training_order_is_seeded(tiny_phantom):
    config = DataConfig(data_dir=tiny_phantom, image_size=64)
    dataset, source = stream.load_split(config, "train", batch_size=4, with_paths=True)
    paths = [p.decode() for _, batch in dataset for p in batch.numpy()]
    assert paths == source.paths
    config.deterministic = True
    first = _batches(stream.load_split(config, "train", batch_size=4, training=True, seed=7)[0])
    second = _batches(stream.load_split(config, "train", batch_size=4, training=True, seed=7)[0])
    other = _batches(stream.load_split(config, "train", batch_size=4, training=True, seed=8)[0])
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_masks_are_ignored_unless_asked_and_then_match(tiny_phantom):
    folder = slices.find_slices(tiny_phantom)
    assert set(folder.files) == set(slices.SPLITS) and set(folder.masks) == set(slices.SPLITS)
    dataset, _ = stream.load_split(DataConfig(data_dir=tiny_phantom, image_size=64, include_masks=True),
                                 "validate", batch_size=3)
    images, masks = next(iter(dataset))
    assert masks.dtype.name == "uint8" and set(np.unique(masks.numpy())) <= {0, 85, 170, 255}
    assert np.mean((masks.numpy() == 0) == (images.numpy() < 0.02)) > 0.97


def test_flat_folder_is_split_by_subject(tmp_path):
    root = make_flat_folder(tmp_path / "flat", subjects=10, slices=3)
    folder = slices.find_slices(root, validate_fraction=0.2, test_fraction=0.2, split_seed=1)
    assert folder.layout == "flat"
    subjects = {s: {slices.subject_of(p) for p in folder.split(s)} for s in slices.SPLITS}
    assert len(subjects["validate"]) == 2 and len(subjects["test"]) == 2 and len(subjects["train"]) == 6
    assert not (subjects["train"] & subjects["validate"]) and not (subjects["train"] & subjects["test"])
    assert not (subjects["validate"] & subjects["test"])
    assert sum(len(folder.split(s)) for s in slices.SPLITS) == 30
    again = slices.find_slices(root, validate_fraction=0.2, test_fraction=0.2, split_seed=1)
    assert again.files == folder.files
    other = slices.find_slices(root, validate_fraction=0.2, test_fraction=0.2, split_seed=2)
    assert other.files != folder.files


def test_split_errors_name_the_problem(tmp_path):
    with pytest.raises(slices.DataError, match="subject"):
        slices.split_by_subject([str(tmp_path / "scan7.png")])
    with pytest.raises(slices.DataError, match="too few"):
        slices.split_by_subject([str(tmp_path / "case_001_slice_0.png")])
    with pytest.raises(slices.DataError, match="below 1"):
        slices.split_by_subject([], 0.6, 0.5)


def test_missing_folder_empty_split_and_no_pngs(tmp_path):
    with pytest.raises(slices.DataError, match="does_not_exist"):
        slices.find_slices(str(tmp_path / "does_not_exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(slices.DataError, match="no PNG slices in .*empty"):
        slices.find_slices(str(tmp_path / "empty"))
    layout = tmp_path / "layout"
    write_png(layout / "keras_png_slices_train" / "case_001_slice_0.nii.png", np.zeros((8, 8), np.uint8))
    (layout / "keras_png_slices_validate").mkdir()
    folder = slices.find_slices(str(layout))
    with pytest.raises(slices.DataError, match="empty split.*keras_png_slices_validate"):
        folder.split("validate")
    with pytest.raises(slices.DataError, match="missing split folder.*keras_png_slices_test"):
        folder.split("test")


def _good_png_bytes(size=16):

    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.full((size, size), 100, np.uint8), extension=".png")


def _bomb_png():
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("content,reason", [
    (b"", "zero-byte"),
    (b"this is a text file, not an image", "not a PNG"),
    ("truncated", "truncated"),
    ("corrupt", "corrupt"),
    ("bomb", "decompression bomb"),
])
def test_bad_files_are_named_or_counted(tmp_path, content, reason):
    root = tmp_path / "data"
    train = root / "keras_png_slices_train"
    for index in range(3):
        write_png(train / f"case_001_slice_{index}.nii.png", np.full((16, 16), 50 * index, np.uint8))
    good = _good_png_bytes()
    if content == "truncated":
        content = good[: len(good) // 2]
    elif content == "corrupt":
        content = bytearray(good)
        content[45] ^= 0xFF
        content = bytes(content)
    elif content == "bomb":
        content = _bomb_png()
    bad = train / "case_002_slice_0.nii.png"
    bad.write_bytes(content)
    config = DataConfig(data_dir=str(root), image_size=16)
    with pytest.raises(slices.BadImageError, match=f"case_002_slice_0.nii.png.*{reason}"):
        stream.load_split(config, "train", batch_size=2)
    config.on_bad_file = "skip"
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        dataset, source = stream.load_split(config, "train", batch_size=2)
    assert len(source) == 3 and source.skipped[0]["path"].endswith("case_002_slice_0.nii.png")
    assert sum(b.shape[0] for b in dataset) == 3


def test_symlink_outside_data_folder_is_refused(tmp_path):
    outside = write_png(tmp_path / "secret.png", np.zeros((16, 16), np.uint8))
    train = tmp_path / "data" / "keras_png_slices_train"
    write_png(train / "case_001_slice_0.nii.png", np.zeros((16, 16), np.uint8))
    os.symlink(outside, train / "case_001_slice_1.nii.png")
    with pytest.raises(slices.BadImageError, match="case_001_slice_1.nii.png.*outside the data folder"):
        stream.load_split(DataConfig(data_dir=str(tmp_path / "data"), image_size=16), "train", batch_size=2)


def test_inconsistent_sizes_need_a_resize(tmp_path):
    train = tmp_path / "keras_png_slices_train"
    write_png(train / "case_001_slice_0.nii.png", np.zeros((16, 16), np.uint8))
    write_png(train / "case_001_slice_1.nii.png", np.zeros((20, 16), np.uint8))
    config = DataConfig(data_dir=str(tmp_path), image_size=16, resize_method="none")
    with pytest.raises(slices.DataError, match="case_001_slice_1.nii.png is 20x16"):
        stream.load_split(config, "train", batch_size=2)
    config.resize_method = "resize"
    dataset, _ = stream.load_split(config, "train", batch_size=2)
    assert next(iter(dataset)).shape == (2, 16, 16, 1)


def test_rgb_and_16_bit_pngs_are_converted(tmp_path):
    train = tmp_path / "keras_png_slices_train"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., :] = 200
    write_png(train / "case_001_slice_0.nii.png", rgb)
    write_png(train / "case_001_slice_1.nii.png", np.full((16, 16), 65535, np.uint16))
    write_png(train / "case_001_slice_2.nii.png", np.full((16, 16), 32896, np.uint16))
    dataset, source = stream.load_split(DataConfig(data_dir=str(tmp_path), image_size=16), "train", batch_size=3)
    images = next(iter(dataset)).numpy()
    np.testing.assert_allclose(images[:, 0, 0, 0], [200 / 255, 1.0, 128 / 255], atol=1.5 / 255)


def test_summary_json_reports_each_split(tiny_phantom, capsys, tmp_path):
    from oasis_gen.cli import data as data_cli

    assert data_cli.main([tiny_phantom, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["synthetic"] is True
    total = 0
    for split in slices.SPLITS:
        assert summary[split]["shape"] == [64, 64, 1] and summary[split]["dtype"] == "uint8"
        assert 0.3 < summary[split]["background_fraction"] < 0.9
        total += summary[split]["count"]
    assert total == 32 and summary["train"]["subjects"] == 4 and summary["test"]["subjects"] == 3
    assert summary["skipped"] == []
    assert data_cli.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_data_benchmark_json(tiny_phantom, capsys):
    from oasis_gen.cli import bench as bench_cli

    assert bench_cli.main(["data", "--data", tiny_phantom, "--image_size", "64", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["images"] == 16
    assert results["cached_images_per_s"] > results["cold_images_per_s"] > 0  # the cache saves the PNG decoding


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _adam7_png(image):
    """An interlaced (Adam7) 8-bit greyscale PNG of ``image``, written by hand (filter 0 on every row)."""
    height, width = image.shape
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        reduced = image[y0::dy, x0::dx]
        if reduced.size:
            raw += b"".join(b"\0" + row.tobytes() for row in reduced)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(16, 16), (3, 5), (1, 1), (13, 9)])
def test_interlaced_pngs_are_accepted_and_read_like_any_other(tmp_path, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    train = tmp_path / "keras_png_slices_train"
    train.mkdir()
    (train / "case_001_slice_0.nii.png").write_bytes(_adam7_png(image))
    header = slices.read_png_header(str(train / "case_001_slice_0.nii.png"))
    assert (header.height, header.width, header.channels) == (shape[0], shape[1], 1)
    config = DataConfig(data_dir=str(tmp_path), image_size=shape[0], resize_method="none")
    if shape[0] == shape[1]:
        dataset, _ = stream.load_split(config, "train", batch_size=1)
        np.testing.assert_array_equal(np.round(next(iter(dataset)).numpy()[0, ..., 0] * 255), image)
    if shape[0] > 1:  # the image data of a smaller image under this header is refused
        broken = tmp_path / "broken.png"
        broken.write_bytes(_adam7_png(image)[:33] + _adam7_png(image[:-1])[33:])
        with pytest.raises(slices.BadImageError, match="bytes of image data"):
            slices.read_png_header(str(broken))


def test_decoded_size_counts_channels_and_bit_depth(tmp_path):
    grey = write_png(tmp_path / "grey.png", np.zeros((64, 64), np.uint8))
    rgba16 = tmp_path / "rgba16.png"
    rows = b"".join(b"\0" + bytes(64 * 4 * 2) for _ in range(64))
    rgba16.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 16, 6, 0, 0, 0))
                       + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    assert slices.read_png_header(str(rgba16)).channels == 4
    assert slices.read_png_header(str(grey), max_image_bytes=20000).channels == 1  # 4,096 bytes decoded
    with pytest.raises(slices.BadImageError, match="4 channels x 16 bits, 32,768 bytes decoded"):
        slices.read_png_header(str(rgba16), max_image_bytes=20000)


def test_file_bytes_are_capped_and_the_signature_is_checked_first(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(_good_png_bytes() + b"\0" * 100_000)
    with pytest.raises(slices.BadImageError, match="larger than the 50,000 bytes"):
        slices.read_png_header(str(big), max_file_bytes=50_000)
    read = []

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, size=-1):
            chunk = self.handle.read(size)
            read.append(len(chunk))
            return chunk

    monkeypatch.setattr(slices, "open", lambda path, mode: Counting(open(path, mode)), raising=False)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png" * 200_000)
    with pytest.raises(slices.BadImageError, match="wrong signature"):
        slices.read_png_header(str(junk))
    assert sum(read) == 8  # the signature only, not 1.8 MB
    read.clear()
    with pytest.raises(slices.BadImageError, match="larger than"):
        slices.read_png_header(str(big), max_file_bytes=50_000)
    assert sum(read) == 50_001


def test_masks_get_the_same_file_checks(tiny_phantom, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_phantom, root)
    masks = sorted((root / "keras_png_slices_seg_validate").iterdir())
    masks[0].write_bytes(b"not an image")
    config = DataConfig(data_dir=str(root), image_size=64, include_masks=True)
    with pytest.raises(slices.BadImageError, match=f"{masks[0].name}.*not a PNG"):
        stream.load_split(config, "validate", batch_size=3)
    config.on_bad_file = "skip"
    with pytest.warns(UserWarning, match="skipped 1 of"):
        _, source = stream.load_split(config, "validate", batch_size=3)
    assert len(source.paths) == len(source.mask_paths) == len(masks) - 1
    assert str(masks[0]) not in source.mask_paths


def test_a_subject_in_two_split_folders_is_refused(tmp_path):
    for split, cases in (("train", (1, 2, 3)), ("validate", (3, 4)), ("test", (2, 5))):
        for case in cases:
            write_png(tmp_path / f"keras_png_slices_{split}" / f"case_{case:03d}_slice_0.nii.png",
                      np.zeros((8, 8), np.uint8))
    with pytest.raises(slices.DataError, match=r"2 subjects appear in more than one split folder: "
                                             r"case 002 \(train/test\), case 003 \(train/validate\)"):
        slices.find_slices(str(tmp_path))
