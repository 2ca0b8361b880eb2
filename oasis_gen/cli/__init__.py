"""Command-line layer: argparse and ``main`` for every command, nothing a notebook or test would need.

``train`` and ``generate`` (also ``python train.py`` / ``generate.py``, ``oasis-train`` /
``oasis-generate``), ``evaluate``, ``data``, ``figures``, ``bench``, ``phantom`` and ``prepare``
(``python -m oasis_gen.cli.<command> --help``). ``console`` keeps TensorFlow's C++ logging quiet.
Each command checks its arguments and paths before importing TensorFlow, so a mistake is one
clear line; that is why the library is imported inside ``main``.
"""
