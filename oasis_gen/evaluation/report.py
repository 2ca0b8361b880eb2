"""The sample evaluation's Markdown report and its number formatting."""

from __future__ import annotations

import os

FLOOR_DRAWS = 5  # draws of training-subject slices averaged into the feature-space floors


SWEEP_METRICS = (("c2st_auc", "C2ST AUC (0.5 = indistinguishable)"),
                 ("fd_brain", "Fréchet distance, brain features"),
                 ("diversity_ms_ssim_samples", "pairwise MS-SSIM (lower = more diverse)"),
                 ("novelty_ssim_nearest_mean", "SSIM to nearest training slice"),
                 ("histogram_wasserstein_foreground", "tissue intensity W1"))


def format_interval(results: dict, key: str) -> str:
    if results.get(key) is None:
        return "n/a"
    return f"{results[key]:.3f} [{results[key + '_low']:.3f}, {results[key + '_high']:.3f}]"


def format_optional(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results: dict, sweep: list[dict], figures: list[str]) -> str:
    """The Markdown report of ``evaluate_samples``' or ``evaluate_folder``'s results."""
    synthetic = " The data is the SYNTHETIC phantom." if results["synthetic_data"] else ""
    fid = "not computed (pass `--inception_weights PATH`)" if results["fid"] is None else f"{results['fid']:.2f}"
    rows = [
        ("C2ST AUC, samples vs held-out real [95% CI]", format_interval(results, "c2st_auc"),
         f"floor {format_interval(results, 'c2st_auc_floor')} (training subjects vs held-out); reconstructions "
         f"{format_interval(results, 'c2st_auc_reconstructions')}"),
        ("Fréchet distance, brain features", f"{results['fd_brain']:.3f}",
         f"{results['fd_brain_floor']:.3f} ± {results['fd_brain_floor_std']:.3f} (floor, {FLOOR_DRAWS} draws)"),
        *[(f"{name}, brain features (k = {results['prdc_k']})", format_optional(results[name]),
           f"{format_optional(results[name + '_floor'])} (floor)") for name in ("precision", "recall", "density", "coverage")],
        ("position confidence", f"{results['position_confidence']:.3f}",
         f"{results['position_confidence_real']:.3f} (real held-out)"),
        ("placed in the requested band (+-1)", format_optional(results["position_accuracy"]),
         f"{format_optional(results['position_accuracy_real'])} (real held-out)"),
        ("diversity: mean pairwise MS-SSIM", f"{results['diversity_ms_ssim_samples']:.3f}",
         f"{results['diversity_ms_ssim_real']:.3f} (real, {results['diversity_ms_ssim_real_subjects']} held-out "
         f"subjects); {results['diversity_ms_ssim_real_train']:.3f} (real, "
         f"{results['diversity_ms_ssim_real_train_subjects']} training subjects)"),
        ("novelty: mean SSIM to nearest training slice", f"{results['novelty_ssim_nearest_mean']:.3f}",
         f"{results['novelty_ssim_nearest_real_mean']:.3f} (real held-out)"),
        (f"copies (nearest SSIM >= {results['copy_threshold']})", str(results["copies"]), "0"),
        ("intensity W1, all pixels", f"{results['histogram_wasserstein']:.4f}", "0"),
        ("intensity W1, tissue only", f"{results['histogram_wasserstein_foreground']:.4f}", "0"),
        ("head area (fraction of slice)",
         f"{results['brain_area_samples_mean']:.3f} ± {results['brain_area_samples_std']:.3f}",
         f"{results['brain_area_real_mean']:.3f} ± {results['brain_area_real_std']:.3f} (real)"),
        ("head area W1", f"{results['brain_area_wasserstein']:.4f}", "0"),
        ("FID (InceptionV3)", fid, "0"),
    ]
    source = (f"the run `{results['run_dir']}` ({results['prior']} prior, temperature {results['temperature']}, "
              f"top-k {results.get('top_k', 0)}, guidance {results.get('guidance', 0)}, seed {results['seed']})" if results["run_dir"] else f"the folder `{results['samples_dir']}`")
    lines = [f"# Sample evaluation: {results['run_dir'] or results['samples_dir']}", "",
             f"{results['num_samples']} samples from {source} against {results['real_slices']} real slices of "
             f"{results['heldout_subjects']} subjects of the {results['split']} split of `{results['data_dir']}`."
             f"{synthetic} Samples were rounded to the 8-bit grid (as a saved PNG) before every metric. The C2ST "
             f"used {results['c2st_slices_per_side']} slices per side in {results['c2st_folds']} folds grouped by "
             "subject.", "",
             "| metric | samples | floor / real |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    lines += ["", f"## By position band ({results['position_source']} positions for samples)", "",
              "| slices | samples | real | C2ST AUC | FD brain | position confidence (real) |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['slices']} | {row['samples']} | {row['real']} | {format_optional(row['c2st_auc'])} | "
              f"{format_optional(row['fd_brain'])} | {format_optional(row['position_confidence'])} "
              f"({format_optional(row['position_confidence_real'])}) |" for row in results["per_band"]]
    if sweep:
        lines += ["", "## Temperature sweep", "", "| temperature | " + " | ".join(k for k, _ in SWEEP_METRICS) + " |",
                  "|---" * (len(SWEEP_METRICS) + 1) + "|"]
        lines += [f"| {entry['temperature']} | " + " | ".join(f"{entry[k]:.4f}" for k, _ in SWEEP_METRICS) + " |"
                  for entry in sweep]
    lines += [""] + [f"![{os.path.splitext(os.path.basename(path))[0]}]({path})" for path in figures] + [""]
    return "\n".join(lines)
