"""Evaluation layer: how good a run's reconstructions, priors and samples are.

- ``metrics``: SSIM, MS-SSIM, PSNR (whole slice and head only), bits per code, AUC, distances.
- ``realism``: the classifier two-sample test with subject-grouped folds.
- ``feature_net``: the slice-position network whose features the sample metrics use.
- ``samples``: scoring generated slices (a run's or any folder's) against held-out real ones.
- ``report``: the sample report in Markdown.
- ``runs``: a run's reconstructions, the layout its top codes carry, and prior NLL on any folder.
- ``compare``: several runs side by side.
- ``figures``: the README's figures of a run.
"""
