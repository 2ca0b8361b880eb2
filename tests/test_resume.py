"""SIGKILL mid-epoch, re-run the same command, and reach the uninterrupted run's final state."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_PRIOR_FLAGS, TINY_VQVAE_FLAGS

from oasis_gen import rundir
from oasis_gen.cli import train
from oasis_gen.models import loading
from oasis_gen.training import checkpoints

KILLER = os.path.join(os.path.dirname(__file__), "killer.py")


def _killed(argv, at_checkpoint, mid_write=False):
    """Runs ``train.py argv`` in a child that SIGKILLs itself at its ``at_checkpoint``-th checkpoint write."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KILL_AT_CHECKPOINT=str(at_checkpoint), KILL_MID_WRITE="1" if mid_write else "0",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, KILLER] + argv, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == -9, result.stdout[-2000:] + result.stderr[-3000:]


def _final_weights(folder):
    return loading.load_model(checkpoints.read_checkpoint_state(folder)["path"]).get_weights()


def _assert_same_weights(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


VQVAE_ARGS = TINY_VQVAE_FLAGS + ["--epochs", "2", "--checkpoint_steps", "1"]  # 4 steps per epoch


# Checkpoint writes 1-4 are steps 1-3 and the end of epoch 1 (step 4); write N > 4 is step N, in epoch 2.
# Killed right after writing the step-6 state file but before checkpoint.json names it: resume at step 5.
# Killed in the middle of writing the step-7 file: checkpoint.json still names step 6.
@pytest.mark.parametrize("kill_at, mid_write, resume_step",
                         [pytest.param(6, False, 5, marks=pytest.mark.slow), (7, True, 6)])  # mid-write is the harder
def test_vqvae_killed_mid_epoch_resumes_to_the_uninterrupted_state(tiny_phantom, tmp_path, capsys, kill_at,
                                                                   mid_write, resume_step):
    reference = str(tmp_path / "reference")
    assert train.main(["vqvae", "--data", tiny_phantom, "--run_dir", reference] + VQVAE_ARGS) == 0
    run_dir = str(tmp_path / "killed")
    argv = ["vqvae", "--data", tiny_phantom, "--run_dir", run_dir] + VQVAE_ARGS
    _killed(argv, kill_at, mid_write)
    folder = os.path.join(run_dir, "vqvae")
    state = json.load(open(os.path.join(folder, "checkpoint.json")))
    assert state["step"] == resume_step and state["epoch"] == 1  # a killed write leaves the previous one
    assert not os.path.exists(os.path.join(folder, "COMPLETE"))
    capsys.readouterr()
    assert train.main(argv) == 0
    assert f"at epoch 2, step {resume_step}" in capsys.readouterr().out
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []  # no temporaries left behind
    _assert_same_weights(_final_weights(os.path.join(reference, "vqvae")), _final_weights(folder))
    history = open(os.path.join(folder, "history.csv")).read().strip().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]


def test_prior_with_dropout_killed_mid_epoch_resumes_exactly(tiny_prior_run, tmp_path):
    import shutil

    prior_args = TINY_PRIOR_FLAGS + ["--dropout", "0.2", "--epochs", "2", "--checkpoint_steps", "1", "--force",
                                     "--override", "--num_attention_blocks", "1"]
    finals = []
    for name, kill_at in (("reference", None), ("killed", 3)):
        run_dir = str(tmp_path / name)
        shutil.copytree(tiny_prior_run, run_dir)
        argv = ["prior", "--level", "top", "--run_dir", run_dir] + prior_args
        if kill_at:
            _killed(argv, kill_at)
            assert json.load(open(os.path.join(run_dir, "prior_top", "checkpoint.json")))["step"] == 2  # mid epoch 1
            argv = [a for a in argv if a != "--force"]  # the same command, minus the redo-from-scratch flag
        assert train.main(argv) == 0
        finals.append(_final_weights(os.path.join(run_dir, "prior_top")))
    _assert_same_weights(*finals)


def test_kill_during_the_pipeline_redoes_no_finished_stage(tiny_phantom, tmp_path, capsys):
    run_dir = str(tmp_path / "pipeline")
    tiny = {"image_size": 64, "data_dir": tiny_phantom}
    vqvae = dict(num_hiddens=16, num_residual_layers=1, num_embeddings=32, embedding_dim=8)
    prior = dict(hidden_channels=8, num_layers=2, kernel_size=3, num_heads=2, dropout=0.0, num_attention_blocks=1,
                 num_conditioning_layers=1)
    schedule = dict(batch_size=4, epochs=2, checkpoint_steps=2)
    rundir.open_run(run_dir, "quick", {"data": tiny, "vqvae": vqvae, "top_prior": prior, "bottom_prior": dict(prior, num_attention_blocks=0),
                                         "vqvae_train": schedule, "top_prior_train": schedule,
                                         "bottom_prior_train": schedule,
                                         # the last stages only need to finish: few slices to make and score
                                         "sampling": {"num_samples": 4, "evaluation_samples": 8}})
    # Stage 1 writes 4 checkpoints (2 per epoch); the 6th write is mid-way through the top prior.
    _killed(["--run_dir", run_dir], 6)
    run = rundir.open_run(run_dir, None, {}, create=False)
    assert run.is_complete("codes") and not run.is_complete("prior_top")
    finished = {stage: open(os.path.join(run_dir, stage, "COMPLETE")).read() for stage in ("data", "vqvae", "codes")}
    capsys.readouterr()
    assert train.main(["--run_dir", run_dir]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "vqvae", "codes"):
        assert f"[{stage}] already finished" in out
        assert open(os.path.join(run_dir, stage, "COMPLETE")).read() == finished[stage]
    assert "resuming the top prior" in out and "at epoch 1, step 2" in out
    for stage in ("prior_top", "prior_bottom", "samples", "evaluate"):
        assert run.is_complete(stage), stage
    results = json.load(open(os.path.join(run_dir, "evaluate", "metrics.json")))
    assert 0 <= results["c2st_auc"] <= 1 and results["synthetic_data"]
    assert os.path.exists(os.path.join(run_dir, "evaluate", "report.md"))
    assert not os.path.exists(os.path.join(run_dir, "samples", "report.md"))  # each stage in its own folder
