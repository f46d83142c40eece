"""Fuzzed readers: mutated NIfTI headers, truncated and bit-flipped ``.nii.gz`` files, mutated
DICOM files and malformed YAML configs. Whatever a reader raises must be a one-line
:class:`UserError`: never another exception, a hang, or an allocation the file cannot back
(a header declaring 10^12 voxels is refused before any array is made).

Bounded: a fixed number of examples each, no per-example deadline (CI machines vary), about
20 s in all on 2 cores.
"""
from __future__ import annotations

import gzip
import io
import resource
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transunet_app.errors import UserError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: NIfTI-1 header fields: (byte offset, struct format) of the ones that drive allocation and layout
_FIELDS = {
    "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"),
    "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "6f"), "srow": (280, "12f"),
}


def _valid_nifti_bytes() -> bytes:
    import nibabel as nib

    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.integers(-1000, 1000, (8, 7, 5)).astype(np.int16), np.diag([0.8, 0.8, 3, 1]))
    img.header.set_qform(img.affine, 1)
    img.header.set_sform(img.affine, 1)
    return img.to_bytes()


NIFTI = _valid_nifti_bytes()


def _read(path):
    from transunet_app.data.io import read_image

    return read_image(path)


def _address_space_cap(extra_bytes: int = 3 << 30):
    """RLIMIT_AS at the current virtual size + ``extra_bytes``: an allocation the file cannot
    back fails as MemoryError (a test failure) instead of filling the machine's memory."""
    pages = int(open("/proc/self/statm").read().split()[0])
    cap = pages * resource.getpagesize() + extra_bytes
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    return cap if hard == resource.RLIM_INFINITY else min(cap, hard)


def _must_be_user_error(path):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space_cap(), hard))
    try:
        _read(path)
    except UserError as exc:
        assert "\n" not in str(exc) and str(path.parent) in str(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_int16 = st.integers(-32768, 32767)
_float = st.floats(allow_nan=True, allow_infinity=True, width=32)
_value = {
    "dim": st.lists(st.one_of(_int16, st.integers(0, 9)), min_size=8, max_size=8),
    "datatype": st.one_of(_int16, st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024,
                                                   1280, 1536, 1792, 2048, 2304])),
    "bitpix": _int16, "pixdim": st.lists(_float, min_size=8, max_size=8), "vox_offset": _float,
    "scl_slope": _float, "scl_inter": _float, "qform_code": _int16, "sform_code": _int16,
    "quatern": st.lists(_float, min_size=6, max_size=6), "srow": st.lists(_float, min_size=12, max_size=12),
}


@FUZZ
@given(data=st.data(), gz=st.booleans())
def test_mutated_nifti_header(tmp_path, data, gz):
    raw = bytearray(NIFTI)
    for name in data.draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=3, unique=True)):
        offset, fmt = _FIELDS[name]
        value = data.draw(_value[name])
        struct.pack_into("<" + fmt, raw, offset, *(value if isinstance(value, list) else [value]))
    path = tmp_path / ("m.nii.gz" if gz else "m.nii")
    path.write_bytes(gzip.compress(bytes(raw), 1) if gz else bytes(raw))
    _must_be_user_error(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [(10**4, 10**4, 10**4), (2**15 - 1, 2**15 - 1, 2**15 - 1), (1, 1, 10**12 // 32767)])
def test_huge_declared_volume_refused_before_allocating(tmp_path, gz, dims):
    """10^12 voxels declared in a file of a few hundred bytes: refused with a line naming the
    declared size, under an address-space cap that a real allocation would hit."""
    raw = bytearray(NIFTI)
    d = list(dims) if max(dims) < 32768 else [1, 1, 32767]
    struct.pack_into("<8h", raw, 40, 3, *d, 1, 1, 1, 1)
    path = tmp_path / ("huge.nii.gz" if gz else "huge.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space_cap(), hard))  # far below 10^12 voxels
    try:
        with pytest.raises(UserError, match="declares|truncated"):
            _read(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@FUZZ
@given(cut=st.integers(0, len(gzip.compress(NIFTI, 1)) - 1))
def test_truncated_nii_gz(tmp_path, cut):
    path = tmp_path / "t.nii.gz"
    path.write_bytes(gzip.compress(NIFTI, 1)[:cut])
    _must_be_user_error(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(gzip.compress(NIFTI, 1)) - 1), st.integers(0, 7)),
                      min_size=1, max_size=8))
def test_bit_flipped_nii_gz(tmp_path, flips):
    raw = bytearray(gzip.compress(NIFTI, 1))
    for pos, bit in flips:
        raw[pos] ^= 1 << bit
    path = tmp_path / "f.nii.gz"
    path.write_bytes(bytes(raw))
    _must_be_user_error(path)


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory):
    from ..volume_files import sitk_from_ras, write_dicom_series

    vol = np.random.default_rng(1).integers(-1000, 1000, (12, 10, 4)).astype(np.int16)
    folder = tmp_path_factory.mktemp("fuzz_dicom") / "series"
    write_dicom_series(sitk_from_ras(vol, np.diag([0.7, 0.7, 2.5, 1.0])), folder, "1.2.826.0.1.3680043.2.1125.77")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


_DICOM_READER = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from transunet_app.data.io import read_image
from transunet_app.errors import UserError
out = []
for path in sys.argv[1:]:
    try:
        read_image(path)
        out.append([path, "ok", ""])
    except UserError as exc:
        out.append([path, "user" if "\n" not in str(exc) else "multiline", str(exc)])
    except MemoryError:
        out.append([path, "memory", ""])
    except BaseException as exc:
        out.append([path, "other", f"{type(exc).__name__}: {exc}"[:300]])
print(json.dumps(out))
"""


def _mutate_dicom(raw: bytes, rng) -> bytes:
    import pydicom

    how = rng.choice(["flip", "truncate", "element", "element"])
    raw = bytearray(raw)
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            raw[rng.randrange(128, len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    if how == "truncate":
        return bytes(raw[: rng.randrange(len(raw))])
    ds = pydicom.dcmread(io.BytesIO(bytes(raw)))
    tag = rng.choice(["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
                      "SamplesPerPixel", "RescaleSlope", "ImagePositionPatient", "ImageOrientationPatient",
                      "PixelSpacing", "SliceThickness", "NumberOfFrames"])
    value = rng.choice([0, 1, 3, 7, 16, 64, 4096, 65535, -1, "x", "1e400", "nan", "1\\2"])
    try:
        setattr(ds, tag, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    except Exception:  # pydicom refuses to write that value: damage the bytes instead
        raw[len(raw) // 2] ^= 0xFF
        return bytes(raw)


@pytest.mark.parametrize("pixels", ["native", "rle"])
def test_mutated_dicom_files(tmp_path, dicom_series, pixels):
    """Byte flips, truncation or element edits (Rows, BitsAllocated, geometry ...) in some files
    of a series, read as a series folder and as single files, in a child process whose address
    space is capped at 3 GB (a reader allocating what the files cannot back fails as
    "memory" instead of exhausting the machine). ``rle``: the series' pixel data compressed,
    where the file size no longer bounds what a header may declare."""
    import random

    import pydicom
    from pydicom.uid import RLELossless

    if pixels == "rle":
        compressed = {}
        for name, raw in dicom_series.items():
            ds = pydicom.dcmread(io.BytesIO(raw))
            ds.compress(RLELossless, generate_instance_uid=False)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            compressed[name] = buf.getvalue()
        dicom_series = compressed
    rng = random.Random(20261207)
    paths = []
    names = sorted(dicom_series)
    for case in range(40):
        folder = tmp_path / f"series{case:02d}"
        folder.mkdir()
        victims = set(rng.sample(names, rng.randint(1, len(names))))
        for name in names:
            raw = dicom_series[name]
            (folder / name).write_bytes(_mutate_dicom(raw, rng) if name in victims else raw)
        paths += [str(folder), str(folder / sorted(victims)[0])]
    results = _run_dicom_reader(paths)
    bad = [r for r in results if r[1] not in ("ok", "user")]
    assert not bad, bad[:5]
    assert sum(r[1] == "user" for r in results) >= 20  # the mutations did break files


def _run_dicom_reader(paths) -> list:
    import json
    import subprocess
    import sys

    from .conftest import REPO_ROOT, cli_env

    res = subprocess.run([sys.executable, "-c", _DICOM_READER, *paths], capture_output=True,
                         encoding="utf-8", errors="replace", env=cli_env(), cwd=REPO_ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def enhanced_file(tmp_path_factory, dicom_series) -> bytes:
    """The fuzz series as one Legacy Converted Enhanced CT file (highdicom)."""
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(io.BytesIO(raw)) for raw in dicom_series.values()]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=generate_uid(), series_number=5,
        sop_instance_uid=generate_uid(), instance_number=1)
    buf = io.BytesIO()
    enhanced.save_as(buf)
    return buf.getvalue()


def _mutate_enhanced(raw: bytes, rng) -> bytes:
    """Byte damage, or an edit of what places and sizes the frames: top-level sizes, one frame's
    functional groups (position, a missing group), the shared pixel spacing and rescale."""
    import pydicom

    how = rng.choice(["flip", "truncate", "top", "frame", "frame", "shared"])
    if how in ("flip", "truncate"):
        return _mutate_dicom(raw, rng) if how == "flip" else raw[: rng.randrange(len(raw))]
    ds = pydicom.dcmread(io.BytesIO(raw))
    value = rng.choice([0, 1, 3, 64, 4096, 65535, -1, "x", "1e400", "nan", "1\\2"])
    try:
        if how == "top":
            setattr(ds, rng.choice(["Rows", "Columns", "NumberOfFrames", "BitsAllocated",
                                    "PixelRepresentation", "SamplesPerPixel"]), value)
        elif how == "frame":
            groups = ds.PerFrameFunctionalGroupsSequence
            item = groups[rng.randrange(len(groups))]
            if rng.random() < 0.3:
                del groups[rng.randrange(len(groups))]
            elif rng.random() < 0.5:
                del item.PlanePositionSequence
            else:
                item.PlanePositionSequence[0].ImagePositionPatient = [value, 0, value]
        else:
            shared = ds.SharedFunctionalGroupsSequence[0]
            if rng.random() < 0.5:
                shared.PixelMeasuresSequence[0].PixelSpacing = [value, value]
            else:
                shared.PixelValueTransformationSequence[0].RescaleSlope = value
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    except Exception:  # pydicom refuses to write that value: damage the bytes instead
        return _mutate_dicom(raw, rng)


def test_mutated_enhanced_ct_files(tmp_path, enhanced_file):
    """The same contract for one multi-frame file, read as its folder and as the file."""
    import random

    rng = random.Random(20261208)
    paths = []
    for case in range(40):
        folder = tmp_path / f"enhanced{case:02d}"
        folder.mkdir()
        (folder / "ct.dcm").write_bytes(_mutate_enhanced(enhanced_file, rng))
        paths += [str(folder), str(folder / "ct.dcm")]
    results = _run_dicom_reader(paths)
    bad = [r for r in results if r[1] not in ("ok", "user")]
    assert not bad, bad[:5]
    assert sum(r[1] == "user" for r in results) >= 20  # the mutations did break files
    assert any(r[1] == "ok" for r in results)  # and the reader was reached (not all refused)

_yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["model:", "  name: tiny", "data:", "  root: /x", "train:", "  batch_size: 4",
                              "  batch_size: [1, 2]", "  max_iterations: -3", "  lr: .nan", "optim: 3",
                              "&a [*a]", "key: !!python/object:os.system {}", "- a", "  - b", ":", "{", "]",
                              "model: {name: tiny, num_classes: x}", "schedule: {name: cosine, power: 1e999}",
                              "\t", "%YAML 9.9", "--- !!binary", "train: {seed: 99999999999999999999999}",
                              "augment: {max_angle: .inf}", "data: {img_size: 0}"]),
             max_size=8).map("\n".join),
)


@FUZZ
@given(text=_yaml_text)
def test_malformed_yaml_configs(tmp_path, text):
    from transunet_app.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except UserError as exc:
        assert "\n" not in str(exc)
