"""Evaluate a run on any OASIS-layout folder: ``python -m oasis_gen.cli.evaluate {reconstruction,prior} ...``.

``reconstruction --run_dir R --data DIR --split test [--json]`` encodes and decodes every slice of
the split with the run's best VQ-VAE-2 and prints SSIM (mean, std, min), MS-SSIM, PSNR, MSE, the
same SSIM and PSNR over the head only (the black background flatters whole-slice figures), and
per-level codebook perplexity and usage.

``layout --run_dir R --data DIR --split validate [--out DIR] [--json]`` fits a small head on the
training split to predict each slice (averaged over 4x4 pixels) from the top codes alone, and
prints its SSIM and MSE on the split: how much layout the top map carries (see
``oasis_gen.evaluation.runs.evaluate_layout``).

``prior --run_dir R --data DIR --split test [--json]`` encodes the split with the run's VQ-VAE-2
and prints the mean negative log2-likelihood per code under the top and bottom priors (uniform
is log2 of the codebook size: 9 bits for 512 codes).

``samples --run_dir R --data DIR [--num_samples N] [--temperatures 0.8,1.0,1.2] [--json]``
generates N slices and scores them against the real held-out slices; ``samples --samples FOLDER
--data DIR`` scores a folder of PNG slices from any generator instead. Each figure comes with its
floor: C2ST AUC (subject-grouped folds, bootstrap interval), Fréchet distance and
precision/recall/density/coverage in the features of a position network trained on the training
split, position confidence, diversity, novelty, intensity and head-area distances, per position
band, FID with Inception weights (see ``oasis_gen.evaluation.samples``).

``compare --run_dir R1 --run_dir R2 ... --data DIR [--num_samples N] [--out DIR]`` puts runs'
reconstruction metrics, prior NLL and sample metrics in one table and one figure of samples side
by side (``comparison.md``, ``comparison.json``, ``comparison.png``; see ``oasis_gen.evaluation.compare``).

``--json`` prints one JSON object on stdout instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from oasis_gen import config as config_lib
from oasis_gen import rundir
from oasis_gen.cli.console import plain, program_name, quiet_tensorflow
from oasis_gen.data.slices import SPLITS, DataError
from oasis_gen.evaluation.report import format_interval, format_optional


def _print_reconstruction(results: dict) -> None:
    label = " (SYNTHETIC phantom data)" if results["synthetic_data"] else ""
    print(f"{results['images']} slices of the {results['split']} split of {results['data_dir']}{label}")
    print(f"  SSIM     {results['ssim_mean']:.4f} +- {results['ssim_std']:.4f} (worst {results['ssim_min']:.4f})")
    print(f"  MS-SSIM  {results['ms_ssim_mean']:.4f}")
    print(f"  PSNR     {results['psnr_mean']:.2f} dB +- {results['psnr_std']:.2f}")
    print(f"  MSE      {results['mse_mean']:.6f}")
    if results.get("ssim_brain_mean") is not None:
        print(f"  brain only ({results['brain_slices']} slices with a head): SSIM {results['ssim_brain_mean']:.4f} "
              f"+- {results['ssim_brain_std']:.4f} (worst {results['ssim_brain_min']:.4f}), "
              f"PSNR {results['psnr_brain_mean']:.2f} dB")
    for level in ("top", "bottom"):
        if level not in results:
            continue
        stats = results[level]
        print(f"  {level:<7}  perplexity {stats['perplexity']:.1f}, codes used {stats['codes_used']} "
              f"({stats['usage']:.1%})")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.evaluate"), description=plain(__doc__.splitlines()[0]))
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("reconstruction", "VQ-VAE-2 reconstruction metrics on a folder"),
                            ("prior", "bits per code of a folder under the run's priors")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--run_dir", required=True)
        command.add_argument("--data", required=True, help="OASIS-layout (or flat) data folder")
        command.add_argument("--split", default="test", choices=SPLITS)
        command.add_argument("--batch_size", type=int, default=16)
        command.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        command.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    command = commands.add_parser("layout", help="how much of a slice's layout the run's top codes carry")
    command.add_argument("--run_dir", required=True)
    command.add_argument("--data", required=True, help="OASIS-layout (or flat) data folder")
    command.add_argument("--split", default="validate", choices=("validate", "test"), help="held-out slices scored")
    command.add_argument("--epochs", type=int, default=12, help="training epochs of the probe head")
    command.add_argument("--batch_size", type=int, default=32)
    command.add_argument("--seed", type=int, default=0, help="seed of the probe head")
    command.add_argument("--out", default=None, help="also write layout_probe.png here")
    command.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    command.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    command = commands.add_parser("samples", help="score samples of a run, or any folder of PNG slices, against real "
                                                  "held-out slices")
    command.add_argument("--run_dir", default=None, help="generate samples from this run (and add its reconstruction "
                                                         "floor)")
    command.add_argument("--samples", default=None,
                         help="a folder of PNG slices from any generator to score instead of generating")
    command.add_argument("--data", required=True, help="OASIS-layout (or flat) data folder")
    command.add_argument("--split", default="test", choices=("validate", "test"), help="held-out real slices")
    command.add_argument("--num_samples", type=int, default=128, help="samples to generate and score (with --run_dir)")
    command.add_argument("--temperature", default="1.0",
                         help="sampling temperature; one value, or TOP,BOTTOM for each prior (e.g. 0.9,1.0)")
    command.add_argument("--top_k", default="0",
                         help="sample among the k likeliest codes (0: all); one value, or TOP,BOTTOM")
    command.add_argument("--guidance", default=None,
                         help="classifier-free guidance weight on the slice position (0: none; default: the run's "
                              "sampling.guidance, as its samples stage and generate.py use); one value, or "
                              "TOP,BOTTOM; needs priors trained with --position_dropout")
    command.add_argument("--temperatures", default="",
                         help="comma-separated temperatures for a sweep (e.g. 0.8,0.9,1.0,1.1)")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--batch_size", type=int, default=8, help="sampling batch size")
    command.add_argument("--image_size", type=int, default=256,
                         help="with --samples: the side every slice is brought to (the data module's rules)")
    command.add_argument("--resize_method", default="resize", choices=("resize", "crop", "none"),
                         help="with --samples: how slices of another size are brought to --image_size")
    command.add_argument("--inception_weights", default=None,
                         help="Keras InceptionV3 no-top weights file; enables FID (nothing is downloaded)")
    command.add_argument("--c2st_folds", type=int, default=4, help="cross-fitting folds of the two-sample test "
                                                                   "(grouped by subject)")
    command.add_argument("--c2st_epochs", type=int, default=20, help="training epochs of the two-sample classifier")
    command.add_argument("--feature_epochs", type=int, default=8,
                         help="training epochs of the position network whose features FD and precision/recall use")
    command.add_argument("--copy_threshold", type=float, default=0.95,
                         help="a sample this similar (SSIM) to a training slice counts as a copy")
    command.add_argument("--prior", default="pixelcnn", choices=("pixelcnn", "dcgan"),
                         help="the run's PixelCNN priors or its DCGAN baseline")
    command.add_argument("--out", default=None, help="output folder (default: RUN_DIR/sample_evaluation, RUN_DIR/sample_evaluation_dcgan, "
                                                     "or SAMPLES_evaluation beside the --samples folder)")
    command.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    command.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    command = commands.add_parser("compare", help="several runs side by side: one table, one figure")
    command.add_argument("--run_dir", action="append", required=True, help="a run directory (repeat the flag)")
    command.add_argument("--data", required=True, help="OASIS-layout (or flat) data folder")
    command.add_argument("--num_samples", type=int, default=64, help="samples per model")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--c2st_epochs", type=int, default=20)
    command.add_argument("--out", default="comparison", help="output folder")
    command.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    command.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    args = parser.parse_args(argv)
    if args.command == "samples":
        if (args.run_dir is None) == (args.samples is None):
            parser.error("samples needs exactly one of --run_dir (generate from a run) and --samples (a folder of PNGs)")
        if args.samples is not None and args.temperatures:
            parser.error("--temperatures needs --run_dir: a folder of samples has no temperature")
        if args.samples is not None and (args.temperature != "1.0" or args.top_k != "0" or args.guidance is not None):
            parser.error("--temperature, --top_k and --guidance need --run_dir: a folder of samples was sampled "
                         "already")
        try:
            args.temperatures = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
        except ValueError:
            parser.error(f"--temperatures must be comma-separated numbers, got {args.temperatures!r}")
        try:
            args.temperature = config_lib.one_or_pair(args.temperature, float, "--temperature")
            args.top_k = config_lib.one_or_pair(args.top_k, int, "--top_k")
            if args.guidance is not None:
                args.guidance = config_lib.one_or_pair(args.guidance, float, "--guidance")
        except ValueError as error:
            parser.error(str(error))
    return args


def _print_samples(results: dict) -> None:
    label = " (SYNTHETIC phantom data)" if results["synthetic_data"] else ""
    print(f"{results['num_samples']} samples vs {results['real_slices']} real {results['split']} slices of "
          f"{results['heldout_subjects']} subjects in {results['data_dir']}{label} (samples on the 8-bit grid)")
    print(f"  C2ST AUC            {format_interval(results, 'c2st_auc')}; floor {format_interval(results, 'c2st_auc_floor')}"
          f"; reconstructions {format_interval(results, 'c2st_auc_reconstructions')} (0.5 = indistinguishable)")
    print(f"  FD brain features   {results['fd_brain']:.3f} (floor {results['fd_brain_floor']:.3f})")
    print("  precision/recall    " + ", ".join(f"{k} {format_optional(results[k])} ({format_optional(results[k + '_floor'])})"
                                              for k in ("precision", "recall", "density", "coverage")))
    print(f"  position confidence {results['position_confidence']:.3f} (real {results['position_confidence_real']:.3f})"
          + (f"; placed in the requested band {format_optional(results['position_accuracy'])} (real "
             f"{format_optional(results['position_accuracy_real'])})" if results["position_accuracy"] is not None else ""))
    print(f"  diversity MS-SSIM   {results['diversity_ms_ssim_samples']:.3f} (real {results['diversity_ms_ssim_real']:.3f})")
    print(f"  nearest-train SSIM  {results['novelty_ssim_nearest_mean']:.3f} "
          f"(real held-out {results['novelty_ssim_nearest_real_mean']:.3f}); copies {results['copies']}")
    print(f"  intensity W1        {results['histogram_wasserstein']:.4f} (tissue "
          f"{results['histogram_wasserstein_foreground']:.4f})")
    print(f"  head area           {results['brain_area_samples_mean']:.3f} (real {results['brain_area_real_mean']:.3f})")
    if results["fid"] is not None:
        print(f"  FID                 {results['fid']:.2f}")
    print(f"report: {results['report']}")


def _print_layout(results: dict) -> None:
    label = " (SYNTHETIC phantom data)" if results["synthetic_data"] else ""
    print(f"{results['slices']} slices of the {results['split']} split of {results['data_dir']}{label}, predicted at "
          f"{results['probe_side']}x{results['probe_side']} from the {results['top_grid']}x{results['top_grid']} "
          f"top codes alone ({results['epochs']} probe epochs on the training split)")
    print(f"  layout SSIM {results['layout_ssim']:.4f}, MSE {results['layout_mse']:.6f}")
    print(f"  top codes: perplexity {results['top_perplexity']:.1f}, {results['top_codes_used']} in use")
    if results.get("figure"):
        print(f"wrote {results['figure']}")


def _print_prior(results: dict) -> None:
    label = " (SYNTHETIC phantom data)" if results["synthetic_data"] else ""
    print(f"{results['slices']} slices of the {results['split']} split of {results['data_dir']}{label}")
    for level in ("top", "bottom"):
        if level in results:
            values = results[level]
            print(f"  {level:<7} {values['nll_bits_per_code']:.3f} bits per code "
                  f"(uniform {values['uniform_bits_per_code']:.1f})")


def _print_compare(results: dict) -> None:
    print(open(results["written"]["markdown"], encoding="utf-8").read())
    print("wrote " + ", ".join(results["written"].values()))


def _run(args: argparse.Namespace) -> dict:
    progress = not args.json
    if args.command == "reconstruction":
        from oasis_gen.evaluation.runs import evaluate_reconstruction

        return evaluate_reconstruction(args.run_dir, args.data, args.split, args.batch_size, progress=progress)
    if args.command == "prior":
        from oasis_gen.evaluation.runs import evaluate_prior

        return evaluate_prior(args.run_dir, args.data, args.split, args.batch_size, progress=progress)
    if args.command == "layout":
        from oasis_gen.evaluation.runs import evaluate_layout

        if args.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
        return evaluate_layout(args.run_dir, args.data, args.split, args.batch_size, args.epochs, args.out,
                               args.seed, progress=progress)
    if args.command == "samples":
        from oasis_gen.evaluation import samples as sample_quality

        if args.samples is not None:
            return sample_quality.evaluate_folder(
                args.samples, args.data, out=args.out, split=args.split, image_size=args.image_size,
                resize_method=args.resize_method, inception_weights=args.inception_weights,
                c2st_folds=args.c2st_folds, c2st_epochs=args.c2st_epochs, feature_epochs=args.feature_epochs,
                copy_threshold=args.copy_threshold, seed=args.seed, progress=progress)
        return sample_quality.evaluate_samples(
            args.run_dir, args.data, num_samples=args.num_samples, temperature=args.temperature, seed=args.seed,
            split=args.split, batch_size=args.batch_size, inception_weights=args.inception_weights,
            temperatures=args.temperatures, out=args.out, c2st_epochs=args.c2st_epochs,
            copy_threshold=args.copy_threshold, progress=progress, prior=args.prior, c2st_folds=args.c2st_folds,
            feature_epochs=args.feature_epochs, top_k=args.top_k, guidance=args.guidance)
    from oasis_gen.evaluation.compare import compare_runs

    return compare_runs(args.run_dir, args.data, args.out, args.num_samples, args.seed, args.c2st_epochs,
                        progress=progress)


PRINTERS = {"reconstruction": _print_reconstruction, "layout": _print_layout, "prior": _print_prior,
            "samples": _print_samples, "compare": _print_compare}


def _check_paths(args: argparse.Namespace) -> None:
    for run_dir in args.run_dir if isinstance(args.run_dir, list) else [args.run_dir]:
        if run_dir is not None:
            rundir.open_run(run_dir, None, {}, create=False)
    if getattr(args, "samples", None) is not None and not os.path.isdir(args.samples):
        raise DataError(f"samples folder {args.samples} does not exist")
    if not os.path.isdir(args.data):
        raise DataError(f"data folder {args.data} does not exist")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _check_paths(args)  # named before TensorFlow loads
        quiet_tensorflow(args.verbose)
        results = _run(args)
    except (DataError, rundir.RunError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        PRINTERS[args.command](results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
