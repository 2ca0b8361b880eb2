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
