"""Fault injection helpers: a tiny checkpoint, CT files, the CLI as a subprocess, and
file systems that are full (a small tmpfs, or a file-size limit) or read-only (a tmpfs mounted
read-only, or a file where a folder should be)."""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("TRANSUNET_DEBUG", None)
    env.update(extra)
    return env


def run_cli(args, file_size_limit: int | None = None, timeout: float = 300, **extra_env):
    """``python -m transunet_app ARGS`` (or ``segment`` when args[0] == "segment") in a subprocess.

    ``file_size_limit`` (bytes) sets RLIMIT_FSIZE in the child: a write past it fails with
    EFBIG as on a full disk (the CLI ignores SIGXFSZ).
    """
    preexec = None
    if file_size_limit is not None:
        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    cmd = [sys.executable, "-c", "import sys; from transunet_app.cli import segment_main; sys.exit(segment_main())",
           *map(str, args[1:])] if args[0] == "segment" else [sys.executable, "-m", "transunet_app", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(**extra_env), cwd=REPO_ROOT,
                          timeout=timeout, preexec_fn=preexec)


def start_cli(args, **extra_env) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from transunet_app.cli import segment_main; sys.exit(segment_main())",
           *map(str, args[1:])] if args[0] == "segment" else [sys.executable, "-m", "transunet_app", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(**extra_env), cwd=REPO_ROOT)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.002):
    """Poll ``predicate()`` until true; fails if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before the condition: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("condition not reached in time")
        time.sleep(poll)


def partial_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name) if folder.is_dir() else []


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "slice/s" not in ln and "warning" not in ln]
    assert lines, "no error line"
    assert "Traceback" not in stderr, stderr
    assert any(all(n in ln for n in needles) for ln in lines), stderr


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` at ``folder`` (root and mount permission needed, else skip)."""
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, f"faults_{uuid.uuid4().hex[:6]}", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def fault_ckpt(tmp_path_factory) -> Path:
    import torch

    from transunet_app.checkpoint import make_checkpoint, save_checkpoint
    from transunet_app.data.phantom import CLASSES
    from transunet_app.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", len(CLASSES), img_size=32)
    path = tmp_path_factory.mktemp("faults_ckpt") / "tiny.pt"
    save_checkpoint(path, make_checkpoint(model, list(CLASSES), {"img_size": [32, 32]}))
    return path


def write_ct(path: Path, matrix: int = 48, slices: int = 10, seed: int = 7) -> Path:
    from transunet_app.data.phantom import make_phantom

    from ..volume_files import save_nifti

    ph = make_phantom(seed, matrix=matrix, slices=slices, orientation="LPS")
    return save_nifti(path, ph.image, ph.affine)


@pytest.fixture(scope="session")
def small_ct(tmp_path_factory) -> Path:
    return write_ct(tmp_path_factory.mktemp("faults_ct") / "case01.nii.gz")


@pytest.fixture(scope="session")
def large_ct(tmp_path_factory) -> Path:
    """Big enough that writing its outputs takes a while (signals arrive mid-write)."""
    return write_ct(tmp_path_factory.mktemp("faults_big") / "big.nii.gz", matrix=192, slices=48, seed=1)


__all__ = ["signal"]
