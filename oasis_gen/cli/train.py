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
              (see `python -m oasis_gen.cli.evaluate samples` for more control)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Sequence

from oasis_gen import config as config_lib
from oasis_gen import rundir
from oasis_gen.cli.console import plain, program_name, quiet_tensorflow
from oasis_gen.progress import format_seconds
from oasis_gen.training.summary import print_summary

COMMANDS = {}  # train.py sub-command -> the stages it runs (``prior`` runs one of three)
for _stage in rundir.STAGES:
    COMMANDS.setdefault(_stage.command.split()[0], []).append(_stage)


PIPELINE_FLAGS = "pipeline:"  # the whole pipeline's config flags, kept apart from a stage's
LEVEL_ONLY = {"num_attention_blocks": "top_prior", "num_conditioning_layers": "bottom_prior"}


def _section_groups(stages) -> list[tuple[type, list[str]]]:
    """(dataclass, the config sections of that type ``stages`` read), in stage order: one flag group
    per dataclass, since sections of one type share their flags (``--level`` picks the section)."""
    groups: dict[type, list[str]] = {}
    for stage in stages:
        for section in stage.sections:
            sections = groups.setdefault(config_lib.section_type(section), [])
            if section not in sections:
                sections.append(section)
    return list(groups.items())


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run_dir", default=None, metavar="FOLDER", help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--data", default=None, dest="data_dir_flag", metavar="FOLDER",
                        help="OASIS-layout data folder (keras_png_slices_train/ ...) or a flat folder of slices "
                             "(default: the built-in SYNTHETIC phantom data)")
    parser.add_argument("--preset", default=None, choices=sorted(config_lib.PRESETS),
                        help="preset of a new run: quick (phantom demo, 128x128, minutes), cpu (real 256x256 "
                             "slices on a CPU), oasis (full size, GPU) (default: quick)")
    parser.add_argument("--force", action="store_true", help="redo stages that already finished")
    parser.add_argument("--override", action="store_true",
                        help="accept flags that change the configuration stored in the run directory")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    program = program_name("python train.py")
    parser = argparse.ArgumentParser(prog=program, usage="%(prog)s [options] [STAGE [stage options]]",
                                     description=plain(__doc__.split("\n\n")[0]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=plain("Stages:" + __doc__.split("Stages:")[1])
                                     + f"\nA stage's own flags: {program} STAGE --help")
    _add_common(parser)
    parser.add_argument("--stages", default=",".join(rundir.PIPELINE),
                        help=f"comma-separated stages of the pipeline to run (default: {','.join(rundir.PIPELINE)})")
    pipeline, taken = [rundir.STAGE[name] for name in rundir.PIPELINE], set()
    for section_type, sections in _section_groups(pipeline):
        title = ", ".join(config_lib.SECTION_TITLES[s] for s in sections)
        if len(sections) > 1:
            title += (f" (one value for all of them; set one alone with its stage, e.g. "
                      f"{program} prior --level top --epochs 60)")
        names = {field.name for field in dataclasses.fields(section_type)}
        clash = sorted(names & taken)  # e.g. --seed: the training stages' here, the samples stage's own below
        if clash:
            title += (f" ({', '.join('--' + n for n in clash)} above are the training stages'; set these with "
                      f"{program} {rundir.stage_command(rundir.section_owners(sections[0])[0])} ...)")
        config_lib.add_flags(parser, section_type, sections, title=title, skip=clash, prefix=PIPELINE_FLAGS)
        taken |= names
    commands = parser.add_subparsers(dest="stage", metavar="STAGE")
    for command, stages in COMMANDS.items():
        sub = commands.add_parser(command, prog=f"{program} {command}", help=f"run only the '{command}' stage",
                                  description=f"{program} {command}: run only the '{command}' stage.")
        _add_common(sub)
        if command == "prior":
            sub.add_argument("--kind", default="pixelcnn", choices=rundir.PRIORS,
                             help="pixelcnn (default) or the DCGAN baseline of a single-level run")
            sub.add_argument("--level", choices=("top", "bottom"), help="which PixelCNN prior to train")
        for section_type, sections in _section_groups(stages):
            config_lib.add_flags(sub, section_type, sections)
    args = parser.parse_args(argv)
    if args.stage is None:
        unknown = [s for s in args.stages.split(",") if s and s not in rundir.STAGE]
        if unknown:
            parser.error(f"unknown stages {unknown}; expected some of {list(rundir.STAGE)}")
    elif any(value is not None for key, value in vars(args).items() if key.startswith(PIPELINE_FLAGS)):
        parser.error(f"settings go after the stage they are for, e.g. `{program} {args.stage} --epochs 3`")
    if args.stage == "prior" and args.kind == "pixelcnn" and args.level is None:
        parser.error("prior: --level top or --level bottom is required for a PixelCNN prior")
    return args


def _overrides(args: argparse.Namespace, stage: str | None) -> dict[str, dict]:
    """Config section -> {field: value} the user gave; for the whole pipeline a flag shared by
    several sections (``--epochs``) sets all of them, except the fields of one level's prior."""
    overrides: dict[str, dict] = {}
    if stage == "prior":
        stage = "prior_dcgan" if args.kind == "dcgan" else f"prior_{args.level}"
    if stage:
        for section in rundir.STAGE[stage].sections:
            overrides[section] = config_lib.given_flags(args, config_lib.section_type(section))
    else:
        stages = [rundir.STAGE[name] for name in args.stages.split(",") if name]
        for section_type, sections in _section_groups(stages):
            given = config_lib.given_flags(args, section_type, prefix=PIPELINE_FLAGS)
            for section in sections:
                overrides[section] = {name: value for name, value in given.items()
                                      if LEVEL_ONLY.get(name, section) == section}
    if args.data_dir_flag is not None:
        overrides.setdefault("data", {})["data_dir"] = os.path.abspath(args.data_dir_flag)
    return overrides


def _stage_functions() -> dict:
    from oasis_gen.training.stages import FUNCTIONS

    return FUNCTIONS


def run_stages(run: rundir.Run, stages: Sequence[str], force: bool) -> dict:
    timer = rundir.StageTimer()
    results = {}
    functions = _stage_functions()
    for stage in stages:
        if stage == "prior_top" and run.config.vqvae.levels == 1 and len(stages) > 1:
            print("[prior_top] a single-level VQ-VAE has no top codes; skipping")  # asked for alone, it errs
            continue
        if run.is_complete(stage) and not force:
            reason = run.stale_reason(stage)
            if reason:
                raise rundir.RunError(f"{reason}; redo it with `python train.py {rundir.stage_command(stage)} "
                                      f"--run_dir {run.path} --force`")
            print(f"[{stage}] already finished in {run.path}; skipping (use --force to redo)")
            results[stage] = rundir.read_json(os.path.join(run.path, stage, rundir.COMPLETE))
            continue
        print(f"[{stage}] starting")
        from oasis_gen.training import loop as training

        if not training.is_chief():
            if rundir.STAGE[stage].train_section is None:
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
        summary = {**summary, "seconds": round(timer.seconds[stage], 1)}
        run.mark_complete(stage, summary, inputs)
        results[stage] = summary
    print_summary(run, timer.seconds)
    return results


def _start_multiworker(run: rundir.Run, stages: Sequence[str]) -> None:
    """Creates the multi-worker strategy before TensorFlow's first operation when a stage asks for it.

    Every worker runs the same command; one training stage per command (the chief alone goes on
    to the stages after it, which the other workers would never join)."""
    train_sections = {s: rundir.STAGE[s].train_section for s in stages}
    distributed = [s for s, section in train_sections.items()
                   if section and getattr(run.config, section).strategy == "multiworker"]
    if not distributed:
        return
    if run.config.data.data_dir is None:
        raise ValueError("--strategy multiworker needs --data: a folder every worker reads (the phantom data is "
                         "written by one process)")
    if [s for s in stages if s != "data"] != distributed[:1]:
        raise ValueError(f"--strategy multiworker trains one stage per command, run on every worker "
                         f"(e.g. `python train.py vqvae --strategy multiworker`); got stages {list(stages)}")
    from oasis_gen.training.loop import start_multiworker

    start_multiworker()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir_flag is not None and not os.path.isdir(args.data_dir_flag):
        # before anything is written: a mistyped --data must not leave a run directory behind
        print(f"error: data folder {args.data_dir_flag} does not exist", file=sys.stderr)
        return 2
    quiet_tensorflow(args.verbose)
    from oasis_gen.data.slices import DataError

    try:
        if args.stage == "prior":
            stages = ["prior_dcgan"] if args.kind == "dcgan" else [f"prior_{args.level}"]
        else:
            stages = [args.stage] if args.stage else [s for s in args.stages.split(",") if s]
        run_dir = args.run_dir or rundir.default_run_dir()
        if args.preset is None and args.data_dir_flag is not None \
                and not os.path.exists(os.path.join(run_dir, "config.json")):
            print("note: no --preset given, so the quick preset is used (128x128 slices, small models: a demo of "
                  "minutes); for real OASIS slices add --preset cpu (hours on a CPU) or --preset oasis (GPU)")
        run = rundir.open_run(run_dir, args.preset,
                                _overrides(args, args.stage), override=args.override,
                                unlocked=stages if args.force else ())
        _start_multiworker(run, stages)
        if args.stage and args.stage != "data" and run.config.data.data_dir is None:
            stages = ["data"] + stages if not run.is_complete("data") else stages
        start = time.perf_counter()
        run_stages(run, stages, args.force)
        print(f"\ntotal {format_seconds(time.perf_counter() - start)}")
    except (DataError, rundir.RunError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
