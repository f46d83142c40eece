"""A case's outputs as one unit: staged under temporary names, committed together.

Every file of one case (label map, sidecar, probabilities, statistics, report, ...) is first
written to a temporary name in its own target folder::

    .<final name>.<pid>.<8 hex>.partial<suffix>      e.g. .case.nii.gz.4711.9f3ac2d1.partial.nii.gz

(the suffix is kept so writers that look at it, nibabel's ``.nii.gz``, still work). Only when
every writer succeeded are they renamed to their final names, the ``last`` one (the label map,
which ``--skip-existing`` looks at) after all the others. On any exception, and on SIGTERM,
SIGINT or SIGHUP (the CLI turns them into :class:`~transunet_app.errors.Interrupted`), every
temporary is removed and no final name is created; a failure half-way through the renames
removes the names it created (an ``overwrite`` run removes the old label map before its
renames, so a set cut short there is never mistaken for a complete one).

After SIGKILL (or a power cut) the temporaries stay; :func:`remove_stale` deletes the ones
whose process is gone and that are older than the current run, and every reader of output
folders ignores names starting with ``.``.
"""
from __future__ import annotations

import errno
import glob
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..data.files import full_suffix
from ..errors import StorageError

#: marks a staged name: ``.<pid>.<token>.partial`` (found anywhere in a name starting with ".")
STAGED_PATTERN = re.compile(r"\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.partial(?:\.|$)")

_PROCESS_START = time.time()


def staged_name(final: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``final`` (not created)."""
    final = Path(final)
    token = secrets.token_hex(4)
    return final.parent / f".{final.name}.{os.getpid()}.{token}.partial{full_suffix(final.name)}"


def is_staged(name: str) -> bool:
    """True for names made by :func:`staged_name` (or temporaries derived from them)."""
    return name.startswith(".") and STAGED_PATTERN.search(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    """Best effort: cleaning up must never hide the error that made it necessary."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()
    except OSError:
        pass


def remove_stale(folder: str | os.PathLike, older_than: float | None = None) -> list[Path]:
    """Delete staged temporaries left in ``folder`` by a killed run; returns what was removed.

    A temporary is stale when the process that made it is gone (its pid in the name) and it
    was last modified before ``older_than`` (default: this process's start). Live runs'
    files (another ``segment --shard`` writing into the same folder) are left alone.
    Folders that cannot be listed are skipped (the write that follows reports them).
    """
    cutoff = _PROCESS_START if older_than is None else older_than
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = STAGED_PATTERN.search(entry.name) if entry.name.startswith(".") else None
        if m is None:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if mtime >= cutoff or _pid_alive(int(m.group("pid"))):
            continue
        _remove(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Refuse before heavy work when ``folder`` cannot take ``needed_bytes`` of new files.

    Creates and removes one empty staged file first (a read-only file system, a folder
    without write permission or a lost drive fails here, before the work, as the
    ``OSError`` naming the folder), then compares the estimate with the free space.

    Raises:
        StorageError: naming the folder, the estimate and the free space (exit code 3).
        OSError: the folder cannot be written.
    """
    probe = staged_name(Path(folder) / "write-test")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    try:
        os.close(fd)
    finally:
        _remove(probe)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will report what is wrong with the folder
    if needed_bytes > free:
        raise StorageError(f"{folder}: not enough free space for {what} (needs about "
                           f"{_mb(needed_bytes)}, {_mb(free)} free)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


class OutputSet:
    """Stage the outputs of one case and commit them together (a context manager).

    Args:
        overwrite: replace existing final files; without it an existing final name is an
            error (checked again at commit, so a file that appeared meanwhile is not clobbered).
        last: the final path renamed after all others (the file that marks the set done).

    Example::

        with OutputSet(overwrite=False, last=labels_path) as out:
            out.write(labels_path, lambda tmp: write_nifti(tmp, labels, like=image))
            out.write(sidecar_path, lambda tmp: tmp.write_text(text))
        # here both exist, or (after an exception) neither does and no temporary remains
    """

    def __init__(self, overwrite: bool = False, last: str | os.PathLike | None = None):
        self.overwrite = overwrite
        self.last = Path(last) if last is not None else None
        self._staged: dict[Path, Path] = {}  # final -> temporary
        self._scratch: list[Path] = []
        self.committed: list[Path] = []

    # ------------------------------------------------------------------ staging

    def stage(self, final: str | os.PathLike) -> Path:
        """Reserve the temporary name for ``final`` (the caller writes it)."""
        final = Path(final)
        if final in self._staged:
            raise ValueError(f"{final}: staged twice")
        if final.exists() and not self.overwrite:
            from ..errors import UserError

            raise UserError(f"{final}: already exists (use --overwrite to replace it)")
        tmp = staged_name(final)
        self._staged[final] = tmp
        return tmp

    def write(self, final: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
        """Run ``writer(temporary_path)``; returns the temporary path it wrote.

        An ``OSError`` that names no file (gzip's "No space left on device") is re-raised
        naming ``final``, so the user learns which output failed.
        """
        final = Path(final)
        tmp = self.stage(final)
        try:
            writer(tmp)
        except OSError as exc:
            if exc.filename is None or is_staged(Path(str(exc.filename)).name):
                raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None
            raise
        if not tmp.exists():
            raise RuntimeError(f"{final}: the writer did not create its temporary file")
        return tmp

    def has(self, final: str | os.PathLike) -> bool:
        """Whether ``final`` is part of this set (staged now, renamed on commit)."""
        return Path(final) in self._staged

    def staged(self, final: str | os.PathLike) -> Path:
        """The temporary path of an already written ``final``."""
        return self._staged[Path(final)]

    def scratch_dir(self, folder: str | os.PathLike) -> Path:
        """A temporary folder in ``folder`` for intermediate files, removed with the set."""
        path = staged_name(Path(folder) / "scratch")
        path.mkdir()
        self._scratch.append(path)
        return path

    # ------------------------------------------------------------------ finishing

    def _order(self) -> list[Path]:
        finals = [f for f in self._staged if f != self.last]
        if self.last is not None and self.last in self._staged:
            finals.append(self.last)
        return finals

    def commit(self) -> list[Path]:
        """Rename every staged file to its final name (``last`` last); returns the finals."""
        order = self._order()
        created: list[Path] = []
        try:
            if not self.overwrite:
                for final in order:
                    if final.exists():
                        from ..errors import UserError

                        raise UserError(f"{final}: already exists (use --overwrite to replace it)")
            elif self.last is not None and self.last in self._staged and self.last.exists():
                # the old set stops counting as done before any of its files is replaced
                self.last.unlink()
            for final in order:
                tmp = self._staged[final]
                _rename(tmp, final, self.overwrite)
                created.append(final)
        except BaseException:
            if not self.overwrite:
                for final in created:
                    _remove(final)
            self.discard()
            raise
        self.committed = created
        self._staged.clear()
        self._remove_scratch()
        return created

    def discard(self) -> None:
        """Remove every temporary file and folder of the set (idempotent)."""
        for tmp in self._staged.values():
            _remove(tmp)
            # temporaries a nested atomic write made from this name
            for stray in tmp.parent.glob(glob.escape(f".{tmp.name}.") + "*"):
                _remove(stray)
        self._staged.clear()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        for path in self._scratch:
            _remove(path)
        self._scratch.clear()

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _rename(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
        return
    try:  # link() refuses an existing target: no clobbering even in a race
        os.link(tmp, final)
    except FileExistsError:
        from ..errors import UserError

        raise UserError(f"{final}: already exists (use --overwrite to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.replace(tmp, final)  # a file system without hard links
        return
    os.unlink(tmp)


def missing_outputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The paths of ``paths`` that do not exist (for ``--skip-existing``)."""
    return [Path(p) for p in paths if not Path(p).exists()]
