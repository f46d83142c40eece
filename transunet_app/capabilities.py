"""What this CPU, this torch build and this machine can run: every fast-path decision in one place.

Each fast path asks here instead of assuming the machine it was written on:

* ``onednn_bf16``: oneDNN's bf16 kernels (pre-packed Linear weights, fused convolutions). torch
  refuses to pack bf16 weights on CPUs without AVX512-BW/VL/DQ (or AVX-NE-CONVERT), so this
  asks torch (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``).
* ``onednn_fp32``: oneDNN-packed float32 Linear layers with fused activations. Faster than
  torch's float32 ``F.linear`` (MKL) only where oneDNN runs AVX-512 and MKL does not use it
  (AMD CPUs with AVX-512); on AVX2-only CPUs the packed model measured slower than the plain
  one (BENCHMARKS.md, AVX2 table), so there it is off.
* ``native_bf16``: the CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16 dot
  products); without it bf16 is emulated and slower than float32, so ``precision auto`` and
  ``train.amp auto`` pick float32.
* ``c_kernels``: this package's C kernels (:mod:`transunet_app.kernels`) need AVX512-BF16 and
  a C compiler the first time.

``TRANSUNET_APP_PORTABLE=1`` makes every probe answer as on a CPU with AVX2 only, no bf16
hardware and no C compiler, so a machine with AVX-512 can still run the AVX2 code paths (CI
runs the inference, kernel and CLI tests once more that way). torch's own kernel dispatch
cannot be faked from Python: in portable mode torch still runs its AVX-512 kernels inside
ops this package calls plainly; what changes is every choice this package makes.
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass

PORTABLE_ENV = "TRANSUNET_APP_PORTABLE"

#: CPU flags a portable-mode answer hides (everything past AVX2/FMA).
_BEYOND_AVX2 = ("avx512", "amx", "avx_vnni", "avx_ne_convert", "avx_vnni_int8")

#: CPU flags the C kernels use (compiled with exactly these extensions, never -march=native).
C_KERNEL_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16")

#: Compilers tried in order (gcc first: the kernels' flags and libgomp are gcc's).
COMPILER_NAMES = ("gcc", "cc")


@dataclass(frozen=True)
class Decision:
    """One fast path: whether it is used on this machine and why (one line for reports)."""

    name: str
    on: bool
    why: str

    def __bool__(self) -> bool:
        return self.on

    def line(self) -> str:
        return f"{self.name}: {'yes' if self.on else 'no'} ({self.why})"


def portable() -> bool:
    """Whether ``TRANSUNET_APP_PORTABLE`` asks for the AVX2-only answers."""
    return os.environ.get(PORTABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def _proc_cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def _torch_sees_avx512() -> bool:
    """Whether torch's own CPUID probe found usable AVX-512 (its kernels' capability).

    ``/proc/cpuinfo`` can list more than a process may run: under an emulator (qemu-user
    passes the host's file through) or with ``ATEN_CPU_CAPABILITY`` lowered, torch knows
    better, so AVX-512 and AMX count only where torch agrees.
    """
    import torch

    try:
        return "AVX512" in str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # noqa: BLE001 (a torch without the probe: trust /proc/cpuinfo)
        return True


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``), without anything past AVX2/FMA in
    portable mode or where torch's own probe sees no AVX-512."""
    flags = _proc_cpu_flags()
    if portable() or not _torch_sees_avx512():
        flags = frozenset(f for f in flags if not f.startswith(_BEYOND_AVX2))
    return flags


def cpu_class() -> str:
    """"AMX", "AVX512-BF16", "AVX-512", "AVX2" or "baseline" (+ " (portable mode)")."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        name = "AMX"
    elif "avx512_bf16" in flags:
        name = "AVX512-BF16"
    elif "avx512f" in flags:
        name = "AVX-512"
    elif "avx2" in flags:
        name = "AVX2"
    else:
        name = "baseline"
    return name + (" (portable mode)" if portable() else "")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def bf16_hardware() -> str:
    """What multiplies bf16 on this CPU: "AMX", "AVX512-BF16" or "none"."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return "none"


def native_bf16() -> Decision:
    """Whether bf16 is worth choosing on this CPU (``precision auto``, ``train.amp auto``)."""
    hw = bf16_hardware()
    if hw != "none":
        return Decision("bf16 hardware", True, hw)
    return Decision("bf16 hardware", False, "no AMX or AVX512-BF16: bf16 would be emulated, "
                    "slower than fp32")


def onednn() -> Decision:
    """torch's oneDNN (mkldnn) operators that the inference passes call directly."""
    import torch

    try:
        ops = torch.ops.mkldnn
        have = all(hasattr(ops, n) for n in ("_linear_pointwise", "_convolution_pointwise",
                                              "_reorder_linear_weight"))
        have = have and torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):
        have = False
    return Decision("oneDNN", have, "torch built with oneDNN" if have
                    else "torch built without oneDNN's pointwise operators")


def onednn_bf16() -> Decision:
    """oneDNN bf16 kernels: pre-packed weights and fused layers in a bf16 model."""
    import torch

    base = onednn()
    if not base:
        return Decision("oneDNN bf16", False, base.why)
    if portable():
        return Decision("oneDNN bf16", False, f"{PORTABLE_ENV}=1")
    try:
        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        ok = False
    return Decision("oneDNN bf16", ok, "torch's oneDNN supports bf16 on this CPU" if ok
                    else "torch's oneDNN has no bf16 path on this CPU (needs AVX512-BW/VL/DQ)")


def onednn_fp32() -> Decision:
    """oneDNN-packed float32 Linear layers with fused activations (the fp32 inference pass)."""
    base = onednn()
    if not base:
        return Decision("oneDNN fp32 packing", False, base.why)
    if "avx512f" not in cpu_flags():
        why = f"{PORTABLE_ENV}=1" if portable() else "AVX2-only CPU: measured slower than plain fp32"
        return Decision("oneDNN fp32 packing", False, why)
    return Decision("oneDNN fp32 packing", True, "AVX-512: oneDNN's fp32 matmul beats MKL's here")


def compiler() -> str | None:
    """Path of the C compiler the kernels are built with (None in portable mode or if none)."""
    if portable():
        return None
    for name in COMPILER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def c_kernels() -> Decision:
    """Whether this package's C kernels can be built and run here (CPU and compiler)."""
    flags = cpu_flags()
    if not flags and not portable():
        return Decision("C kernels", False, "CPU flags unknown (no /proc/cpuinfo)")
    missing = [f for f in C_KERNEL_FLAGS if f not in flags]
    if missing:
        return Decision("C kernels", False, "CPU lacks " + ", ".join(missing))
    if compiler() is None:
        why = f"{PORTABLE_ENV}=1" if portable() else \
            f"no C compiler found (tried {', '.join(COMPILER_NAMES)})"
        return Decision("C kernels", False, why)
    return Decision("C kernels", True, "AVX512-BF16 and a C compiler")


def cuda() -> Decision:
    import torch

    if torch.cuda.is_available():
        return Decision("CUDA", True, torch.cuda.get_device_name(0))
    why = "torch built without CUDA" if torch.version.cuda is None else "no CUDA device visible"
    return Decision("CUDA", False, why)


def decisions() -> list[Decision]:
    """Every decision, in the order ``transunet info`` prints them."""
    return [native_bf16(), onednn(), onednn_bf16(), onednn_fp32(), c_kernels(), cuda()]


def clear() -> None:
    """Forget the cached ``/proc/cpuinfo`` read (tests that fake it)."""
    _proc_cpu_flags.cache_clear()
