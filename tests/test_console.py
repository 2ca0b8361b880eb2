"""The console a user sees: no TensorFlow C++ logging, errors on bad paths before TensorFlow loads,
nothing written for a command that fails its checks."""

import os
import subprocess
import sys

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
