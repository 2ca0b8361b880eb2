"""Every command's --help renders: argparse formats help strings with %, so one stray % breaks it."""

import importlib

import pytest

from oasis_gen.cli import train

COMMANDS = [("oasis_gen.cli.train", [])] + [("oasis_gen.cli.train", [stage]) for stage in train.COMMANDS
                                             if stage != "prior_dcgan"]
COMMANDS += [("oasis_gen.cli.generate", []), ("oasis_gen.cli.evaluate", []), ("oasis_gen.cli.evaluate", ["reconstruction"]), ("oasis_gen.cli.evaluate", ["prior"]),
             ("oasis_gen.cli.evaluate", ["samples"]), ("oasis_gen.cli.evaluate", ["compare"]), ("oasis_gen.cli.bench", []),
             ("oasis_gen.cli.data", []), ("oasis_gen.cli.figures", []), ("oasis_gen.cli.phantom", []), ("oasis_gen.cli.prepare", [])]


@pytest.mark.parametrize("module, words", COMMANDS, ids=[" ".join([m.split(".")[-1]] + w) for m, w in COMMANDS])
def test_help_renders(module, words, capsys):
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).parse_args(words + ["--help"])
    assert stopped.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage:") and "--help" in printed


def _help(words, capsys) -> str:
    with pytest.raises(SystemExit):
        train.parse_args(words + ["--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare with single spaces


def test_help_shows_every_presets_real_default(capsys):
    from oasis_gen import config

    printed = _help(["vqvae"], capsys)
    epochs = {name: config.preset(name).vqvae_train.epochs for name in config.PRESETS}
    assert len(set(epochs.values())) > 1  # else the check below would prove nothing
    assert "passes over the training split (" + ", ".join(f"{n} {e}" for n, e in epochs.items()) + ")" in printed
    sizes = {name: config.preset(name).data.image_size for name in config.PRESETS}
    assert "fed to the model (" + ", ".join(f"{n} {s}" for n, s in sizes.items()) + ")" in printed
    assert "{resize,crop,none}" in printed and "{auto,float32,mixed_bfloat16,mixed_float16}" in printed
    assert "DATA_DIR" not in printed and "--data_dir" not in printed and "--data FOLDER" in printed
    assert "VQ-VAE-2 training:" in printed and "TrainConfig" not in printed
    assert "``" not in _help([], capsys)


def test_the_whole_pipeline_takes_training_flags_for_every_stage():
    args = train.parse_args(["--epochs", "3", "--num_attention_blocks", "1", "--num_samples", "4"])
    overrides = train._overrides(args, None)
    assert all(overrides[s]["epochs"] == 3 for s in ("vqvae_train", "top_prior_train", "bottom_prior_train"))
    assert overrides["top_prior"] == {"num_attention_blocks": 1} and overrides["bottom_prior"] == {}
    assert overrides["sampling"] == {"num_samples": 4}


def test_pipeline_flags_before_a_stage_are_refused_with_the_stage_form(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--epochs", "3", "vqvae"])
    assert "python train.py vqvae --epochs 3" in capsys.readouterr().err
    assert train._overrides(train.parse_args(["vqvae", "--epochs", "3"]), "vqvae")["vqvae_train"] == {"epochs": 3}
