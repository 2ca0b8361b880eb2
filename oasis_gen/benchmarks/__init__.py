"""Speed and memory benchmarks (``python -m oasis_gen.cli.bench``).

- ``speed``: data pipeline, VQ-VAE-2 and prior training, cached against naive sampling.
- ``torch_reference``: the PyTorch VQ-VAE-2 reference timed in a child process beside ours.
"""
