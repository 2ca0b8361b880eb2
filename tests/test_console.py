"""The console a user sees: no TensorFlow C++ logging, errors on bad paths before TensorFlow loads,
nothing written for a command that fails its checks."""

import os
import subprocess
import sys

from oasis_gen import rundir
from oasis_gen.cli import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_tensorflow_starts_without_its_cpp_logging_unless_asked():
    code = ("from oasis_gen.cli.console import quiet_tensorflow\nquiet_tensorflow({verbose})\nimport tensorflow as tf\n"
            "print(float(tf.function(lambda x: 2 * x)(tf.ones(3))[0]))")
    quiet = _run(["-c", code.format(verbose=False)])
    assert quiet.returncode == 0 and quiet.stdout.strip() == "2.0"
    assert quiet.stderr == "", quiet.stderr
    verbose = _run(["-c", code.format(verbose=True)])  # the logging is back (this build prints start-up notices)
    assert verbose.returncode == 0 and verbose.stderr != ""


def test_a_wrong_path_is_one_line_before_tensorflow_loads(tmp_path):
    missing = str(tmp_path / "missing")
    for args in (["generate.py", "--run_dir", missing],
                 ["-m", "oasis_gen.cli.evaluate", "samples", "--run_dir", missing, "--data", missing],
                 ["-m", "oasis_gen.cli.evaluate", "samples", "--samples", missing, "--data", missing],
                 ["train.py", "vqvae", "--data", missing, "--run_dir", str(tmp_path / "run")]):
        done = _run(args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert missing in done.stderr


def test_a_mistyped_data_folder_leaves_no_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(["vqvae", "--data", str(tmp_path / "typo"), "--run_dir", str(run_dir), "--preset", "cpu"]) == 2
    assert "typo does not exist" in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_run_directory_where_nothing_started_takes_a_new_preset(tiny_phantom, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    rundir.open_run(run_dir, None, {})  # e.g. written by a first command that then failed
    run = rundir.open_run(run_dir, "cpu", {"vqvae_train": {"epochs": 2}})
    assert run.config.preset == "cpu" and run.config.data.image_size == 256 and run.config.vqvae_train.epochs == 2
    assert "replaced by the cpu preset" in capsys.readouterr().out
    assert train.main(["data", "--data", tiny_phantom, "--run_dir", run_dir, "--image_size", "64"]) == 0
    assert train.main(["data", "--run_dir", run_dir, "--preset", "quick"]) == 2  # now a stage has finished
    assert "preset: stored 'cpu', given 'quick'" in capsys.readouterr().err


def test_real_data_without_a_preset_says_the_quick_preset_is_used(tiny_phantom, tmp_path, capsys):
    assert train.main(["data", "--data", tiny_phantom, "--run_dir", str(tmp_path / "run")]) == 0
    assert "no --preset given, so the quick preset is used" in capsys.readouterr().out


def test_progress_in_a_log_is_a_few_short_lines():
    import io

    from oasis_gen.progress import LogProgress, progress_bar

    log = io.StringIO()
    bar = progress_bar(total=1000, desc="fitting", unit="steps", stream=log)
    assert isinstance(bar, LogProgress)  # a StringIO is no terminal
    bar.interval = 0.0  # a line at every update
    for _ in range(3):
        bar.update(10)
    bar.set_postfix(loss=0.5)
    bar.close()
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 4
    assert lines[0].startswith("fitting: 10/1000 steps (1%, ") and lines[-1].startswith("fitting: 30 steps in ")
    assert lines[-1].endswith("; loss 0.5")
    quiet = io.StringIO()
    list(LogProgress(range(5), desc="x", stream=quiet, interval=1e9, summary=False))
    assert quiet.getvalue() == ""


def test_an_epoch_line_shows_the_chosen_metrics_only():
    from oasis_gen.training.callbacks import format_epoch

    logs = {"loss": 0.01234, "val_loss": 0.02, "val_ssim": 0.91234, "top_usage": 0.78, "top_perplexity": 143.0,
            "val_top_perplexity": 150.0, "commitment_loss": 0.001}
    line = format_epoch("stage 1", 2, 10, logs, ("loss", "ssim", "top_usage"), 45.2)
    assert line == "stage 1 epoch 3/10: loss 0.01234 (val 0.02), val ssim 0.9123, top_usage 0.78 (45 s)"
