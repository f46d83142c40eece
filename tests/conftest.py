import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# One thread per test process: the suite runs as 2 xdist workers on 2 cores, and the many
# small ops of tiny models lose more to thread synchronisation than they gain (3-20x slower
# with 2 threads on a busy machine). Benchmarks (tools/bench/) use every core.
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TRANSUNET_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ct_abdomen_3mm.nii.gz").exists():
        pytest.skip(f"real CT sample not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_ct(shared_data) -> tuple[Path, Path]:
    """(CT, labels) of the real abdominal CT sample; skips when ../shared/data is absent."""
    lab = shared_data / "ct_abdomen_3mm_labels.nii.gz"
    if not lab.exists():
        pytest.skip(f"real CT labels not found in {shared_data}")
    return shared_data / "ct_abdomen_3mm.nii.gz", lab
