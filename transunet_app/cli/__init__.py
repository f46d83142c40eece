"""Command-line entry points: ``transunet <command>`` and ``segment``.

Each subcommand lives in its own module ``transunet_app.cli.<name>`` exposing

* ``HELP``: one line for the command list,
* ``add_arguments(parser)``: declares its flags (no heavy imports here, so ``--help`` is instant),
* ``run(args) -> int``: does the work and returns the exit code.

A :class:`transunet_app.errors.UserError` raised anywhere becomes one line on stderr and
exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import UserError

# Order is the order shown in --help.
# Command names as typed; the module is the name with "-" as "_" (synapse-refs -> synapse_refs).
COMMANDS = ("prepare", "train", "segment", "evaluate", "report", "demo", "convert", "synapse-refs",
            "package", "models", "export", "info")


def _load_command(name: str):
    """The module of a command; a missing module is an ImportError, never a silently absent command."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transunet",
        description="2D-transformer organ segmentation of CT (TransUNet and friends).",
    )
    parser.add_argument("--version", action="version", version=f"transunet-app {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load_command(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def run_guarded(func, args, prog: str) -> int:
    """Run a command; turn user errors into one stderr line and exit code 2."""
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return run_guarded(args._run, args, "transunet")


def segment_main(argv: list[str] | None = None) -> int:
    """The ``segment`` console script: same as ``transunet segment``."""
    module = _load_command("segment")
    parser = argparse.ArgumentParser(prog="segment", description=module.HELP)
    parser.add_argument("--version", action="version", version=f"transunet-app {__version__}")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(module.run, args, "segment")
