"""``python train.py [STAGE] ...``: train oasis_gen's models into a run directory.

With no stage, runs the whole pipeline (``--stages`` selects some); each finished stage is
skipped on a re-run unless ``--force``. With no ``--data``, the built-in synthetic phantom
data set is written into the run directory and used (outputs say so).

Stages:
    data    write the phantom data (when no --data) and summarise the data folder
    vqvae   train the hierarchical VQ-VAE-2 (stage 1) and evaluate it on the test split
    codes   encode every split with the trained VQ-VAE-2 into codes/{train,validate,test}.npz
    prior   train a PixelCNN prior (stage 2): --level top | bottom; or, for a single-level run
            (vqvae --levels 1), the DCGAN baseline prior: --kind dcgan (stage prior_dcgan)
    samples generate 16 slices into samples/ (see generate.py for more control)
    evaluate  score 64 new samples against the test split: evaluate/metrics.json, evaluate/report.md
              (see `python -m oasis_gen.evaluate samples` for more control)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from oasis_gen import config as config_lib
from oasis_gen import pipeline
from oasis_gen.console import quiet_tensorflow

STAGES = ("data", "vqvae", "codes", "prior_top", "prior_bottom", "samples", "evaluate")
OPTIONAL_STAGES = ("prior_dcgan",)  # not in the default pipeline; --stages may name them
_STAGE_SECTIONS = {
    "data": (("data", config_lib.DataConfig),),
    "vqvae": (("data", config_lib.DataConfig), ("vqvae", config_lib.VQVAEConfig),
              ("vqvae_train", config_lib.TrainConfig)),
    "codes": (),
    "samples": (("sampling", config_lib.SamplingConfig),),
    "evaluate": (("sampling", config_lib.SamplingConfig),),
    "prior": (("LEVEL_prior", config_lib.PriorConfig), ("LEVEL_prior_train", config_lib.TrainConfig)),
    "prior_dcgan": (("dcgan", config_lib.DCGANConfig), ("dcgan_train", config_lib.TrainConfig)),
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run_dir", default=None, help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--data", default=None, dest="data_dir_flag",
                        help="OASIS-layout data folder (default: the built-in phantom data)")
    parser.add_argument("--preset", default=None, choices=sorted(config_lib.PRESETS),
                        help="preset for a new run (default: quick)")
    parser.add_argument("--force", action="store_true", help="redo stages that already finished")
    parser.add_argument("--override", action="store_true",
                        help="accept flags that change the configuration stored in the run directory")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Stages:" + __doc__.split("Stages:")[1])
    _add_common(parser)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages of the pipeline to run (default: {','.join(STAGES)})")
    commands = parser.add_subparsers(dest="stage", metavar="STAGE")
    for stage, sections in _STAGE_SECTIONS.items():
        if stage == "prior_dcgan":
            continue  # `prior --kind dcgan`
        sub = commands.add_parser(stage, help=f"run only the '{stage}' stage")
        _add_common(sub)
        if stage == "prior":
            sub.add_argument("--kind", default="pixelcnn", choices=("pixelcnn", "dcgan"),
                             help="pixelcnn (default) or the DCGAN baseline of a single-level run")
            sub.add_argument("--level", choices=("top", "bottom"), help="which PixelCNN prior to train")
            config_lib.add_flags(sub, config_lib.DCGANConfig)
        for _, section_type in sections:
            if section_type is config_lib.DataConfig:
                continue  # --data and the data fields below are shared
            config_lib.add_flags(sub, section_type)
        config_lib.add_flags(sub, config_lib.DataConfig)
    args = parser.parse_args(argv)
    if args.stage is None:
        unknown = [s for s in args.stages.split(",") if s and s not in STAGES + OPTIONAL_STAGES]
        if unknown:
            parser.error(f"unknown stages {unknown}; expected some of {list(STAGES + OPTIONAL_STAGES)}")
    if args.stage == "prior" and args.kind == "pixelcnn" and args.level is None:
        parser.error("prior: --level top or --level bottom is required for a PixelCNN prior")
    return args


def _overrides(args: argparse.Namespace, stage: str | None) -> dict[str, dict]:
    overrides: dict[str, dict] = {}
    if stage == "prior" and args.kind == "dcgan":
        stage = "prior_dcgan"
    for name, section_type in _STAGE_SECTIONS.get(stage, ()):
        name = name.replace("LEVEL", getattr(args, "level", "") or "")
        overrides[name] = config_lib.given_flags(args, section_type)
    if args.data_dir_flag is not None:
        overrides.setdefault("data", {})["data_dir"] = os.path.abspath(args.data_dir_flag)
    return overrides


def _stage_functions():
    from oasis_gen import stages

    return {"data": stages.stage_data, "vqvae": stages.stage_vqvae, "codes": stages.stage_codes,
            "prior_top": stages.stage_prior_top, "prior_bottom": stages.stage_prior_bottom,
            "samples": stages.stage_samples, "evaluate": stages.stage_evaluate,
            "prior_dcgan": stages.stage_prior_dcgan}


def run_stages(run: pipeline.Run, stages: Sequence[str], force: bool) -> dict:
    timer = pipeline.StageTimer()
    results = {}
    functions = _stage_functions()
    for stage in stages:
        if stage == "prior_top" and run.config.vqvae.levels == 1 and len(stages) > 1:
            print("[prior_top] a single-level VQ-VAE has no top codes; skipping")  # asked for alone, it errs
            continue
        if run.is_complete(stage) and not force:
            reason = run.stale_reason(stage)
            if reason:
                raise pipeline.RunError(f"{reason}; redo it with `python train.py {pipeline.stage_command(stage)} "
                                        f"--run_dir {run.path} --force`")
            print(f"[{stage}] already finished in {run.path}; skipping (use --force to redo)")
            results[stage] = pipeline.read_json(os.path.join(run.path, stage, pipeline.COMPLETE))
            continue
        print(f"[{stage}] starting")
        from oasis_gen import training

        if not training.is_chief():
            if stage not in TRAIN_SECTIONS:
                continue  # the chief's alone
            try:  # a non-chief worker trains in step with the chief and writes nothing into the run
                functions[stage](run, force)
            except training.WorkerFinished as finished:
                print(f"[{stage}] {finished}")
            return results
        run.clear_complete(stage)
        run.invalidate_downstream(stage)
        inputs = run.input_identities(stage)
        summary = timer.run(stage, functions[stage], run, force)
        run.mark_complete(stage, summary, inputs)
        results[stage] = summary
    _print_final(run, results, timer)
    return results


def _print_final(run: pipeline.Run, results: dict, timer: pipeline.StageTimer) -> None:
    print(f"\nrun directory: {run.path}")
    print(f"{'stage':<14}{'seconds':>10}  summary")
    for stage, summary in results.items():
        seconds = timer.seconds.get(stage)
        shown = {k: v for k, v in summary.items() if k != "finished"}
        print(f"{stage:<14}{'skipped' if seconds is None else f'{seconds:.1f}':>10}  {shown}")


TRAIN_SECTIONS = {"vqvae": "vqvae_train", "prior_top": "top_prior_train", "prior_bottom": "bottom_prior_train",
                  "prior_dcgan": "dcgan_train"}


def _start_multiworker(run: pipeline.Run, stages: Sequence[str]) -> None:
    """Creates the multi-worker strategy before TensorFlow's first operation when a stage asks for it.

    Every worker runs the same command; one training stage per command (the chief alone goes on
    to the stages after it, which the other workers would never join)."""
    distributed = [s for s in stages if s in TRAIN_SECTIONS
                   and getattr(run.config, TRAIN_SECTIONS[s]).strategy == "multiworker"]
    if not distributed:
        return
    if run.config.data.data_dir is None:
        raise ValueError("--strategy multiworker needs --data: a folder every worker reads (the phantom data is "
                         "written by one process)")
    if [s for s in stages if s != "data"] != distributed[:1]:
        raise ValueError(f"--strategy multiworker trains one stage per command, run on every worker "
                         f"(e.g. `python train.py vqvae --strategy multiworker`); got stages {list(stages)}")
    from oasis_gen import training

    training.start_multiworker()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir_flag is not None and not os.path.isdir(args.data_dir_flag):
        # before anything is written: a mistyped --data must not leave a run directory behind
        print(f"error: data folder {args.data_dir_flag} does not exist", file=sys.stderr)
        return 2
    quiet_tensorflow(args.verbose)
    from oasis_gen.data import DataError

    try:
        if args.stage == "prior":
            stages = ["prior_dcgan"] if args.kind == "dcgan" else [f"prior_{args.level}"]
        else:
            stages = [args.stage] if args.stage else [s for s in args.stages.split(",") if s]
        run = pipeline.open_run(args.run_dir or pipeline.default_run_dir(), args.preset,
                                _overrides(args, args.stage), override=args.override,
                                unlocked=stages if args.force else ())
        _start_multiworker(run, stages)
        if args.stage and args.stage != "data" and run.config.data.data_dir is None:
            stages = ["data"] + stages if not run.is_complete("data") else stages
        start = time.perf_counter()
        run_stages(run, stages, args.force)
        print(f"total {time.perf_counter() - start:.1f} s")
    except (DataError, pipeline.RunError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
