"""Exceptions that the CLI turns into one clear line on stderr (no traceback).

Exit codes of every command (``transunet <command>`` and ``segment``):

====  ===========================================================================
0     done
1     ``segment`` in folder mode: some inputs failed (each named), the others done
2     bad input: a file, an option or a config value (:class:`UserError`)
3     the file system refused: no space left, file too large, read-only file system,
      permission denied, a path component that is a file, a name too long, a missing
      drive (an ``OSError``, or :class:`StorageError` when refused before writing); also
      "out of memory"
4     ``train`` with several processes/nodes: another process was lost or a collective timed
      out (``TRANSUNET_DIST_TIMEOUT``); resume with all of them (:class:`DistributedError`)
129   SIGHUP, 130 SIGINT (Ctrl-C), 143 SIGTERM: stopped, temporary files removed
====  ===========================================================================
"""
from __future__ import annotations

import errno as _errno


class UserError(Exception):
    """Bad input from the user: a file, a flag or a config value.

    The message must name the file (or option) and the problem in one line. The CLI
    prints it and exits with code 2.
    """

    exit_code = 2


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, unsafe or does not fit the model."""


class StorageError(UserError):
    """The file system cannot take what a command has to write (found before or while
    writing): not enough free space, read-only, not permitted. Exit code 3."""

    exit_code = 3


class DistributedError(UserError):
    """A distributed run lost one of its processes (a node died, the network broke) or a
    collective timed out. Exit code 4."""

    exit_code = 4


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT/SIGHUP turned into an exception, so ``with`` blocks and ``finally``
    clauses remove temporary files before the process ends (exit code 128 + signal).

    A :class:`KeyboardInterrupt` subclass: ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        try:
            self.signame = signal.Signals(self.signum).name
        except ValueError:
            self.signame = f"signal {self.signum}"
        super().__init__(self.signame)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: errno -> the reason printed for it (what a user can act on).
_OS_REASONS = {
    _errno.ENOSPC: "no space left on device",
    _errno.EFBIG: "file too large (file-size limit reached or file system full)",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EROFS: "read-only file system",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.ENOTDIR: "a component of the path is a file, not a folder",
    _errno.EISDIR: "is a folder, expected a file",
    _errno.ENAMETOOLONG: "file name too long",
    _errno.ENOENT: "no such file or folder (missing drive or folder?)",
    _errno.EEXIST: "already exists",
    _errno.EIO: "input/output error (failing disk or lost network drive?)",
    _errno.ENODEV: "no such device (drive removed?)",
    _errno.ENXIO: "no such device (drive removed?)",
    _errno.ESTALE: "stale network file handle (network drive lost?)",
    _errno.EMFILE: "too many open files",
    _errno.ENOMEM: "out of memory",
}

#: errnos meaning the target file system cannot take any more writes: a folder run stops.
FULL_OR_READ_ONLY = frozenset({_errno.ENOSPC, _errno.EFBIG, _errno.EDQUOT, _errno.EROFS})


def describe_os_error(exc: OSError, path=None) -> str:
    """One line ``PATH: reason`` for an ``OSError`` (``path`` when the error names none)."""
    name = exc.filename if exc.filename is not None else path
    if name is not None:
        import os
        import re

        base = os.path.basename(os.fspath(name))
        # a temporary file of an atomic write: the user knows the folder, not this name
        if base.startswith(".") and re.search(r"\.(tmp|part|partial)(\.|$)", base):
            name = os.path.dirname(os.fspath(name)) or "."
    reason = _OS_REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__)
    reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
    if name is None:
        return reason
    text = f"{name}: {reason}"
    if exc.filename2 is not None:
        text = f"{name} -> {exc.filename2}: {reason}"
    return text
