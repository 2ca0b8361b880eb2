import json
import os

import pytest

from oasis_gen import pipeline
from oasis_gen.cli import train


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
    run = pipeline.open_run(str(tmp_path / "r"), "quick", {})
    with pytest.raises(pipeline.RunError, match="no finished 'vqvae' stage"):
        run.require("vqvae", "codes")
    with pytest.raises(pipeline.RunError, match="not a run directory"):
        pipeline.open_run(str(tmp_path / "nothing"), None, {}, create=False)


def test_settings_of_stages_not_started_may_change(tmp_path, capsys):
    run_dir = str(tmp_path / "r")
    pipeline.open_run(run_dir, "quick", {})
    run = pipeline.open_run(run_dir, None, {"top_prior": {"num_layers": 3}})
    assert run.config.top_prior.num_layers == 3
    assert "updating settings of stages not started yet" in capsys.readouterr().out
    run.mark_complete("prior_top")
    with pytest.raises(pipeline.ConfigConflict, match="top_prior.num_layers: stored 3, given 5"):
        pipeline.open_run(run_dir, None, {"top_prior": {"num_layers": 5}})
    redone = pipeline.open_run(run_dir, None, {"top_prior": {"num_layers": 5}}, unlocked=["prior_top"])
    assert redone.config.top_prior.num_layers == 5
