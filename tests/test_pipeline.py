import json
import os
import shutil

import pytest

from oasis_gen import rundir
from oasis_gen.cli import generate, train
from oasis_gen.fileio import atomic_write_json


def test_data_stage_on_a_data_folder_and_skip_on_rerun(tiny_phantom, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert train.main(["data", "--data", tiny_phantom, "--run_dir", run_dir, "--image_size", "64"]) == 0
    marker = json.loads(open(os.path.join(run_dir, "data", "COMPLETE")).read())
    assert marker["train"] == 16 and marker["synthetic"] is True
    stored = json.loads(open(os.path.join(run_dir, "config.json")).read())
    assert stored["data"]["image_size"] == 64 and stored["data"]["data_dir"] == tiny_phantom
    capsys.readouterr()
    assert train.main(["data", "--run_dir", run_dir]) == 0
    assert "already finished" in capsys.readouterr().out


def test_conflicting_flags_are_refused_and_listed(tiny_phantom, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert train.main(["data", "--data", tiny_phantom, "--run_dir", run_dir, "--image_size", "64"]) == 0
    capsys.readouterr()
    assert train.main(["data", "--run_dir", run_dir, "--image_size", "32", "--preset", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "data.image_size: stored 64, given 32" in error and "preset: stored 'quick'" in error
    assert train.main(["data", "--run_dir", run_dir, "--image_size", "32", "--override", "--force"]) == 0
    assert json.loads(open(os.path.join(run_dir, "config.json")).read())["data"]["image_size"] == 32


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert train.main(["data", "--data", str(tmp_path / "absent"), "--run_dir", str(tmp_path / "r")]) == 2
    assert "absent" in capsys.readouterr().err


def test_require_names_the_missing_stage(tmp_path):
    run = rundir.open_run(str(tmp_path / "r"), "quick", {})
    with pytest.raises(rundir.RunError, match="no finished 'vqvae' stage"):
        run.require("vqvae", "codes")
    with pytest.raises(rundir.RunError, match="not a run directory"):
        rundir.open_run(str(tmp_path / "nothing"), None, {}, create=False)


def test_settings_of_stages_not_started_may_change(tmp_path, capsys):
    run_dir = str(tmp_path / "r")
    rundir.open_run(run_dir, "quick", {})
    run = rundir.open_run(run_dir, None, {"top_prior": {"num_layers": 3}})
    assert run.config.top_prior.num_layers == 3
    assert "updating settings of stages not started yet" in capsys.readouterr().out
    run.mark_complete("prior_top")
    with pytest.raises(rundir.ConfigConflict, match="top_prior.num_layers: stored 3, given 5"):
        rundir.open_run(run_dir, None, {"top_prior": {"num_layers": 5}})
    redone = rundir.open_run(run_dir, None, {"top_prior": {"num_layers": 5}}, unlocked=["prior_top"])
    assert redone.config.top_prior.num_layers == 5


def _fake_stages(calls):
    """Stage functions that write their identity files with fresh content, so each redo changes them."""
    def make(stage):
        def run_stage(run, force=False):
            calls.append(stage)
            run.stage_dir(stage)
            for name in rundir.STAGE[stage].identity_files:
                with open(os.path.join(run.path, name), "wb") as handle:
                    handle.write(os.urandom(32))
            run.stage_dir(stage)
            return {}
        return run_stage
    return {stage: make(stage) for stage in rundir.STAGE}


def test_forcing_a_stage_marks_every_stage_after_it_unfinished(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(train, "_stage_functions", lambda: _fake_stages(calls))
    run_dir = str(tmp_path / "r")
    chain = "data,vqvae,codes,prior_top,prior_bottom,samples"
    assert train.main(["--run_dir", run_dir, "--stages", chain, "--data", str(tmp_path)]) == 0
    run = rundir.open_run(run_dir, None, {}, create=False)
    assert all(run.is_complete(stage) for stage in chain.split(","))
    old_prior = open(os.path.join(run_dir, "prior_top", "model.keras"), "rb").read()

    assert train.main(["vqvae", "--run_dir", run_dir, "--force"]) == 0
    assert "codes, prior_top, prior_bottom, samples out of date" in capsys.readouterr().out
    assert run.is_complete("vqvae") and run.is_complete("data")
    assert not any(run.is_complete(stage) for stage in ("codes", "prior_top", "prior_bottom", "samples"))
    assert open(os.path.join(run_dir, "prior_top", "model.keras"), "rb").read() == old_prior  # kept until redone
    with pytest.raises(rundir.RunError, match="no finished 'prior_top'.*prior --level top"):
        run.require("prior_top", "generate")

    calls.clear()
    assert train.main(["--run_dir", run_dir, "--stages", chain]) == 0  # the pipeline redoes exactly what is stale
    assert calls == ["codes", "prior_top", "prior_bottom", "samples"]
    run.require("samples", "a test")


def test_a_stage_built_from_another_upstream_is_refused_naming_what_to_redo(tmp_path):
    run = rundir.open_run(str(tmp_path / "r"), "quick", {})
    for stage in ("vqvae", "codes", "prior_top"):
        for name in rundir.STAGE[stage].identity_files:
            os.makedirs(os.path.dirname(os.path.join(run.path, name)), exist_ok=True)
            with open(os.path.join(run.path, name), "wb") as handle:
                handle.write(stage.encode())
        run.mark_complete(stage, inputs=run.input_identities(stage))
    run.require("prior_top", "generate")
    with open(os.path.join(run.path, "vqvae", "model.keras"), "wb") as handle:
        handle.write(b"another vqvae")  # stage 1 replaced behind the run's back
    with pytest.raises(rundir.RunError, match=r"'codes' was built from another 'vqvae'.*train.py codes .*--force"):
        run.require("prior_top", "generate")
    # a run finished by an earlier version records no inputs: the finishing times decide
    legacy = rundir.open_run(str(tmp_path / "old"), "quick", {})
    for stage, finished in (("vqvae", "2026-01-02T00:00:00"), ("codes", "2026-01-01T00:00:00")):
        atomic_write_json(os.path.join(legacy.stage_dir(stage), rundir.COMPLETE), {"finished": finished})
    with pytest.raises(rundir.RunError, match="'vqvae' was redone after 'codes' finished"):
        legacy.require("codes", "prior_top")


def test_generate_refuses_priors_trained_on_codes_of_another_vqvae(tiny_prior_run, tmp_path, capsys):
    run_dir = str(tmp_path / "copy")
    shutil.copytree(tiny_prior_run, run_dir)
    with open(os.path.join(run_dir, "codes", "train.npz"), "ab") as handle:
        handle.write(b"\0")  # the codes changed after the priors were trained on them
    assert generate.main(["--run_dir", run_dir, "--num_samples", "1", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "'prior_top' was built from another 'codes'" in error and "prior --level top" in error


def test_a_training_command_ends_with_a_table_next_steps_and_a_run_index(tiny_prior_run, tmp_path, capsys):
    import re

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_prior_run, run_dir)
    capsys.readouterr()
    assert train.main(["samples", "--run_dir", run_dir, "--num_samples", "4"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("stage  "):out.index("next steps")]
    assert re.search(r"VQ-VAE-2 \(stage 1\)\s+\(\d+(\.\d)? s\)\s+test SSIM 0\.\d{3}, PSNR \d+\.\d dB", table), table
    assert re.search(r"samples\s+\d+(\.\d)? s\s+4 slices, \d+\.\d\d s per brain", table), table
    assert "{" not in table and "gap_bits" not in table  # no raw dicts
    assert f"tensorboard --logdir {run_dir}" in out and f"python generate.py --run_dir {run_dir}" in out
    assert "train on real OASIS slices" not in out  # the tiny run has --data
    index = open(os.path.join(run_dir, "report.md")).read()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert "vqvae/metrics.json" in links and "samples/grid.png" in links and "prior_top/plots/curves.png" in links
    assert all(os.path.exists(os.path.join(run_dir, link)) for link in links)
    assert sum("reconstructions_epoch_" in link for link in links) == 1  # only the last epoch's grid
    for board in ("vqvae/tensorboard/images", "samples/tensorboard"):
        assert any(name.startswith("events.out") for name in os.listdir(os.path.join(run_dir, board))), board
