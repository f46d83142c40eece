"""Fixtures for the engine tests: a tiny prepared phantom and small run configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """3 training cases (6 slices of 48x48 each) and 1 test volume, synthetic."""
    from transunet_app.data.phantom import prepare_phantom

    out = tmp_path_factory.mktemp("engine_phantom") / "data"
    prepare_phantom(out, cases=4, seed=3, matrix=48, slices=6, test_fraction=0.25)
    return out




def tiny_overrides(root: Path, **extra) -> list[str]:
    """Overrides that make configs/tiny.yaml a seconds-long CPU run."""
    values = {
        "data.root": str(root), "data.img_size": 32, "train.batch_size": 4, "train.max_epochs": 2,
        "val.every_epochs": 1, "log.progress": False, "log.tensorboard": False, "train.amp": "off",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def cli_env() -> dict:
    """Subprocess environment: one thread each (the CPU is shared), the checkout importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return env


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transunet_app", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO_ROOT, timeout=600, **kwargs)
