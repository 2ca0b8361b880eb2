"""Run directories and stage bookkeeping.

A run directory holds everything a later step needs (see DESIGN.md §1)::

    runs/<name>/config.json     the full resolved configuration
    runs/<name>/data/           the built-in phantom data, when no --data was given
    runs/<name>/<stage>/        each stage's outputs; <stage>/COMPLETE is written last

A stage is complete only once its marker exists, and the marker is written after every output
is in place, so an interrupted stage is never mistaken for a finished one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from typing import Sequence

from oasis_gen import config as config_lib
from oasis_gen.fileio import atomic_write_json

COMPLETE = "COMPLETE"
MODEL_FILE = "model.keras"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: the single place its facts are written.

    Attributes:
        name: the stage and its folder in the run directory.
        command: the ``train.py`` form that (re)does it.
        sections: the config sections it reads; once it has started they are locked.
        requires: the finished stages it reads; redoing one of them invalidates this stage.
        identity_files: the files whose content is its result (hashed for the stages built on it).
        train_section: the ``TrainConfig`` section of a training stage.
        default: part of the default pipeline (``python train.py`` with no stage).
    """

    name: str
    command: str
    sections: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    identity_files: tuple[str, ...] = ()
    train_section: str | None = None
    default: bool = True


STAGES = (
    Stage("data", "data", sections=("data",)),
    Stage("vqvae", "vqvae", ("data", "vqvae", "vqvae_train"), ("data",), ("vqvae/" + MODEL_FILE,), "vqvae_train"),
    Stage("codes", "codes", ("data",), ("vqvae",), ("codes/train.npz", "codes/validate.npz", "codes/test.npz")),
    Stage("prior_top", "prior --level top", ("top_prior", "top_prior_train"), ("codes",),
          ("prior_top/" + MODEL_FILE,), "top_prior_train"),
    Stage("prior_bottom", "prior --level bottom", ("bottom_prior", "bottom_prior_train"), ("codes",),
          ("prior_bottom/" + MODEL_FILE,), "bottom_prior_train"),
    Stage("samples", "samples", ("sampling",), ("vqvae", "prior_top", "prior_bottom")),
    Stage("evaluate", "evaluate", ("sampling",), ("vqvae", "prior_top", "prior_bottom")),
    Stage("prior_dcgan", "prior --kind dcgan", ("dcgan", "dcgan_train"), ("codes",), ("prior_dcgan/" + MODEL_FILE,),
          "dcgan_train", default=False),
)
STAGE = {stage.name: stage for stage in STAGES}
PIPELINE = tuple(stage.name for stage in STAGES if stage.default)


def stage_command(stage: str) -> str:
    """The ``train.py`` form that (re)does ``stage``."""
    return STAGE[stage].command


def downstream(stage: str) -> list[str]:
    """Every stage that reads ``stage``'s outputs, directly or through another stage, in pipeline order."""
    found: list[str] = []
    for candidate in STAGES:
        if any(parent == stage or parent in found for parent in candidate.requires):
            found.append(candidate.name)
    return found


def section_owners(section: str) -> tuple[str, ...]:
    """The stages whose results depend on config ``section``."""
    return tuple(stage.name for stage in STAGES if section in stage.sections)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message says why."""


class ConfigConflict(RunError):
    """Flags given now disagree with the configuration stored in the run directory."""


@dataclasses.dataclass
class Run:
    """A run directory and its resolved configuration."""

    path: str
    config: config_lib.Config

    def stage_dir(self, stage: str) -> str:
        folder = os.path.join(self.path, stage)
        os.makedirs(folder, exist_ok=True)
        return folder

    def model_path(self, stage: str) -> str:
        """The trained model of a training stage (``vqvae``, ``prior_top``, ...), whether or not it exists yet."""
        return os.path.join(self.path, stage, MODEL_FILE)

    def is_complete(self, stage: str) -> bool:
        return os.path.exists(os.path.join(self.path, stage, COMPLETE))

    def mark_complete(self, stage: str, summary: dict | None = None, inputs: dict | None = None) -> None:
        """Marks ``stage`` finished; call only after all its outputs are written.

        ``inputs`` maps each upstream stage to the identity it had when ``stage`` started (see
        ``input_identities``); consumers compare it with the upstream stage as it is now."""
        values = {"finished": datetime.datetime.now().isoformat(timespec="seconds"), **(summary or {})}
        if inputs is not None:
            values["inputs"] = inputs
        atomic_write_json(os.path.join(self.stage_dir(stage), COMPLETE), values)

    def identity(self, stage: str) -> str | None:
        """A SHA-256 (16 hex digits) of the files that carry ``stage``'s result, None when it has none."""
        files = [os.path.join(self.path, name) for name in STAGE[stage].identity_files]
        if not files or not all(os.path.exists(path) for path in files):
            return None
        digest = hashlib.sha256()
        for path in files:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]

    def input_identities(self, stage: str) -> dict[str, str]:
        """The current identity of each upstream stage of ``stage`` that has one."""
        found = {parent: self.identity(parent) for parent in STAGE[stage].requires}
        return {parent: value for parent, value in found.items() if value is not None}

    def _marker(self, stage: str) -> dict:
        try:
            return read_json(os.path.join(self.path, stage, COMPLETE))
        except (OSError, ValueError):
            return {}

    def stale_reason(self, stage: str) -> str | None:
        """Why finished ``stage`` no longer matches what it was built from, or None when it does.

        A stage that recorded its inputs is compared by content; a stage finished by an earlier
        version (no record) is stale when an upstream stage finished after it; one with neither
        record nor time cannot be judged and is trusted."""
        marker = self._marker(stage)
        recorded = marker.get("inputs")
        for parent in STAGE[stage].requires:
            if not self.is_complete(parent):
                continue
            if recorded is not None:
                current = self.identity(parent)  # None when its files are missing: the loader names them
                if parent in recorded and current is not None and recorded[parent] != current:
                    return f"'{stage}' was built from another '{parent}' than the one now in {self.path}"
            elif marker.get("finished") and marker["finished"] < self._marker(parent).get("finished", ""):
                return f"'{parent}' was redone after '{stage}' finished in {self.path}"
        return None

    def invalidate_downstream(self, stage: str) -> list[str]:
        """Marks every stage downstream of ``stage`` unfinished (outputs kept until redone)."""
        cleared = [name for name in downstream(stage) if self.is_complete(name)]
        for name in cleared:
            self.clear_complete(name)
        if cleared:
            print(f"[{stage}] redoing it makes {', '.join(cleared)} out of date: marked unfinished "
                  f"(their outputs stay until they are redone)")
        return cleared

    def has_started(self, stage: str) -> bool:
        """True once ``stage`` has a checkpoint or has finished."""
        folder = os.path.join(self.path, stage)
        return any(os.path.exists(os.path.join(folder, name)) for name in (COMPLETE, "checkpoint.json"))

    def clear_complete(self, stage: str) -> None:
        marker = os.path.join(self.path, stage, COMPLETE)
        if os.path.exists(marker):
            os.remove(marker)

    def require(self, stage: str, needed_by: str) -> None:
        """Raises RunError naming the stage to (re)do when ``stage`` has not finished in this run, or
        when it, or a stage it was built from, no longer matches its own inputs."""
        if not self.is_complete(stage):
            raise RunError(f"{self.path} has no finished '{stage}' stage, which '{needed_by}' needs; "
                           f"run `python train.py {stage_command(stage)} --run_dir {self.path}` first")
        for name in [stage] + _upstream(stage):
            reason = self.is_complete(name) and self.stale_reason(name)
            if reason:
                raise RunError(f"{reason}, so '{needed_by}' cannot use it; redo it with "
                               f"`python train.py {stage_command(name)} --run_dir {self.path} --force` "
                               f"(and the stages after it)")

    def save_config(self) -> None:
        config_lib.save_config(self.config, os.path.join(self.path, "config.json"))


def _upstream(stage: str) -> list[str]:
    found: list[str] = []
    for parent in STAGE[stage].requires:
        for name in [parent] + _upstream(parent):
            if name not in found:
                found.append(name)
    return found


def find_run(needs: str | None = None, start: str | None = None) -> str:
    """The newest run directory (by its latest finished stage) under the nearest ``runs/`` folder at
    or above ``start`` (default: the working directory), among those where stage ``needs`` has
    finished; a notebook in ``notebooks/`` finds the runs ``python train.py`` wrote at the root
    (returned relative to the working directory, ``../runs/<name>``, unless that climbs far).

    Raises:
        RunError: no ``runs/`` folder, or no run in it with a finished ``needs``; says how to make one.
    """
    folder = os.path.abspath(start or os.getcwd())
    make = "train one first: `python train.py` from the repository root (a quick demo run, minutes on a CPU)"
    while not os.path.isdir(os.path.join(folder, "runs")):
        if os.path.dirname(folder) == folder:
            raise RunError(f"no runs/ folder at or above {os.path.abspath(start or os.getcwd())}; {make}")
        folder = os.path.dirname(folder)
    runs = os.path.join(folder, "runs")
    found = []
    for name in os.listdir(runs):
        path = os.path.join(runs, name)
        if not os.path.exists(os.path.join(path, "config.json")):
            continue
        if needs is not None and not os.path.exists(os.path.join(path, needs, COMPLETE)):
            continue
        markers = [os.path.join(path, stage.name, COMPLETE) for stage in STAGES]
        times = [os.path.getmtime(marker) for marker in markers if os.path.exists(marker)]
        found.append((max(times, default=os.path.getmtime(os.path.join(path, "config.json"))), path))
    if not found:
        what = f"with a finished '{needs}' stage" if needs else ""
        raise RunError(f"no run {what} in {runs}; {make}".replace("  ", " "))
    newest = max(found)[1]
    return os.path.relpath(newest) if not os.path.relpath(newest).startswith("../" * 3) else newest


def data_folder(run_dir: str) -> str:
    """The slices run ``run_dir`` trained on: its ``--data`` folder, or the phantom data written into it."""
    config = config_lib.load_config(os.path.join(run_dir, "config.json"))
    return config.data.data_dir or os.path.join(run_dir, "data")


def default_run_dir() -> str:
    return os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def _diff(stored, wanted, prefix: str) -> list[str]:
    differences = []
    for field in dataclasses.fields(stored):
        old, new = getattr(stored, field.name), getattr(wanted, field.name)
        if dataclasses.is_dataclass(old):
            differences += _diff(old, new, f"{prefix}{field.name}.")
        elif old != new:
            differences.append(f"{prefix}{field.name}: stored {old!r}, given {new!r}")
    return differences


def open_run(run_dir: str, preset_name: str | None, overrides: dict[str, dict], override: bool = False,
             create: bool = True, unlocked: Sequence[str] = ()) -> Run:
    """Opens (or creates) a run directory and resolves its configuration.

    A new run starts from the preset (``quick`` when none is given) with ``overrides`` applied.
    An existing run starts from its stored ``config.json``, unless no stage has started in it and a
    preset is given: then it starts afresh from that preset. Flags may freely set the sections of
    stages that have not started yet (the change is reported); flags that disagree with the
    settings of a started or finished stage are refused with a list of the conflicts, unless
    ``override`` is set or the stage is in ``unlocked`` (being redone from scratch).

    Args:
        run_dir: the run directory.
        preset_name: preset for a new run (for an existing one it must match or be None).
        overrides: section name -> {field: value} given on the command line.
        override: accept flags that change the stored configuration.
        create: create the directory when missing (else RunError).
        unlocked: stages being redone, whose settings may change.

    Raises:
        RunError: missing run directory with ``create=False``.
        ConfigConflict: flags that disagree with the stored configuration.
    """
    path = os.path.abspath(run_dir)
    stored_path = os.path.join(path, "config.json")
    fresh = not any(Run(path, config_lib.Config()).has_started(stage.name) for stage in STAGES)
    if os.path.exists(stored_path) and fresh and preset_name:
        # nothing was trained yet (e.g. the first command failed on a mistyped --data): the stored
        # configuration holds no result, so the preset and flags given now simply replace it
        stored = config_lib.load_config(stored_path)
        if stored.preset != preset_name:
            print(f"no stage has started in {path}: its configuration is replaced by the {preset_name} preset")
        run = Run(path, _apply(config_lib.preset(preset_name), overrides))
        run.save_config()
        return run
    if os.path.exists(stored_path):
        stored = config_lib.load_config(stored_path)
        resolved = _apply(stored, overrides)
        probe = Run(path, stored)
        changes = _diff(stored, resolved, "")
        locked = {section for stage in STAGES for section in stage.sections
                  if probe.has_started(stage.name) and stage.name not in unlocked}
        conflicts = [change for change in changes if change.split(".")[0] in locked]
        if changes and not conflicts:
            print("updating settings of stages not started yet:\n  " + "\n  ".join(changes))
        if preset_name and preset_name != stored.preset:
            conflicts.insert(0, f"preset: stored {stored.preset!r}, given {preset_name!r}")
        if conflicts and not override:
            raise ConfigConflict(f"flags conflict with the configuration stored in {stored_path}:\n  "
                                 + "\n  ".join(conflicts)
                                 + "\nre-run without them, or add --override to replace the stored values")
        if conflicts:
            print("overriding the stored configuration:\n  " + "\n  ".join(conflicts))
        run = Run(path, resolved)
        if changes:
            run.save_config()
        return run
    if not create:
        raise RunError(f"{path} is not a run directory (no config.json)")
    os.makedirs(path, exist_ok=True)
    run = Run(path, _apply(config_lib.preset(preset_name or "quick"), overrides))
    run.save_config()
    return run


def _apply(config: config_lib.Config, overrides: dict[str, dict]) -> config_lib.Config:
    sections = {}
    for section, given in overrides.items():
        if given:
            sections[section] = config_lib.apply_flags(getattr(config, section), given)
    config = dataclasses.replace(config, **sections)
    vqvae = config.vqvae
    if vqvae.levels == 1 and vqvae.top_reconstruction_weight and \
            "top_reconstruction_weight" not in (overrides.get("vqvae") or {}):
        # a preset's top-only term has no top level to act on in a one-level model: off unless asked for by flag
        config = dataclasses.replace(config, vqvae=dataclasses.replace(vqvae, top_reconstruction_weight=0.0))
    return config


class StageTimer:
    """Wall-clock seconds per stage, for the final summary table."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function, *args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[name] = time.perf_counter() - start


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


PRIORS = ("pixelcnn", "dcgan")  # the prior kinds a run can sample from


def output_folder(run_dir: str, out: str | None) -> str:
    """``out``, refused when it holds slices of an earlier batch; by default a new folder per call
    under ``run_dir/generated/`` (the pipeline's ``samples/`` and ``evaluate/`` are the stages' own)."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(os.path.abspath(run_dir), "generated", stamp)
        out, number = base, 1
        while os.path.exists(out):
            number += 1
            out = f"{base}-{number}"
        return out
    earlier = sorted(name for name in os.listdir(out) if name.startswith("sample_") and name.endswith(".png")) \
        if os.path.isdir(out) else []
    if earlier:
        raise ValueError(f"{out} already holds {len(earlier)} slices of an earlier batch ({earlier[0]}, ...); "
                         "choose another --out, or leave it out for a new folder per call")
    return out
