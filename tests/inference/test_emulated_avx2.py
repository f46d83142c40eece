"""`segment` on an emulated AVX2-only CPU (qemu-user, ``-cpu Haswell``): torch's own CPUID probe
sees no AVX-512 there, so this checks what TRANSUNET_APP_PORTABLE=1 cannot fake: torch's kernel
dispatch and oneDNN's refusal of bf16 packing. auto must pick fp32 and bf16 must run (with the
one-line warning) and give the labels the native fp32 run gives, up to rounding."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import save_nifti, small_phantom

QEMU = shutil.which("qemu-x86_64")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (Debian package qemu-user)"),
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 emulation of an x86-64 host"),
]


def _segment(argv, emulated: bool, tmp: Path) -> subprocess.CompletedProcess:
    python = os.path.realpath(sys.executable)
    cmd = [python, "-m", "transunet_app", "segment", *map(str, argv)]
    if emulated:
        cmd = [QEMU, "-cpu", "Haswell", *cmd]
    env = dict(os.environ, TRANSUNET_APP_CACHE=str(tmp / "kernel_cache"))
    env.pop("TRANSUNET_APP_PORTABLE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_every_precision_runs_on_an_emulated_haswell(tiny_ckpt, tmp_path):
    ph = small_phantom()
    ct = save_nifti(tmp_path / "case.nii.gz", ph.image, ph.affine)
    native = _segment([ct, "-o", tmp_path / "native.nii.gz", "--checkpoint", tiny_ckpt,
                       "--precision", "fp32", "--quiet"], False, tmp_path)
    assert native.returncode == 0, native.stderr
    ref = np.asarray(nib.load(tmp_path / "native.nii.gz").dataobj)
    for precision in ("auto", "bf16"):  # auto must pick fp32 there (no warning)
        out = tmp_path / f"emulated_{precision}.nii.gz"
        r = _segment([ct, "-o", out, "--checkpoint", tiny_ckpt, "--precision", precision,
                      "--quiet"], True, tmp_path)
        err = "\n".join(ln for ln in r.stderr.splitlines() if "TCG doesn't support" not in ln)
        assert r.returncode == 0, (precision, err)
        assert "Traceback" not in err
        if precision in ("bf16", "fp16"):
            assert f"--precision {precision}:" in err and "slower than fp32" in err
        else:
            assert "warning" not in err, err
        labels = np.asarray(nib.load(out).dataobj)
        agree = float((labels == ref).mean())
        assert agree > (0.9999 if precision in ("fp32", "auto") else 0.995), (precision, agree)
