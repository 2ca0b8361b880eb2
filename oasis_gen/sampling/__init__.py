"""Sampling layer: new code maps from the priors, decoded to slices.

- ``samplers``: the cached and naive autoregressive samplers (identical codes), slice positions.
- ``generate``: loading a run's models, batched generation, writing PNGs, codes, grids and GIFs.
"""
