"""What every command does around its work: signals become exceptions, errors become one line.

* SIGTERM, SIGHUP (and SIGINT, which Python already raises as ``KeyboardInterrupt``) raise
  :class:`~transunet_app.errors.Interrupted` in the main thread, so output staging and atomic
  writes remove their temporary files on the way out; the exit code is 128 + the signal.
* SIGXFSZ is ignored: past a file-size limit (``ulimit -f``) a write then fails with EFBIG and
  is reported like a full disk, instead of the process dying with a core dump.
* ``TRANSUNET_DEBUG=1`` (or ``--debug``) prints the traceback after the one-line message.

Not a command module (it has no ``HELP``); imported by :mod:`transunet_app.cli`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from ..errors import Interrupted, StorageError, UserError, describe_os_error

#: set to 1/true/yes to print tracebacks under the one-line messages
DEBUG_ENV = "TRANSUNET_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def install_signal_handlers() -> dict:
    """Turn SIGTERM/SIGINT/SIGHUP into :class:`Interrupted`; ignore SIGXFSZ (main thread only).

    Returns the replaced handlers (``{signal: handler}``) for :func:`restore_signal_handlers`.
    """
    previous: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            previous[sig] = signal.signal(sig, _raise_interrupted)
    if hasattr(signal, "SIGXFSZ"):
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    """Put back what :func:`install_signal_handlers` replaced (a command run in-process)."""
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, TypeError):
            pass


def _print_traceback() -> None:
    import traceback

    traceback.print_exc(file=sys.stderr)


def report(exc: BaseException, prog: str) -> int | None:
    """Print ``exc`` as one line; return its exit code, or None for an unexpected exception."""
    if isinstance(exc, UserError):
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return getattr(exc, "exit_code", 2)
    if isinstance(exc, Interrupted):
        print(f"{prog}: stopped by {exc.signame}; temporary files removed, no partial outputs left",
              file=sys.stderr, flush=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted; temporary files removed, no partial outputs left",
              file=sys.stderr, flush=True)
        return 130
    if isinstance(exc, MemoryError):
        print(f"{prog}: error: out of memory", file=sys.stderr, flush=True)
        return 3
    if isinstance(exc, OSError):
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr, flush=True)
        return StorageError.exit_code
    return None


def run(func, args, prog: str) -> int:
    """Run ``func(args)`` with signal handlers; any failure is one line and an exit code."""
    previous = install_signal_handlers()
    debug = debug_enabled() or bool(getattr(args, "debug", False))
    try:
        return _run(func, args, prog, debug)
    finally:
        restore_signal_handlers(previous)


def _run(func, args, prog: str, debug: bool) -> int:
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # output piped into `head` & co.: not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything ends as one line
        if isinstance(exc, SystemExit):
            raise
        code = report(exc, prog)
        if code is None:
            if debug:
                raise
            first = str(exc).strip().splitlines()
            print(f"{prog}: internal error: {type(exc).__name__}: {first[0] if first else ''} "
                  f"(run with {DEBUG_ENV}=1 for the traceback; please report it)",
                  file=sys.stderr, flush=True)
            return 1
        if debug:
            _print_traceback()
        return code
