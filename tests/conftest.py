import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests" / "fidelity"))

# Two cores: keep torch from oversubscribing when pytest-xdist runs several workers.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ct_abdomen_3mm.nii.gz").exists():
        pytest.skip(f"real CT sample not found at {SHARED_DATA}")
    return SHARED_DATA
