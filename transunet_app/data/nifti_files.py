"""NIfTI files through ISA-L's gzip when it is installed: the same files, read and written faster.

nibabel reads and writes ``.nii.gz`` through Python's zlib. ISA-L (the ``isal`` package, a
drop-in ``gzip``) decompresses and compresses several times faster (BENCHMARKS.md, `segment`
section). The files are ordinary gzip streams either way, and nibabel still parses and
writes every header byte: only the (de)compressor changes. Without ``isal`` nibabel's own
path is used.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: sizeof_hdr, the first 4 bytes of a NIfTI file, in either byte order.
_NIFTI1_SIZES = (348, 348 << 24)
_NIFTI2_SIZES = (540, 0x1C020000)
#: gzip level for written files: nibabel's default (fast; label maps compress well anyway).
COMPRESS_LEVEL = 1


def _igzip():
    try:
        from isal import igzip
    except ImportError:  # optional accelerator: nibabel's zlib path is used without it
        return None
    return igzip


def _is_gzip(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".gz")


@contextlib.contextmanager
def open_nifti(path: str | os.PathLike) -> Iterator:
    """Open a ``.nii`` / ``.nii.gz`` file as a nibabel image (NIfTI-1 or NIfTI-2); the data is
    read from the file while the context is open (``img.dataobj``), not memory-mapped.

    Raises:
        nibabel.filebasedimages.ImageFileError: not a NIfTI header.
        OSError, EOFError, ValueError, isal's ``IsalError``: unreadable or damaged file.
    """
    import nibabel as nib

    igzip = _igzip()
    if igzip is None or not _is_gzip(path):
        yield nib.load(os.fspath(path), mmap=False)
        return
    with igzip.open(os.fspath(path), "rb") as f:
        size = int.from_bytes(f.read(4).ljust(4, b"\0"), "little")
        f.seek(0)
        if size in _NIFTI1_SIZES:
            klass = nib.Nifti1Image
        elif size in _NIFTI2_SIZES:
            klass = nib.Nifti2Image
        else:
            raise nib.filebasedimages.ImageFileError("no NIfTI-1/NIfTI-2 header")
        yield klass.from_file_map({"image": nib.FileHolder(os.fspath(path), f)})


def save_nifti(img, path: str | os.PathLike) -> None:
    """Write a nibabel NIfTI image to ``path`` (``.nii`` or ``.nii.gz``), like ``nib.save``."""
    import nibabel as nib

    igzip = _igzip()
    if igzip is None or not _is_gzip(path):
        nib.save(img, os.fspath(path))
        return
    # no file name and mtime 0 in the gzip header, as nibabel writes: the same image gives the
    # same bytes (and the temporary name an atomic write uses does not end up in the file)
    with open(path, "wb") as raw, igzip.IGzipFile(filename="", mode="wb", fileobj=raw,
                                                  compresslevel=COMPRESS_LEVEL, mtime=0) as f:
        img.to_file_map({"image": nib.FileHolder(os.fspath(path), f)})
