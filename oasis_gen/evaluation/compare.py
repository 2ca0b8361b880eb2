"""Side-by-side comparison of runs: ``python -m oasis_gen.cli.evaluate compare --run_dir R1 --run_dir R2 ... --data DIR``.

Every run is evaluated on the same data folder with the same code: reconstruction metrics of its
VQ-VAE on the test split, the NLL of the test codes under its PixelCNN priors (bits per code per
level, and bits per slice summed over levels), and the sample metrics of every prior it has
trained (the PixelCNN priors, and the DCGAN baseline of a single-level run). Writes
``comparison.md``, ``comparison.json`` and ``comparison.png`` (samples side by side) into ``--out``.
"""

from __future__ import annotations

import os

from oasis_gen import plots, rundir
from oasis_gen.evaluation.runs import evaluate_prior, evaluate_reconstruction
from oasis_gen.evaluation.samples import evaluate_samples
from oasis_gen.fileio import atomic_write_json, atomic_write_text

SAMPLE_KEYS = ("c2st_auc", "c2st_auc_low", "c2st_auc_high", "c2st_auc_floor", "c2st_auc_reconstructions",
               "fd_brain", "fd_brain_floor", "precision", "recall", "position_confidence",
               "position_confidence_real", "diversity_ms_ssim_samples", "diversity_ms_ssim_real",
               "novelty_ssim_nearest_mean", "histogram_wasserstein", "histogram_wasserstein_foreground")


def trained_priors(run: rundir.Run) -> list[str]:
    """The prior kinds a run can sample from: ``pixelcnn`` and/or ``dcgan``."""
    levels = ("bottom",) if run.config.vqvae.levels == 1 else ("top", "bottom")
    kinds = ["pixelcnn"] if all(run.is_complete(f"prior_{level}") for level in levels) else []
    return kinds + (["dcgan"] if run.is_complete("prior_dcgan") else [])


def compare_runs(run_dirs: list[str], data_dir: str, out: str, num_samples: int = 64, seed: int = 0,
                 c2st_epochs: int = 20, columns: int = 6, progress: bool = True) -> dict:
    """Evaluates every (run, prior) pair and writes the comparison; returns ``{"rows": [...], ...}``.

    Raises:
        rundir.RunError: a run has no finished VQ-VAE stage.
        ValueError: no run directory given, or two with the same name.
    """
    if not run_dirs:
        raise ValueError("pass at least one --run_dir")
    names = [os.path.basename(os.path.normpath(path)) for path in run_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"run directories need distinct names to label the comparison, got {names}")
    rows, pictures, real = [], [], None
    for name, run_dir in zip(names, run_dirs):
        run = rundir.open_run(run_dir, None, {}, create=False)
        run.require("vqvae", "compare")
        reconstruction = evaluate_reconstruction(run_dir, data_dir, "test", progress=progress)
        base = {"run": name, "run_dir": run.path, "levels": reconstruction["levels"],
                "ssim": reconstruction["ssim_mean"], "ms_ssim": reconstruction["ms_ssim_mean"],
                "psnr": reconstruction["psnr_mean"],
                "codes_used": {level: reconstruction[level]["codes_used"] for level in ("top", "bottom")
                               if level in reconstruction}}
        kinds = trained_priors(run)
        if not kinds:
            rows.append({**base, "prior": None})
            continue
        nll = evaluate_prior(run_dir, data_dir, "test", progress=progress) if "pixelcnn" in kinds else None
        for kind in kinds:
            row = {**base, "prior": kind, "nll_bits_per_code": None, "nll_bits_per_slice": None}
            if kind == "pixelcnn":
                levels = [level for level in ("top", "bottom") if level in nll]
                row["nll_bits_per_code"] = {level: nll[level]["nll_bits_per_code"] for level in levels}
                row["nll_bits_per_slice"] = float(sum(nll[level]["nll_bits_per_code"] * nll[level]["codes"]
                                                      for level in levels) / nll["slices"])
            samples = evaluate_samples(run_dir, data_dir, num_samples=num_samples, seed=seed, c2st_epochs=c2st_epochs,
                                       out=os.path.join(out, f"{name}_{kind}"), progress=progress, prior=kind,
                                       keep_images=True)
            row.update({key: samples[key] for key in SAMPLE_KEYS})
            row["synthetic_data"] = samples["synthetic_data"]
            rows.append(row)
            pictures.append((f"{name}\n{kind}, {row['levels']} level{'s' * (row['levels'] > 1)}",
                             samples["images"][:columns]))
            real = samples["real_images"][:columns] if real is None else real
    os.makedirs(out, exist_ok=True)
    written = {"json": os.path.join(out, "comparison.json"), "markdown": os.path.join(out, "comparison.md")}
    results = {"data_dir": os.path.abspath(data_dir), "num_samples": num_samples, "seed": seed, "rows": rows}
    if pictures:
        figure = plots.image_grid([("real held-out", real[:columns])] + [(label, images[:columns])
                                                                         for label, images in pictures],
                                  "real slices and samples of each run, side by side (seed 0)")
        written["figure"] = plots.save(figure, os.path.join(out, "comparison.png"))
    atomic_write_json(written["json"], results)
    atomic_write_text(written["markdown"], markdown(results, "comparison.png" if pictures else None))
    return {**results, "written": written}


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict, figure: str | None) -> str:
    """The comparison table (and figure link) as Markdown."""
    lines = [f"# Comparison on `{results['data_dir']}` (test split)", "",
             f"Samples per model: {results['num_samples']} (seed {results['seed']}). Reconstruction metrics "
             "are the VQ-VAE's; NLL is the test codes' negative log2-likelihood under the PixelCNN priors "
             "(a DCGAN has none); C2ST AUC 0.5 means samples and real slices are indistinguishable; the floor is "
             "what real slices of other subjects score, the reconstruction floor what the run's decoder allows. "
             "FD is the Fréchet distance in the position network's brain features.", "",
             "| run | levels | prior | SSIM | PSNR dB | NLL bits/slice | C2ST AUC [95% CI] | floor | recon. floor | "
             "FD brain (floor) | pairwise MS-SSIM (real) | SSIM to nearest train | intensity W1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if row.get("prior") is None:
            lines.append(f"| {row['run']} | {row['levels']} | none | {row['ssim']:.4f} | {row['psnr']:.2f} | "
                         "- | - | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {row['run']} | {row['levels']} | {row['prior']} | {row['ssim']:.4f} | {row['psnr']:.2f} | "
            f"{_number(row['nll_bits_per_slice'], 0)} | {row['c2st_auc']:.3f} [{row['c2st_auc_low']:.3f}, "
            f"{row['c2st_auc_high']:.3f}] | {row['c2st_auc_floor']:.3f} | {_number(row['c2st_auc_reconstructions'])} | "
            f"{row['fd_brain']:.3f} ({row['fd_brain_floor']:.3f}) | "
            f"{row['diversity_ms_ssim_samples']:.3f} ({row['diversity_ms_ssim_real']:.3f}) | "
            f"{row['novelty_ssim_nearest_mean']:.3f} | {row['histogram_wasserstein']:.4f} |")
    if any(row.get("synthetic_data") for row in results["rows"]):
        lines += ["", "Some models were trained on SYNTHETIC phantom data."]
    if figure:
        lines += ["", f"![samples side by side]({figure})"]
    return "\n".join(lines) + "\n"
