"""Data layer: slices on disk and the streams and code files made from them (knows nothing of models).

- ``slices``: finding and validating PNG slices (names, subjects, slice positions, splits).
- ``stream``: tf.data pipelines, reading PNG lists into arrays, folder summaries.
- ``codes``: the code files (``codes/*.npz``) of a trained VQ-VAE-2 and their datasets.
- ``phantom``: the built-in synthetic data set.
- ``oasis1``: importing the raw OASIS-1 volumes into the slice layout.
"""
