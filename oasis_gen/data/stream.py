"""tf.data streams of validated slices: decoding, resizing, the epoch-exact shuffled order that makes
resume exact, batching and caching; also reading a list of PNGs into an array and summarising a folder."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from oasis_gen.data.slices import SPLITS, DataError, SliceFolder, find_slices, scan_files, subject_of


@dataclasses.dataclass
class SplitSource:
    """Validated files of one split, ready to stream."""

    split: str
    paths: list[str]
    mask_paths: list[str] | None
    shape: tuple[int, int, int]
    skipped: list[dict]
    synthetic: bool

    def __len__(self) -> int:
        return len(self.paths)


def resolve_split(folder: SliceFolder, split: str, image_size: int | None = 256, resize_method: str = "resize",
                  on_bad_file: str = "error", include_masks: bool = False) -> SplitSource:
    """Validates the files of ``split`` and settles the shape the model will see.

    Raises:
        DataError: for a missing/empty split, a bad file (with ``on_bad_file="error"``), no
            valid file left, or inconsistent sizes when ``resize_method="none"``.
    """
    if resize_method not in ("resize", "crop", "none"):
        raise DataError(f"resize_method must be 'resize', 'crop' or 'none', got {resize_method!r}")
    scan = scan_files(folder.split(split), folder.root, on_bad_file)
    if not scan.paths:
        raise DataError(f"empty split: every file of the {split} split of {folder.root} was skipped")
    sizes = {(h.height, h.width) for h in scan.headers}
    if resize_method == "none":
        first = scan.headers[0]
        for path, header in zip(scan.paths, scan.headers):
            if (header.height, header.width) != (first.height, first.width):
                raise DataError(f"{path} is {header.height}x{header.width} but {scan.paths[0]} is "
                                f"{first.height}x{first.width}; set image_size with resize_method "
                                "'resize' or 'crop' to use slices of several sizes")
            if image_size and (header.height, header.width) != (image_size, image_size):
                raise DataError(f"{path} is {header.height}x{header.width}, expected {image_size}x{image_size} "
                                "(resize_method is 'none')")
        height, width = first.height, first.width
    else:
        if not image_size:
            if len(sizes) > 1:
                raise DataError(f"slices of several sizes {sorted(sizes)} in {folder.root}; set image_size")
            height, width = next(iter(sizes))
        else:
            height = width = int(image_size)
    paths, mask_paths, skipped = scan.paths, None, scan.skipped
    if include_masks:
        # Masks get the same file checks as the slices; with on_bad_file="skip" a bad mask drops its pair.
        wanted = [folder.mask_for(split, p) for p in paths]
        masks = scan_files(wanted, folder.root, on_bad_file)
        good = set(masks.paths)
        paths, mask_paths = zip(*[(p, m) for p, m in zip(paths, wanted) if m in good]) if good else ((), ())
        paths, mask_paths = list(paths), list(mask_paths)
        skipped = skipped + masks.skipped
        if not paths:
            raise DataError(f"empty split: every mask of the {split} split of {folder.root} was skipped")
    return SplitSource(split, paths, mask_paths, (height, width, 1), skipped, folder.synthetic)


def _load_uint8(path, shape: tuple[int, int, int], resize_method: str):
    image = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)
    height, width = shape[0], shape[1]
    if resize_method == "crop":
        image = tf.image.resize_with_crop_or_pad(image, height, width)
    elif resize_method == "resize":
        image = tf.cond(
            tf.reduce_all(tf.shape(image)[:2] == (height, width)),
            lambda: image,
            lambda: tf.cast(tf.round(tf.clip_by_value(
                tf.image.resize(image, (height, width), antialias=True), 0.0, 255.0)), tf.uint8))
    return tf.ensure_shape(image, shape)


def _load_mask(path, shape: tuple[int, int, int], resize_method: str):
    mask = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)
    if resize_method == "crop":
        mask = tf.image.resize_with_crop_or_pad(mask, shape[0], shape[1])
    elif resize_method == "resize":
        mask = tf.image.resize(mask, shape[:2], method="nearest")
    return tf.ensure_shape(tf.cast(mask, tf.uint8), shape)


def shuffled_indices(count: int, seed: int = 0, start: int = 0, repeat: bool = True):
    """Element indices ``0..count-1`` as a stream of passes, each a fresh uniform permutation.

    Pass ``p`` is the permutation drawn with the stateless seed ``(seed, p)``, so the stream is a
    pure function of ``seed``: ``start=k`` yields exactly what an uninterrupted stream yields from
    its ``k``-th element on. That is what lets training resume mid-epoch after a crash with the
    same batches. (Stateless draws, unlike ``Dataset.shuffle``, need no op seed per pass.)

    Args:
        count: elements per pass.
        seed: seed of the permutations.
        start: elements of the stream to skip.
        repeat: an endless stream (else the single pass that holds element ``start``).
    """
    if count < 1:
        raise DataError("cannot shuffle an empty split")
    first_pass, skip = divmod(int(start), count)

    def one_pass(index):
        keys = tf.random.stateless_uniform([count], seed=tf.stack([tf.constant(seed, tf.int64), index]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(keys, stable=True))

    passes = tf.data.Dataset.counter(first_pass) if repeat else tf.data.Dataset.range(first_pass, first_pass + 1)
    return passes.flat_map(one_pass).skip(skip)


def make_dataset(source: SplitSource, batch_size: int, training: bool = False, cache: bool = True,
                 seed: int = 0, deterministic: bool = True, resize_method: str = "resize", repeat: bool = False,
                 drop_remainder: bool = False, with_paths: bool = False, start_step: int = 0):
    """Streams a validated split as batches of float32 images in [0, 1], NHWC.

    Decoded slices are cached in memory as uint8 (a quarter of float32's footprint); the
    float conversion runs per batch after the cache. Only the training split is shuffled: a
    new uniform permutation every pass (``shuffled_indices``), batches running on across pass
    ends. With ``cache`` the training split is decoded once, up front.

    Args:
        source: from ``resolve_split``.
        batch_size: images per batch.
        training: shuffle every pass.
        cache: keep decoded uint8 slices in memory.
        seed: shuffle seed.
        deterministic: fixed element order in the parallel decode (evaluation splits always keep
            file order).
        resize_method: as in ``resolve_split``.
        repeat: repeat forever (for ``steps_per_epoch``).
        drop_remainder: drop a final short batch.
        with_paths: yield ``(images, paths)`` so outputs can be matched to files.
        start_step: (training) start at this batch of the shuffled stream, to resume.

    Returns:
        A ``tf.data.Dataset`` of ``images`` [B, H, W, 1] float32, or ``(images, masks)`` when the
        source has masks (masks uint8 [B, H, W, 1]), or with paths appended when asked.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    columns = [source.paths] + ([source.mask_paths] if source.mask_paths is not None else [])

    def load(*paths):
        loaded = [_load_uint8(paths[0], source.shape, resize_method)]
        if len(paths) > 1:
            loaded.append(_load_mask(paths[1], source.shape, resize_method))
        if with_paths:
            loaded.append(paths[0])
        return tuple(loaded) if len(loaded) > 1 else loaded[0]

    files = tf.data.Dataset.from_tensor_slices(tuple(columns) if len(columns) > 1 else columns[0])
    if training:
        indices = shuffled_indices(len(source), seed, start_step * batch_size, repeat)
        if cache:  # decode once, in file order, then gather whole batches by index
            parts: list[list[np.ndarray]] = []
            for batch in files.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256) \
                    .as_numpy_iterator():
                batch = batch if isinstance(batch, tuple) else (batch,)
                parts = parts or [[] for _ in batch]
                for store, values in zip(parts, batch):
                    store.append(values)
            stored = tuple(tf.constant(np.concatenate(part)) for part in parts)
            dataset = indices.batch(batch_size, drop_remainder=drop_remainder).map(
                lambda i: tuple(tf.gather(t, i) for t in stored) if len(stored) > 1 else tf.gather(stored[0], i),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            table = tuple(tf.constant(c) for c in columns)
            dataset = indices.map(lambda i: load(*(t[i] for t in table)), num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=deterministic).batch(batch_size, drop_remainder=drop_remainder)
    else:
        dataset = files.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if cache:
            dataset = dataset.cache()
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images, *rest):
        images = tf.cast(images, tf.float32) * (1.0 / 255.0)
        return (images, *rest) if rest else images

    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_split(data_config, split: str, batch_size: int, training: bool = False, seed: int = 0,
               repeat: bool = False, drop_remainder: bool = False, with_paths: bool = False,
               folder: SliceFolder | None = None, start_step: int = 0):
    """Finds, validates and streams one split as configured by a ``DataConfig``.

    Returns:
        ``(dataset, source)``: the ``tf.data.Dataset`` and its ``SplitSource``.
    """
    if folder is None:
        folder = find_slices(data_config.data_dir, data_config.validate_fraction, data_config.test_fraction,
                             data_config.split_seed)
    source = resolve_split(folder, split, data_config.image_size, data_config.resize_method,
                           data_config.on_bad_file, data_config.include_masks)
    dataset = make_dataset(source, batch_size, training=training, cache=data_config.cache, seed=seed,
                           deterministic=data_config.deterministic, resize_method=data_config.resize_method,
                           repeat=repeat, drop_remainder=drop_remainder, with_paths=with_paths,
                           start_step=start_step)
    return dataset, source


def summarize(data_dir: str, on_bad_file: str = "skip", background_threshold: int = 5,
              splits: Iterable[str] = SPLITS) -> dict:
    """Per-split summary of a data folder: counts, subjects, shape, range, background fraction.

    Args:
        data_dir: OASIS-layout or flat folder.
        on_bad_file: ``"skip"`` lists bad files under ``"skipped"``; ``"error"`` raises.
        background_threshold: pixel values (0-255) at or below this count as background.

    Returns:
        ``{split: {...}, "skipped": [{"path", "reason"}], "layout": ..., "synthetic": bool}``.
    """
    folder = find_slices(data_dir)
    summary: dict = {"layout": folder.layout, "synthetic": folder.synthetic, "skipped": []}
    for split in splits:
        if split not in folder.files:
            summary[split] = {"count": 0, "missing": True}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan = scan_files(folder.files[split], folder.root, on_bad_file)
        summary["skipped"].extend(scan.skipped)
        if not scan.paths:
            summary[split] = {"count": 0, "subjects": 0}
            continue
        sizes = sorted({(h.height, h.width, 1) for h in scan.headers})
        lowest, highest, background, total = 255, 0, 0, 0
        dataset = tf.data.Dataset.from_tensor_slices(scan.paths).map(
            lambda p: tf.io.decode_png(tf.io.read_file(p), channels=1), num_parallel_calls=tf.data.AUTOTUNE)
        for image in dataset.as_numpy_iterator():
            lowest, highest = min(lowest, int(image.min())), max(highest, int(image.max()))
            background += int((image <= background_threshold).sum())
            total += image.size
        summary[split] = {
            "count": len(scan.paths),
            "subjects": len({subject_of(p) for p in scan.paths}),
            "shape": list(sizes[0]) if len(sizes) == 1 else [list(s) for s in sizes],
            "dtype": "uint16" if any(h.bit_depth == 16 for h in scan.headers) else "uint8",
            "value_range": [lowest, highest],
            "background_fraction": round(background / total, 4),
            "folder": os.path.dirname(scan.paths[0]),
        }
    return summary


def preview_slices(source: SplitSource, count: int = 8) -> tuple[np.ndarray, list[str]]:
    """``count`` slices spread evenly over a split (several subjects and slice levels), and their paths."""
    picks = np.linspace(0, len(source) - 1, num=min(count, len(source))).round().astype(int)
    paths = [source.paths[i] for i in picks]
    subset = SplitSource(source.split, paths, None, source.shape, [], source.synthetic)
    images = np.concatenate([b.numpy() for b in make_dataset(subset, batch_size=count, cache=False)])
    return images, paths


def read_images(paths: Sequence[str], image_size: int, resize_method: str = "resize", root: str | None = None,
                batch_size: int = 64) -> np.ndarray:
    """Validates and decodes PNG files into float32 [N, image_size, image_size, 1] in [0, 1].

    Files of another size are brought to ``image_size`` as the training data would be
    (``resize_method``); RGB and 16-bit files become 8-bit grayscale.

    Raises:
        DataError: a file that is not a valid PNG (named), or no file at all.
    """
    if not paths:
        raise DataError("no images to read")
    root = root or os.path.dirname(os.path.abspath(paths[0]))
    scan = scan_files(list(paths), root, "error")
    source = SplitSource("images", scan.paths, None, (int(image_size), int(image_size), 1), [], False)
    dataset = make_dataset(source, batch_size, cache=False, resize_method=resize_method)
    return np.concatenate([batch.numpy() for batch in dataset])


def format_summary(summary: dict) -> str:
    """``summarize``'s result as a table for people."""
    lines = []
    label = " (SYNTHETIC phantom data)" if summary["synthetic"] else ""
    lines.append(f"layout: {summary['layout']}{label}")
    lines.append(f"{'split':<10}{'images':>8}{'subjects':>10}  {'shape':<16}{'dtype':<8}{'range':<12}{'background':>10}")
    for split in SPLITS:
        info = summary.get(split, {})
        if info.get("missing"):
            lines.append(f"{split:<10}{'missing':>8}")
            continue
        if not info.get("count"):
            lines.append(f"{split:<10}{0:>8}")
            continue
        lines.append(f"{split:<10}{info['count']:>8}{info['subjects']:>10}  {str(tuple(info['shape'])):<16}"
                     f"{info['dtype']:<8}{str(info['value_range']):<12}{info['background_fraction']:>10.3f}")
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} files:")
        for item in summary["skipped"]:
            lines.append(f"  {item['path']}: {item['reason']}")
    return "\n".join(lines)
