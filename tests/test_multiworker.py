"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy train like one process with the same
global batch, and only the chief writes into the run directory."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
from conftest import TINY_PRIOR_FLAGS, TINY_VQVAE_FLAGS

STEPS = ["--steps_per_epoch", "3", "--epochs", "1", "--precision", "float32"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def _train(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "oasis_gen.cli.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, what):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"{what} failed:\n{output[-4000:]}"
    return output


def _two_workers(args):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(_train(args + ["--strategy", "multiworker"], env))
    return [_finish(process, f"worker {index}") for index, process in enumerate(processes)]


def _weights(path):
    from oasis_gen.models import loading

    model = loading.load_model(path)
    return {w.path: np.array(w.numpy()) for w in model.weights}


def _assert_same(single, multi, loose=()):
    """Weights equal to 1e-4, except those named in ``loose``: behind a zero-initialised projection their
    first gradients are ~1e-9, where Adam's normalisation turns the all-reduce's summation order into
    steps of the learning rate's size; they are only required to be finite."""
    assert single.keys() == multi.keys()
    assert all(np.all(np.isfinite(multi[k])) for k in multi if multi[k].dtype.kind == "f")
    worst = {k: float(np.max(np.abs(single[k] - multi[k]))) for k in single
             if single[k].dtype.kind == "f" and not any(part in k for part in loose)}
    bad = {k: v for k, v in worst.items() if v > 1e-4}
    assert not bad, bad


def test_two_workers_train_stage_1_like_one_process(tiny_phantom, tmp_path):
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    stage1 = ["vqvae", "--data", tiny_phantom] + TINY_VQVAE_FLAGS + STEPS
    process = _train(stage1 + ["--run_dir", single])
    outputs = _two_workers(stage1 + ["--run_dir", multi])
    _finish(process, "the single-process run")
    assert "this worker's share is done" in outputs[1] and "stage 1 test metrics" in outputs[0]
    _assert_same(_weights(os.path.join(single, "vqvae", "model.keras")),
                 _weights(os.path.join(multi, "vqvae", "model.keras")))
    assert len(open(os.path.join(multi, "vqvae", "history.csv")).read().splitlines()) == 2  # one epoch, one writer


def test_two_workers_train_a_prior_like_one_process(tiny_prior_run, tmp_path):
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    for copy in (single, multi):  # the same stage 1 and codes on both sides
        shutil.copytree(tiny_prior_run, copy)
    prior = (["prior", "--level", "top", "--force", "--override"] + TINY_PRIOR_FLAGS + ["--num_attention_blocks", "1"]
             + STEPS[:2] + STEPS[4:])
    process = _train(prior + ["--run_dir", single])
    outputs = _two_workers(prior + ["--run_dir", multi])
    _finish(process, "the single-process prior")
    assert "this worker's share is done" in outputs[1]
    _assert_same(_weights(os.path.join(single, "prior_top", "model.keras")),
                 _weights(os.path.join(multi, "prior_top", "model.keras")),
                 loose=("attention_0/position", "attention_0/qkv"))
    assert os.path.exists(os.path.join(multi, "prior_top", "COMPLETE"))
