"""Read medical volumes with their geometry; write NIfTI atomically: the one :class:`Image` type.

One reader for every input the tools accept:

* ``.nii`` / ``.nii.gz`` through nibabel (array in the file's (i, j, k) voxel order, header
  kept so outputs can carry the same qform/sform),
* a DICOM series folder through SimpleITK's series reader,
* ``.nrrd``, ``.mha``, ``.mhd`` and other formats SimpleITK reads.

Whatever the source, :class:`Image` holds the array in (i, j, k) voxel order and a 4x4 affine
mapping voxel indices to RAS+ world millimetres (nibabel's convention: +x towards the
patient's Right, +y Anterior, +z Superior). SimpleITK's LPS geometry and (z, y, x) arrays are
converted on the way in.

Every problem with an input is a :class:`~transunet_app.errors.UserError` whose one-line
message names the file and the problem. File names (volume suffixes, case names) and the
atomic write live in :mod:`.files`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .files import VOLUME_SUFFIXES, atomic_write, is_nifti_path, is_volume_path
from .nifti_files import open_nifti, save_nifti

# RAS <-> LPS: flip the sign of x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Image:
    """A 3D volume with its geometry.

    Attributes:
        array: voxel values, shape (I, J, K), in the file's voxel order (for NIfTI exactly as
            nibabel returns it; scl_slope/inter applied). CT is usually int16 HU.
        affine: (4, 4) float64, voxel index (i, j, k, 1) -> RAS+ world position in mm.
        spacing: mm between voxel centres along each array axis, ``(si, sj, sk)``.
        source: the file or DICOM folder read.
        header: the nibabel NIfTI header (NIfTI input only, else ``None``); pass the image as
            ``like=`` to :func:`write_nifti` to keep its qform/sform and codes.
        meta: extra facts about the input: ``format`` ("nifti", "dicom", "sitk"),
            ``orientation`` (axis codes such as "RAS"), ``dtype`` (stored data type), and for
            DICOM ``series_uid``, ``series_count``, ``files``, ``modality`` and
            ``series_description`` (when the files carry them), ``dicom_series`` (the
            ordered files, UIDs and geometry, :mod:`.dicom_series`) and ``warnings``.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: Path
    header: Any = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"`` (nibabel convention)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def read_image(path: str | os.PathLike, series_uid: str | None = None, what: str | None = None) -> Image:
    """Read one 3D volume with its geometry.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a DICOM series folder, or a file SimpleITK reads
            (``.nrrd``, ``.mha``, ``.mhd``, ...).
        series_uid: for a DICOM folder holding several series, the SeriesInstanceUID to read;
            by default the series with the most slices.
        what: how error messages name the input (``"reference"`` gives
            ``"reference <path>: <problem>"``); by default just ``"<path>: <problem>"``.

    Returns:
        The :class:`Image`. A 4D file with a single volume is squeezed to 3D.

    Raises:
        UserError: missing path, not an image, truncated or corrupt file, a 2D image, a 4D
            image with several volumes, a zero-length axis, NaN/Inf voxels, colour/vector
            voxels, or an unknown ``series_uid``.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir():
            image = _read_dicom_series(path, series_uid)
        elif is_nifti_path(path):
            image = _read_nifti(path)
        else:
            image = _read_sitk(path)
        _check_volume(image)
    except UserError as exc:  # "<path>: <problem>" -> "<what> <path>: <problem>"
        if what is None:
            raise
        raise UserError(f"{what} {exc}") from None
    image.meta.setdefault("orientation", image.orientation)
    return image


def read_label_map(path: str | os.PathLike, what: str = "label map") -> Image:
    """Read a label map file and check that it holds non-negative whole numbers.

    Args:
        path: a volume file (:data:`~.files.VOLUME_SUFFIXES`; not a DICOM folder).
        what: how error messages name the file (``"prediction"``, ``"reference"``, ...).

    Returns:
        The :class:`Image`; its array is uint8 when the labels fit, else an integer type.

    Raises:
        UserError: as :func:`read_image`, another file type, or non-integer / negative values;
            the message starts with ``what`` and the path.
    """
    p = Path(path)
    if not p.is_file():  # folders too: a DICOM series is not a label map
        raise UserError(f"{what} {p}: no such file")
    if not is_volume_path(p):
        raise UserError(f"{what} {p}: unsupported file type (use one of {', '.join(VOLUME_SUFFIXES)})")
    image = read_image(p, what=what)
    arr = image.array
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise UserError(f"{what} {p}: holds non-integer values, not a label map")
        arr = arr.astype(np.int32)
    if arr.size and arr.min() < 0:
        raise UserError(f"{what} {p}: holds negative values, not a label map")
    if arr.dtype != np.uint8 and arr.size and arr.max() <= 255:
        arr = arr.astype(np.uint8)
    image.array = arr
    return image


def _read_nifti(path: Path) -> Image:
    import nibabel as nib

    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    with contextlib.ExitStack() as stack:
        try:
            img = stack.enter_context(open_nifti(path))
        except (nib.filebasedimages.ImageFileError, ValueError) as exc:
            raise UserError(f"{path}: not a NIfTI image ({_short(exc)})") from None
        except Exception as exc:  # OSError, EOFError, gzip/ISA-L errors: a damaged file
            raise UserError(f"{path}: unreadable or corrupt file ({_short(exc)})") from None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise UserError(f"{path}: not a NIfTI image (found {type(img).__name__})")
        dims = tuple(int(d) for d in img.header["dim"][1: int(img.header["dim"][0]) + 1])
        if 0 in dims:
            raise UserError(f"{path}: zero-length axis in image shape {dims}")
        _check_declared_size(img.header, dims, path)
        try:
            array = _scaled_data(img.dataobj)
        except MemoryError:
            raise UserError(f"{path}: too large to load into memory (shape {img.shape})") from None
        except Exception as exc:  # EOFError, zlib.error, short reads: a damaged file, not a bug
            raise UserError(f"{path}: truncated or corrupt data ({_short(exc)})") from None
    header = img.header
    meta = {"format": "nifti", "dtype": str(header.get_data_dtype())}
    array = _squeeze_to_3d(array, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    return Image(array=array, affine=affine, spacing=_spacing(affine), source=path, header=header, meta=meta)


#: deflate's largest compression ratio (runs of one byte): a gzip file of n bytes holds at
#: most about 1032 n bytes, so a header declaring more is refused before allocating
_GZIP_MAX_RATIO = 1032


def _check_declared_size(header, dims: tuple, path: Path) -> None:
    """Refuse a header whose declared data the file cannot hold, before any array is made
    (a corrupt header declaring 10^12 voxels must not allocate terabytes)."""
    try:
        itemsize = int(header.get_data_dtype().itemsize)
        offset = int(header.get_data_offset())
    except Exception as exc:  # noqa: BLE001 - any inconsistency of a damaged header
        raise UserError(f"{path}: invalid NIfTI header ({_short(exc)})") from None
    if any(d < 0 for d in dims):
        raise UserError(f"{path}: negative axis length in image shape {dims}")
    declared = int(np.prod([int(d) for d in dims], dtype=object)) * itemsize
    size = path.stat().st_size
    gz = path.name.lower().endswith(".gz")
    capacity = size * _GZIP_MAX_RATIO if gz else size - offset
    if declared > capacity:
        what = f"header declares shape {dims} ({declared / 1e6:.1f} MB of voxels)"
        if gz:
            raise UserError(f"{path}: {what}, more than a {size}-byte gzip file can hold "
                            f"(corrupt header or truncated file)")
        raise UserError(f"{path}: {what} but the file holds {max(capacity, 0)} bytes of data "
                        f"(truncated file or corrupt header)")


def _scaled_data(dataobj) -> np.ndarray:
    """Voxel values with scl_slope/inter applied, in a compact type.

    nibabel would return float64 for any scaled file; CT stored as uint16 with intercept
    -1024 is whole-numbered HU, so integer scaling stays integer (int16 when it fits) and
    other scaling gives float32 (exact for integer HU), halving or quartering memory.
    """
    slope = getattr(dataobj, "slope", 1.0)
    inter = getattr(dataobj, "inter", 0.0)
    if not hasattr(dataobj, "get_unscaled") or (slope == 1.0 and inter == 0.0):
        return np.asarray(np.asanyarray(dataobj))
    raw = np.asarray(dataobj.get_unscaled())
    if raw.dtype.kind in "iub" and float(slope).is_integer() and float(inter).is_integer():
        out = raw.astype(np.int64) * int(slope) + int(inter)
        for kind in (np.int16, np.int32):
            info = np.iinfo(kind)
            if out.size == 0 or (out.min() >= info.min and out.max() <= info.max):
                return out.astype(kind)
        return out
    return (raw.astype(np.float32) * np.float32(slope) + np.float32(inter)).astype(np.float32)


def _read_sitk(path: Path) -> Image:
    import SimpleITK as sitk

    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    if path.name.lower().endswith((".dcm", ".ima")):
        from .dicom_series import scan_dicom_file

        series = scan_dicom_file(path)  # an Enhanced CT: one file holds the whole series
        if series is not None:
            image = _read_dicom_series(path, None, series)
            image.meta["format"] = "dicom"
            return image
        _refuse_one_slice_of_a_series(path)
        _check_dicom_sizes([str(path)], path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UserError(f"{path}: not an image this tool can read ({_sitk_reason(exc)})") from None
    return _from_sitk(img, path, {"format": "sitk"})


def _refuse_one_slice_of_a_series(path: Path) -> None:
    """A single slice given where its series was meant (a file dragged from a series folder)
    is refused, naming the folder: segmenting that one slice would pass silently."""
    import pydicom

    def series_uid(f) -> str | None:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            return str(ds.get("SeriesInstanceUID", "")) or None
        except Exception:  # noqa: BLE001 (not DICOM, or unreadable: not a sibling)
            return None

    uid = series_uid(path)
    if uid is None:
        return
    siblings = sum(1 for f in path.parent.iterdir() if f != path and f.is_file()
                   and not f.name.startswith(".") and series_uid(f) == uid)
    if siblings:
        raise UserError(f"{path}: one slice of a DICOM series whose other {siblings} slice(s) are "
                        f"in {path.parent}; give the folder {path.parent} to segment the series")


def _read_dicom_series(folder: Path, series_uid: str | None, series=None) -> Image:
    import SimpleITK as sitk

    from .dicom_series import scan_dicom_folder

    # pydicom picks, orders and checks the slices (the tool's own messages); ITK reads pixels.
    series = series if series is not None else scan_dicom_folder(folder, series_uid)
    # a mutated header must not allocate gigabytes (syntaxes from the headers already read)
    header_of = {}  # file -> its header (a multi-frame file is every slice's file)
    for f, ds in zip(series.files, series.headers):
        header_of.setdefault(f, ds)
    unique = list(header_of)
    _check_dicom_sizes(unique, folder, [_syntax_of(ds) for ds in header_of.values()])
    meta = {"format": "dicom", "series_uid": series.series_uid, "series_count": series.series_count,
            "files": len(unique), "dicom_series": series, "warnings": list(series.warnings)}
    for value, key in ((series.modality, "modality"), (series.series_description, "series_description")):
        if value:
            meta[key] = value
    if series.multiframe:
        meta["frames"] = len(series.files)
        image = Image(array=_multiframe_hu(series), affine=series.affine_ras, spacing=None,
                      source=folder, header=None, meta=meta)
        meta["dtype"] = str(image.array.dtype)
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in series.files])
        warn_display = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # its gap warnings are ours, reworded
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise UserError(f"{folder}: cannot read DICOM series {series.series_uid} ({_sitk_reason(exc)})") from None
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(warn_display)
        image = _from_sitk(img, folder, meta)
    image.affine = series.affine_ras  # from the sorted headers: slice k is series.files[k]
    image.spacing = _spacing(image.affine)
    return image


def _multiframe_hu(series) -> np.ndarray:
    """(I, J, K) values of a multi-frame file's frames in volume order, each frame rescaled by
    its own slope and intercept (pydicom decodes; compressed frames need its codec plugins)."""
    import pydicom

    path = series.files[0]
    try:
        ds = pydicom.dcmread(str(path))
        frames = ds.pixel_array  # (F, rows, columns) in file order
    except Exception as exc:  # noqa: BLE001 (pydicom raises many types for a codec or data problem)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        syntax = _syntax_of(series.headers[0])
        hint = ("; compressed multi-frame files need the decoders of pip install "
                "'transunet-app[dicom-compress]'") if syntax is not None and syntax.is_compressed else ""
        raise UserError(f"{path}: cannot decode the frames ({reason}){hint}") from None
    if frames.ndim != 3 or frames.shape[1:] != (series.rows, series.columns):
        raise UserError(f"{path}: pixel data of shape {frames.shape} does not match "
                        f"{len(series.files)} frames of {series.rows}x{series.columns}")
    index = np.asarray(series.frame_numbers) - 1
    slope, intercept = series.rescale[:, 0], series.rescale[:, 1]
    stack = frames[index]  # (K, rows, columns), volume order
    if np.all(slope == 1) and np.all(intercept == np.round(intercept)):
        hu = stack.astype(np.int32) + intercept.astype(np.int32)[:, None, None]
        if hu.min(initial=0) >= np.iinfo(np.int16).min and hu.max(initial=0) <= np.iinfo(np.int16).max:
            hu = hu.astype(np.int16)
    else:
        hu = stack.astype(np.float32) * slope.astype(np.float32)[:, None, None] \
            + intercept.astype(np.float32)[:, None, None]
    return np.ascontiguousarray(hu.transpose(2, 1, 0))  # (columns, rows, K) = (i, j, k)


#: Pixel data a compressed (encapsulated) DICOM file may declare whatever its size: lossless
#: codecs (JPEG-LS runs, JPEG 2000) shrink a uniform frame to almost nothing, so no ratio bounds
#: them; 64 MiB is 8x a 2048x2048 16-bit frame and far from the gigabytes a mutated header asks
_COMPRESSED_CAP = 64 << 20


def _syntax_of(ds) -> "object | None":
    """A pydicom data set's TransferSyntaxUID (``UID``); None when it has no file meta."""
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _transfer_syntax(name) -> "object | None":
    """The file's TransferSyntaxUID, from its header (SimpleITK hides the file meta group)."""
    import pydicom

    try:
        return _syntax_of(pydicom.dcmread(str(name), stop_before_pixels=True, force=True))
    except Exception:  # noqa: BLE001 (unreadable: ITK's own read below names the problem)
        return None


def _check_dicom_sizes(files, where: Path, syntaxes=None) -> None:
    """Refuse DICOM files whose header declares more pixel data than the file can hold, from
    the header alone (a mutated Rows/Columns must not make the reader allocate gigabytes).

    Native pixel data must fit in the file; deflated files in 1032x the file; compressed
    (encapsulated) pixel data, whose ratio has no bound, in 1032x the file or 64 MiB."""
    import SimpleITK as sitk

    syntaxes = list(syntaxes) if syntaxes is not None else [None] * len(files)
    for name, syntax in zip(files, syntaxes):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise UserError(f"{name}: not a readable DICOM file ({_sitk_reason(exc)})") from None
        size = [int(v) for v in reader.GetSize()]
        # stored bytes per pixel from Bits Allocated (ITK's pixel type is the rescaled one:
        # float for a fractional slope, more than the file holds)
        bits = reader.GetMetaData("0028|0100").strip(" \0") if reader.HasMetaDataKey("0028|0100") else ""
        samples = reader.GetMetaData("0028|0002").strip(" \0") if reader.HasMetaDataKey("0028|0002") else ""
        if bits.isdigit():
            bytes_per = max(1, int(bits) // 8) * (int(samples) if samples.isdigit() else 1)
        else:
            bytes_per = int(reader.GetNumberOfComponents()) * max(1, np.dtype(_SITK_DTYPES.get(
                reader.GetPixelID(), np.float64)).itemsize)
        declared = int(np.prod(size, dtype=object)) * bytes_per
        on_disk = os.path.getsize(name)
        syntax = syntax if syntax is not None else _transfer_syntax(name)
        if syntax is not None and syntax.is_encapsulated:
            capacity = max(on_disk * _GZIP_MAX_RATIO, _COMPRESSED_CAP)
        elif syntax is not None and syntax.is_deflated:
            capacity = on_disk * _GZIP_MAX_RATIO
        else:
            capacity = on_disk
        if declared > capacity:
            raise UserError(f"{name}: DICOM header declares {'x'.join(map(str, size))} pixels "
                            f"({declared / 1e6:.1f} MB) but the file has {on_disk} bytes "
                            f"(truncated file or corrupt header)")


def _sitk_dtypes() -> dict:
    import SimpleITK as sitk

    return {sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16,
            sitk.sitkInt16: np.int16, sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32,
            sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64, sitk.sitkFloat32: np.float32,
            sitk.sitkFloat64: np.float64}


class _LazyDtypes(dict):
    def get(self, key, default=None):
        if not self:
            self.update(_sitk_dtypes())
        return super().get(key, default)


_SITK_DTYPES = _LazyDtypes()


def _from_sitk(img, path: Path, meta: dict) -> Image:
    import SimpleITK as sitk

    if img.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{path}: {img.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector "
                        f"image); expected a grey-value volume")
    dim = img.GetDimension()
    if dim == 2:
        raise UserError(f"{path}: 2D image of size {tuple(img.GetSize())}; expected a 3D volume")
    if dim == 4:
        size = img.GetSize()
        if size[3] != 1:
            raise UserError(f"{path}: 4D image with {size[3]} volumes; expected a single 3D volume")
        img = sitk.Extract(img, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
        dim = 3
    if dim != 3:
        raise UserError(f"{path}: {dim}D image; expected a 3D volume")
    meta["dtype"] = str(sitk.GetArrayViewFromImage(img).dtype)
    # SimpleITK arrays are (z, y, x); the Image contract is (i, j, k) = (x, y, z).
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    lps[:3, 3] = img.GetOrigin()
    affine = _LPS_TO_RAS @ lps
    return Image(array=array, affine=affine, spacing=_spacing(affine), source=path, header=None, meta=meta)


def _squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim > 3:
        extra = array.shape[3:]
        n_volumes = int(np.prod(extra))
        if n_volumes > 1:
            raise UserError(f"{path}: {array.ndim}D image with {n_volumes} volumes (shape {array.shape}); "
                            f"expected a single 3D volume")
        array = array.reshape(array.shape[:3])
    if array.ndim < 3:
        raise UserError(f"{path}: {array.ndim}D image of shape {array.shape}; expected a 3D volume")
    return array


def _check_volume(image: Image) -> None:
    arr, path = image.array, image.source
    if 0 in arr.shape:
        raise UserError(f"{path}: zero-length axis in image shape {arr.shape}")
    if arr.dtype.kind == "c" or arr.dtype.fields is not None:
        raise UserError(f"{path}: unsupported voxel type {arr.dtype}; expected real grey values")
    if arr.dtype.kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise UserError(f"{path}: {bad} voxels are NaN or infinite")
    if not np.all(np.isfinite(image.affine)) or abs(np.linalg.det(image.affine[:3, :3])) < 1e-12:
        raise UserError(f"{path}: invalid geometry (singular or non-finite affine)")


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _sitk_reason(exc: BaseException) -> str:
    # SimpleITK messages are multi-line C++ traces that repeat the path; keep the gist.
    text = str(exc)
    if "Unable to determine ImageIO reader" in text:
        return "unrecognised format or not an image"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(key in ln.lower() for key in ("description", "unable", "could not", "error")):
            reason = ln.split("ERROR:", 1)[-1].split("Description:", 1)[-1].strip(" :")
            return reason[:200]
    return lines[-1][:200] if lines else type(exc).__name__


# --------------------------------------------------------------------------- writing


def write_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    like: Image | np.ndarray,
    dtype: Any = None,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write a volume as NIfTI with the geometry of a reference, atomically.

    Args:
        path: output ``.nii`` or ``.nii.gz`` file.
        array: voxel values in the reference's (i, j, k) voxel order; for an :class:`Image`
            reference its shape must equal ``like.array.shape`` (trailing axes beyond three
            are allowed, e.g. (I, J, K, C) probabilities).
        like: the reference. An :class:`Image` read from NIfTI passes on its header, so the
            output keeps the qform and sform matrices and codes, ``pixdim`` (voxel spacing),
            units and ``dim_info`` exactly; other images and a bare (4, 4) RAS affine give a
            header whose qform and sform both hold that affine with code 1 (scanner).
        dtype: stored data type (default: ``array.dtype``). Integer types must hold the
            values; no intensity scaling is stored (scl_slope = NaN).
        overwrite: replace an existing file.
        description: text for the header's ``descrip`` field (80 bytes at most).

    Returns:
        The written path.

    Raises:
        UserError: the output exists without ``overwrite``, or its folder is missing.
        ValueError: shape mismatch with the reference, values that do not fit ``dtype``, or a
            path that does not end in ``.nii``/``.nii.gz`` (programming errors).
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: NIfTI output must end with .nii or .nii.gz")
    array = np.asarray(array)
    dtype = np.dtype(dtype if dtype is not None else array.dtype)
    if dtype.kind in "iu" and array.size and array.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = array.min(), array.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"values {lo}..{hi} do not fit {dtype}")
        if array.dtype.kind == "f" and not np.array_equal(np.rint(array), array):
            raise ValueError(f"non-integer values cannot be stored as {dtype}")
    data = array.astype(dtype, copy=False)

    header = like.header if isinstance(like, Image) else None
    if isinstance(like, Image):
        if data.shape[:3] != like.array.shape:
            raise ValueError(f"array shape {data.shape} does not match the reference {like.array.shape}")
        affine = like.affine
    else:
        affine = np.asarray(like, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError("like must be an Image or a (4, 4) affine")

    if isinstance(header, nib.Nifti1Header):
        hdr = header.copy()
        klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        hdr.set_data_dtype(dtype)
        hdr.set_slope_inter(np.nan, np.nan)
        hdr["cal_min"] = 0
        hdr["cal_max"] = 0
        # affine=None: nibabel keeps the header's qform/sform exactly instead of re-deriving them.
        img = klass(data, None, header=hdr)
    else:
        img = nib.Nifti1Image(data, affine)
        img.header.set_data_dtype(dtype)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    if description is not None:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]

    return atomic_write(path, lambda tmp: save_nifti(img, tmp), overwrite=overwrite)
