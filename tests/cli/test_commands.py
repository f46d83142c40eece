"""The command list: every name in ``cli.COMMANDS`` is a subcommand, and a command whose module
is missing is an import error, never a command that silently disappears from ``--help``."""
import argparse

import pytest

from transunet_app import cli


def test_every_listed_command_is_a_subcommand():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == list(cli.COMMANDS)
    assert {"convert", "synapse-refs"} <= set(cli.COMMANDS)


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("no-such-command",))
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()
