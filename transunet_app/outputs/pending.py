"""The files of one case written under temporary names, then renamed together.

Local stand-in for the project's output staging: a writer gets a temporary path in the final
folder (``.<name>.<random>.part``); :meth:`PendingFiles.commit` renames all of them at the end,
and leaving the ``with`` block without committing (any exception) deletes them, so a failure
leaves none of the case's new files behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UserError


class PendingFiles:
    """Temporary files waiting to become their final paths.

    Use as a context manager::

        with PendingFiles(overwrite) as pending:
            write_x(pending.path_for(final_x), ...)
            write_y(pending.path_for(final_y), ...)
            pending.commit()
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._items: list[tuple[Path, Path]] = []
        self.committed: list[Path] = []

    def path_for(self, final: str | os.PathLike) -> Path:
        """A fresh temporary path in ``final``'s folder (created empty, removed on failure)."""
        final = Path(final)
        if final.exists() and not self.overwrite:
            raise UserError(f"{final}: already exists (use --overwrite to replace it)")
        if not final.parent.is_dir():
            raise UserError(f"{final.parent}: output folder does not exist")
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
        os.close(fd)
        self._items.append((Path(name), final))
        return Path(name)

    def commit(self) -> list[Path]:
        """Rename every temporary file to its final path (checked for clobbering first)."""
        if not self.overwrite:
            for _tmp, final in self._items:
                if final.exists():
                    raise UserError(f"{final}: already exists (use --overwrite to replace it)")
        umask = os.umask(0)
        os.umask(umask)
        for tmp, final in self._items:
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, final)
            self.committed.append(final)
        self._items = []
        return list(self.committed)

    def discard(self) -> None:
        for tmp, _final in self._items:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self._items = []

    def __enter__(self) -> "PendingFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
