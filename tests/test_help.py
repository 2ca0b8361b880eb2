"""Every command's --help renders: argparse formats help strings with %, so one stray % breaks it."""

import importlib

import pytest

from oasis_gen.cli import train

COMMANDS = [("oasis_gen.cli.train", [])] + [("oasis_gen.cli.train", [stage]) for stage in train._STAGE_SECTIONS
                                             if stage != "prior_dcgan"]
COMMANDS += [("oasis_gen.cli.generate", []), ("oasis_gen.evaluate", []), ("oasis_gen.evaluate", ["reconstruction"]), ("oasis_gen.evaluate", ["prior"]),
             ("oasis_gen.evaluate", ["samples"]), ("oasis_gen.evaluate", ["compare"]), ("oasis_gen.bench", []),
             ("oasis_gen.data", []), ("oasis_gen.figures", []), ("oasis_gen.phantom", []), ("oasis_gen.prepare", [])]


@pytest.mark.parametrize("module, words", COMMANDS, ids=[" ".join([m.split(".")[-1]] + w) for m, w in COMMANDS])
def test_help_renders(module, words, capsys):
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).parse_args(words + ["--help"])
    assert stopped.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage:") and "--help" in printed
