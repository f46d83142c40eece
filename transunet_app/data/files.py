"""File names and atomic writes: the one home of both for every part of the tool.

* :data:`VOLUME_SUFFIXES`: the endings of single-file volumes (what a folder of scans or label
  maps holds); :func:`case_name` strips them (``case01.nii.gz`` -> ``case01``);
  :func:`list_volumes` lists such files; :func:`pair_cases` pairs predictions with references.
* :func:`atomic_write`: every file the tool writes (label maps, sidecars, reports, metrics,
  checkpoints, prepared datasets, compiled kernels) goes through a temporary file in the same
  folder and is renamed into place, so a reader never sees a partial file, and an existing
  file is never replaced unless the caller says so (``overwrite=True``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError

#: Endings of NIfTI files (read and written with nibabel).
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Endings of single-file volumes: NIfTI, and the ITK formats SimpleITK reads (NRRD, MetaImage).
#: Longest first, so ``.nii.gz`` is stripped whole.
VOLUME_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".nhdr", ".mha", ".mhd")
# Stems that only say which side of a pair a file is: "case01_pred" pairs with "case01_gt".
_ROLE_SUFFIXES = ("_pred", "_prediction", "_seg", "_segmentation", "_gt", "_label", "_labels",
                  "_ref", "_reference", "_mask")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_volume_path(path: str | os.PathLike) -> bool:
    """Whether a file name ends in one of :data:`VOLUME_SUFFIXES` (any case)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def case_name(path: str | os.PathLike) -> str:
    """The case a file or folder holds: its name without a volume suffix.

    ``case0001.nii.gz`` -> ``case0001``, ``scan.NRRD`` -> ``scan``; a folder (a DICOM series)
    keeps its whole name (``series.1`` -> ``series.1``); any other file loses its last suffix.
    """
    p = Path(path)
    name = p.name
    low = name.lower()
    for suf in VOLUME_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name if p.is_dir() else p.stem


def full_suffix(name: str) -> str:
    """A file name's format ending: ``.nii.gz`` and ``.tar.gz`` whole, else the last suffix."""
    low = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if low.endswith(double):
            return name[-len(double):]
    return Path(name).suffix


def sidecar_path(label_path: str | os.PathLike) -> Path:
    """The JSON sidecar ``segment`` writes beside a label map: ``case.nii.gz`` -> ``case.json``."""
    p = Path(label_path)
    return p.with_name(case_name(p) + ".json")


def list_volumes(folder: str | os.PathLike) -> list[Path]:
    """Volume files (:data:`VOLUME_SUFFIXES`) directly inside ``folder``, sorted by name.

    Hidden files are left out: they are other programs' files or the temporary files of an
    :func:`atomic_write` in progress.
    """
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_volume_path(p))


def _pair_key(name: str) -> str:
    """Case name without a role suffix (``case01_gt`` -> ``case01``), case preserved."""
    low = name.lower()
    for suf in _ROLE_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def pair_cases(pred, gt) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair prediction and reference files by case name.

    Args:
        pred: a volume file or a folder of them.
        gt: the same kind (file with file, folder with folder).

    Returns:
        ``(pairs, unpaired)``: ``[(case, pred_path, gt_path)]`` sorted by case, and the names of
        files that found no partner. Names match exactly, or after dropping a role suffix such
        as ``_pred`` / ``_gt`` / ``_label``.

    Raises:
        UserError: a path is missing, a file is paired with a folder, or no pair is found.
    """
    pp, gp = Path(pred), Path(gt)
    for what, p in (("--pred", pp), ("--gt", gp)):
        if not p.exists():
            raise UserError(f"{what} {p}: no such file or folder")
    if pp.is_file() != gp.is_file():
        raise UserError(f"--pred {pp} and --gt {gp}: give two files or two folders, not one of each")
    if pp.is_file():
        return [(case_name(pp), pp, gp)], []
    preds, gts = list_volumes(pp), list_volumes(gp)
    if not preds:
        raise UserError(f"--pred {pp}: folder holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
    if not gts:
        raise UserError(f"--gt {gp}: folder holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
    gt_exact = {case_name(g): g for g in gts}
    gt_loose: dict[str, Path] = {}
    for g in gts:
        gt_loose.setdefault(_pair_key(case_name(g)).lower(), g)
    pairs, used = [], set()
    unpaired = []
    for p in preds:
        name = case_name(p)
        g = gt_exact.get(name) or gt_loose.get(_pair_key(name).lower())
        if g is None or g in used:
            unpaired.append(p.name)
            continue
        used.add(g)
        pairs.append((name if name in gt_exact else _pair_key(name), p, g))
    unpaired += [g.name for g in gts if g not in used]
    if not pairs:
        raise UserError(f"--pred {pp} and --gt {gp}: no case names match between the folders")
    return sorted(pairs), unpaired


# --------------------------------------------------------------------------- atomic writes


def _exists_error(path: Path) -> UserError:
    return UserError(f"{path}: already exists (use --overwrite to replace it)")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False,
                 mode: int | None = None) -> Path:
    """Write a file through a temporary file in the same folder, then rename it into place.

    Args:
        path: the final file; its folder must exist.
        write: called with the temporary path; must create the file there. Its name is
            ``.<name>.<random>.part<ext>`` with ``path``'s extension (``.nii.gz`` stays
            ``.nii.gz``, ``.so`` stays ``.so``), so writers that choose the format by name work.
        overwrite: replace an existing ``path``. Without it an existing file is an error,
            also when it appears while writing (the final step never clobbers).
        mode: permission bits of the final file; default ``0o666`` less the umask (what
            ``open()`` gives), not the ``0o600`` of a temporary file.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        UserError: the file exists and ``overwrite`` is false, ``path`` is a folder, or the
            folder is missing. Whatever ``write`` raises passes through; in every failure the
            temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: output folder does not exist")
    ext = full_suffix(path.name)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".part{ext}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # link() refuses an existing target: no clobbering even in a race
                os.link(tmp, path)
            except FileExistsError:
                raise _exists_error(path) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise _exists_error(path) from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """:func:`atomic_write` of UTF-8 text (newlines written as given)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, data: Any, overwrite: bool = False,
                      indent: int = 2) -> Path:
    """:func:`atomic_write` of ``data`` as JSON (NaN/Infinity refused: not JSON) plus a newline.

    Raises:
        ValueError: ``data`` holds NaN or infinity (before anything is written).
    """
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n",
                             overwrite=overwrite)


def atomic_folder(path: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a folder under a temporary name beside ``path``, then swap it into place.

    Args:
        path: the final folder; its parent must exist. An existing folder there is replaced
            only once the new one is complete (the caller decides whether replacing is allowed).
        build: called with the empty temporary folder (``.<name>.<random>``); fills it.

    Returns:
        ``path`` as a :class:`Path`.

    On any failure (also KeyboardInterrupt) the temporary folder is removed and a previous
    folder at ``path`` is put back: ``path`` holds the old folder or the complete new one.
    """
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        build(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "previous")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not path.exists():
            os.replace(old / "previous", path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
