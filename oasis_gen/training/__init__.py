"""Training layer: the stages that fill a run directory.

- ``loop``: ``fit_stage`` (resume, checkpoints, logs, plots, time limit, NaN stop), strategies,
  the optimizer and its learning-rate schedule.
- ``checkpoints``: full training state, exact resume, the training clock.
- ``callbacks``: NaN stop, codebook watch, time limit, curve plots.
- ``stages``: one function per stage of ``rundir.STAGES`` (data, vqvae, codes, priors, samples, evaluate).
"""
