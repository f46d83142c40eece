"""Keep freed memory in the process for reuse instead of handing it back to the OS.

glibc's malloc returns large freed blocks to the kernel (blocks above its mmap threshold are
unmapped; a heap's free top is trimmed; a worker thread's arena drops whole heaps), so the
next tensor of the same size is mapped again and every 4 KiB page faults and is zeroed on
first touch. Inference allocates the same large tensors batch after batch (the decoder's
(8, 64, 224, 224) float32 maps), so this repeats all the time: tens of thousands of page faults
per R50-ViT-B_16 forward and a noticeable share of a ``segment`` run in the kernel. With large
blocks kept on one heap, runs after the first barely fault (counts in BENCHMARKS.md).

The price: the process keeps its peak heap until it exits (``segment`` is a short-lived
command; its peak RSS is measured in tools/bench/bench_segment.py). Only glibc is tuned; elsewhere
nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks up to this size come from the heap, and this much free heap top is kept (an int).
KEEP_BYTES = 1 << 30

_done = False


def reuse_freed_memory() -> bool:
    """Tune glibc's malloc for the process (once): large blocks from the heap (mmap threshold
    1 GiB), free heap kept (trim threshold 1 GiB), one arena for all threads (worker threads'
    arenas otherwise unmap whole heaps as they empty; tensors are few and large, so sharing
    the arena's lock costs nothing measurable).

    Returns:
        True when glibc accepted the settings, False elsewhere (other C libraries, Windows,
        macOS): then nothing changed.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, KEEP_BYTES), (_M_TRIM_THRESHOLD, KEEP_BYTES), (_M_ARENA_MAX, 1)))
    _done = ok
    return ok
