"""The end of a training command, for people: a table (one line per stage, rounded figures with
units, the time each stage took), what to do next, and the run's index ``report.md`` linking every
stage's metrics and figures. Reads only the run directory (the stages' ``COMPLETE`` markers and
files), so it also describes a run trained by an earlier command."""

from __future__ import annotations

import os
import re

from oasis_gen.fileio import atomic_write_text
from oasis_gen.progress import format_seconds
from oasis_gen.rundir import COMPLETE, STAGES, Run, read_json

TITLES = {"data": "data", "vqvae": "VQ-VAE-2 (stage 1)", "codes": "code maps", "prior_top": "top prior",
          "prior_bottom": "bottom prior", "prior_dcgan": "DCGAN prior", "samples": "samples",
          "evaluate": "sample evaluation"}
INDEX = "report.md"
_EPOCH_FIGURE = re.compile(r"^(.*)_epoch_(\d+)\.png$")


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _count(number: int) -> str:
    return f"{number / 1e6:.1f} M" if number >= 100_000 else f"{number:,}"


def describe(stage: str, marker: dict) -> str:
    """One line of what ``stage`` gave, from its ``COMPLETE`` marker."""
    get = marker.get
    if stage == "data":
        kind = "SYNTHETIC phantom data" if get("synthetic") else (get("data_dir") or "")
        return f"{get('train', 0):,} / {get('validate', 0):,} / {get('test', 0):,} slices (train/validate/test), {kind}"
    if stage == "vqvae":
        usage = ", ".join(f"{level} {get(f'{level}_usage'):.0%}" for level in ("top", "bottom")
                          if get(f"{level}_usage") is not None)
        return (f"test SSIM {_number(get('ssim_mean'))}, PSNR {_number(get('psnr_mean'), 1)} dB"
                + (f"; codebook in use: {usage}" if usage else ""))
    if stage == "codes":
        return f"{sum(get(split, 0) for split in ('train', 'validate', 'test')):,} slices encoded"
    if stage in ("prior_top", "prior_bottom"):
        gap = get("gap_bits")
        return (f"test NLL {_number(get('nll_bits_per_code_test'))} bits per code"
                + (f" (validation - train {gap:+.3f})" if gap is not None else "")
                + (f", {_count(get('parameters'))} parameters" if get("parameters") else ""))
    if stage == "prior_dcgan":
        return (f"generator {_count(get('generator_parameters', 0))} parameters, {get('epochs_trained')} epochs, "
                f"{get('alerts', 0)} discriminator alerts")
    if stage == "samples":
        return f"{get('samples')} slices, {_number(get('seconds_per_brain'), 2)} s per brain"
    if stage == "evaluate":
        return (f"C2ST AUC {_number(get('c2st_auc'), 2)} (real-vs-real floor {_number(get('c2st_auc_floor'), 2)}; "
                f"0.5 = indistinguishable), FD {_number(get('fd_brain'), 1)} (floor {_number(get('fd_brain_floor'), 1)})")
    shown = {key: value for key, value in marker.items() if key not in ("finished", "inputs", "seconds")}
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in shown.items())


def _markers(run: Run) -> dict[str, dict]:
    found = {}
    for stage in STAGES:
        path = os.path.join(run.path, stage.name, COMPLETE)
        if os.path.exists(path):
            try:
                found[stage.name] = read_json(path)
            except (OSError, ValueError):
                continue
    return found


def _time(marker: dict, seconds: float | None) -> str:
    if seconds is not None:
        return format_seconds(seconds)
    return f"({format_seconds(marker['seconds'])})" if marker.get("seconds") is not None else "earlier"


def stage_table(run: Run, seconds: dict[str, float] | None = None) -> list[tuple[str, str, str]]:
    """(stage title, time, result) of every finished stage; a time in parentheses was spent by an
    earlier command, "earlier" marks a stage finished before times were recorded."""
    seconds = seconds or {}
    return [(TITLES.get(stage, stage), _time(marker, seconds.get(stage)), describe(stage, marker))
            for stage, marker in _markers(run).items()]


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (shorter to read and to type)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def next_steps(run: Run) -> list[tuple[str, str]]:
    """(what, how) lines for the end of a training command."""
    where = shown_path(run.path)
    steps = [("open the run's report", os.path.join(where, INDEX)),
             ("follow the training curves", f"tensorboard --logdir {where}")]
    if run.is_complete("prior_bottom") or run.is_complete("prior_dcgan"):
        steps += [("generate more brains", f"python generate.py --run_dir {where} --num_samples 64"),
                  ("a whole stack (positions 0..31)", f"python generate.py --run_dir {where} --slice_index 0:32"),
                  ("score a folder of slices", f"python -m oasis_gen.cli.evaluate samples --run_dir {where} "
                                               "--samples FOLDER")]
    data = _markers(run).get("data", {})
    if run.config.data.data_dir is None or data.get("synthetic"):
        steps.append(("train on real OASIS slices", "python train.py --data /path/to/keras_png_slices --preset cpu"
                                                    "   (see the README's 'Data' section)"))
    return steps


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [header, *rows]]
    return "\n".join(lines)


def print_summary(run: Run, seconds: dict[str, float]) -> None:
    """The table and the next steps, then the index written."""
    rows = stage_table(run, seconds)
    print(f"\nrun {shown_path(run.path)} (preset {run.config.preset})")
    if rows:
        print(format_table(rows, ("stage", "time", "result")))
    print("\nnext steps")
    steps = next_steps(run)
    width = max(len(what) for what, _ in steps)
    for what, how in steps:
        print(f"  {what.ljust(width)}  {how}")
    write_index(run, seconds)


def _figures(folder: str) -> list[str]:
    """The figures of a stage folder (relative to it); of a per-epoch series, only the last epoch."""
    found, series = [], {}
    for sub in ("", "plots", "figures"):
        directory = os.path.join(folder, sub)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".png") or name.startswith("sample_"):
                continue
            relative = os.path.join(sub, name) if sub else name
            match = _EPOCH_FIGURE.match(name)
            if match:
                key = os.path.join(sub, match.group(1))
                if key not in series or int(match.group(2)) > series[key][0]:
                    series[key] = (int(match.group(2)), relative)
            else:
                found.append(relative)
    return found + [relative for _, relative in sorted(series.values(), key=lambda item: item[1])]


def write_index(run: Run, seconds: dict[str, float] | None = None) -> str:
    """Writes ``RUN/report.md``: the stage table and, per finished stage, links to its metrics,
    report and figures (the training curves and sample grids shown inline). Returns its path."""
    lines = [f"# Run `{os.path.basename(run.path)}`", "",
             f"Preset `{run.config.preset}`, data: "
             + (f"`{run.config.data.data_dir}`" if run.config.data.data_dir else "the built-in SYNTHETIC phantom"),
             "", "| stage | time | result |", "|---|---|---|"]
    lines += [f"| {title} | {time} | {result} |" for title, time, result in stage_table(run, seconds)]
    lines += ["", "Times in parentheses were spent by an earlier command.", ""]
    for stage in _markers(run):
        folder = os.path.join(run.path, stage)
        files = [name for name in ("metrics.json", "report.md", "history.csv", "summary.json")
                 if os.path.exists(os.path.join(folder, name))]
        figures = _figures(folder)
        if not files and not figures:
            continue
        lines += [f"## {TITLES.get(stage, stage)}", ""]
        if files:
            lines += [" · ".join(f"[{name}]({stage}/{name})" for name in files), ""]
        for figure in figures:
            inline = figure.endswith(("curves.png", "grid.png")) or figure.startswith("figures")
            lines.append(f"{'!' if inline else ''}[{figure}]({stage}/{figure})" + ("" if inline else "  "))
        lines.append("")
    lines += ["TensorBoard: `tensorboard --logdir " + shown_path(run.path) + "`", ""]
    path = os.path.join(run.path, INDEX)
    atomic_write_text(path, "\n".join(lines))
    return path
