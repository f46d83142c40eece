"""glibc malloc tuned for repeated large tensors: freed blocks are reused, pages not re-faulted."""
import subprocess
import sys

import pytest

_SCRIPT = r"""
import resource, sys, torch
import torch.nn.functional as F
from transunet_app.inference.memory import reuse_freed_memory
tuned = reuse_freed_memory() if sys.argv[1] == "tuned" else None
torch.set_num_threads(1)
x = torch.rand(1, 16, 512, 1024)
faults = []
for _ in range(8):  # the same large intermediate, call after call, as in a forward
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # 128 MiB
    float(y.mean())
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(tuned, *faults[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_large_blocks_are_reused_instead_of_faulted_in_again():
    out = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True,
                              text=True, check=True)
        out[mode] = proc.stdout.split()
    if out["tuned"][0] != "True":
        pytest.skip("not glibc: mallopt not available")
    pages = (128 << 20) // 4096
    default, tuned = ([int(v) for v in out[m][1:]] for m in ("default", "tuned"))
    # by default the 128 MiB block is unmapped on free and all its pages fault again each call
    assert min(default) > 0.9 * pages
    # tuned, the freed block is mostly reused (an occasional hole too small for the aligned
    # request grows the heap once)
    assert sum(f < 100 for f in tuned) >= len(tuned) // 2
    assert sum(tuned) < 0.5 * sum(default)


def test_tuning_twice_is_harmless():
    from transunet_app.inference.memory import reuse_freed_memory

    first = reuse_freed_memory()
    assert reuse_freed_memory() == first
