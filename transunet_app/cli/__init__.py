"""Command-line entry points: ``transunet <command>`` and ``segment``.

Each subcommand lives in its own module ``transunet_app.cli.<name>`` exposing

* ``HELP``: one line for the command list,
* ``add_arguments(parser)``: declares its flags (no heavy imports here, so ``--help`` is instant),
* ``run(args) -> int``: does the work and returns the exit code.

A :class:`transunet_app.errors.UserError` raised anywhere becomes one line on stderr and
exit code 2, an ``OSError`` (full disk, read-only folder, ...) one line naming the path and
exit code 3, a signal exit code 128 + N (exit codes: :mod:`transunet_app.errors`).
"""
from __future__ import annotations

import argparse
import importlib

from .. import __version__

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
    """Run a command: every failure is one stderr line and a documented exit code.

    2 bad input (UserError), 3 a file-system fault (no space, read-only, permission ...),
    128 + N on signal N (SIGINT 130, SIGTERM 143, SIGHUP 129); ``TRANSUNET_DEBUG=1`` or
    ``--debug`` adds the traceback (see :mod:`transunet_app.cli.guard`).
    """
    from .guard import run

    return run(func, args, prog)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks under error lines (also TRANSUNET_DEBUG=1)")
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
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks under error lines (also TRANSUNET_DEBUG=1)")
    args = parser.parse_args(argv)
    return run_guarded(module.run, args, "segment")
