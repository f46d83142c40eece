"""Every fast-path decision comes from transunet_app.capabilities: the CPU probe is faked here,
so each CPU class is checked on every machine."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transunet_app import capabilities
from transunet_app.errors import UserError
from transunet_app.inference.optimize import fuse_on_this_cpu
from transunet_app.inference.pipeline import resolve_device
from transunet_app.inference.precision import precision_warning, resolve_precision

CPU = torch.device("cpu")
_real_probe = capabilities._torch_sees_avx512

SAPPHIRE_RAPIDS = "fpu avx2 fma avx512f avx512bw avx512vl avx512dq avx512_bf16 amx_bf16 amx_tile"
ZEN5 = "fpu avx2 fma avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni avx_vnni"
SKYLAKE_SP = "fpu avx2 fma avx512f avx512bw avx512vl avx512dq"
ZEN3 = "fpu sse2 avx avx2 fma f16c bmi2"


@pytest.fixture
def cpu(monkeypatch):
    """Fake /proc/cpuinfo flags: ``cpu("avx2 fma")``."""
    monkeypatch.delenv(capabilities.PORTABLE_ENV, raising=False)

    def fake(flags: str):
        monkeypatch.setattr(capabilities, "_proc_cpu_flags", lambda: frozenset(flags.split()))
        monkeypatch.setattr(capabilities, "_torch_sees_avx512", lambda: "avx512f" in flags)

    return fake


@pytest.mark.parametrize("flags, klass, hw, auto", [
    (SAPPHIRE_RAPIDS, "AMX", "AMX", "bf16"),
    (ZEN5, "AVX512-BF16", "AVX512-BF16", "bf16"),
    (SKYLAKE_SP, "AVX-512", "none", "fp32"),   # AVX-512 but bf16 emulated
    (ZEN3, "AVX2", "none", "fp32"),
    ("", "baseline", "none", "fp32"),           # no /proc/cpuinfo
])
def test_cpu_classes(cpu, flags, klass, hw, auto):
    cpu(flags)
    assert capabilities.cpu_class() == klass
    assert capabilities.bf16_hardware() == hw
    assert resolve_precision("auto", CPU) == auto
    assert resolve_precision("fp32", CPU) == "fp32"


@pytest.mark.parametrize("flags, c_kernels, fp32_pass", [
    (SAPPHIRE_RAPIDS, True, True), (ZEN5, True, True), (SKYLAKE_SP, False, True),
    (ZEN3, False, False)])
def test_fast_path_decisions_follow_the_cpu(cpu, flags, c_kernels, fp32_pass):
    cpu(flags)
    have_cc = capabilities.compiler() is not None
    assert bool(capabilities.c_kernels()) is (c_kernels and have_cc)
    if capabilities.onednn():
        assert bool(fuse_on_this_cpu("fp32")) is fp32_pass
        assert bool(capabilities.onednn_fp32()) is fp32_pass
    assert not fuse_on_this_cpu("fp16")
    if not c_kernels:
        assert "CPU lacks" in capabilities.c_kernels().why


def test_portable_mode_answers_as_an_avx2_cpu(cpu, monkeypatch):
    cpu(ZEN5)
    monkeypatch.setenv(capabilities.PORTABLE_ENV, "1")
    assert capabilities.cpu_class() == "AVX2 (portable mode)"
    assert capabilities.bf16_hardware() == "none"
    assert not capabilities.cpu_flags() & {"avx512f", "avx512_bf16", "avx_vnni"}
    assert "avx2" in capabilities.cpu_flags()
    assert capabilities.compiler() is None
    for decision in (capabilities.native_bf16(), capabilities.onednn_bf16(),
                     capabilities.onednn_fp32(), capabilities.c_kernels()):
        assert not decision, decision.line()
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setenv(capabilities.PORTABLE_ENV, "0")
    assert capabilities.cpu_class() == "AVX512-BF16"


def test_torch_probe_overrides_proc_cpuinfo(cpu, monkeypatch):
    """qemu-user -cpu Haswell passes the host's /proc/cpuinfo through: torch's CPUID probe
    (AVX2) wins, so no AVX-512 kernel is chosen."""
    cpu(ZEN5)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(capabilities, "_torch_sees_avx512", _real_probe)
    assert capabilities.cpu_class() == "AVX2"
    assert not capabilities.c_kernels() and capabilities.bf16_hardware() == "none"


def test_onednn_bf16_is_asked_of_torch(cpu, monkeypatch):
    cpu(ZEN3)
    if not capabilities.onednn():
        pytest.skip("torch built without oneDNN")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    d = capabilities.onednn_bf16()
    assert not d and "no bf16 path" in d.why
    assert not fuse_on_this_cpu("bf16")


def test_precision_warnings(cpu):
    cpu(ZEN3)
    note = precision_warning("bf16", CPU)
    assert note.startswith("--precision bf16:") and "no bf16 hardware" in note and "\n" not in note
    assert "fp16" in precision_warning("fp16", CPU)
    assert precision_warning("fp32", CPU) is None
    cpu(ZEN5)
    assert precision_warning("bf16", CPU) is None
    assert precision_warning("bf16", torch.device("cuda")) is None
    with pytest.raises(UserError, match="--precision"):
        resolve_precision("int8", CPU)


def test_train_amp_warning_names_the_config_key(cpu):
    from transunet_app.engine.trainer import amp_warning, resolve_amp

    cpu(ZEN3)
    assert amp_warning("bf16", CPU).startswith("train.amp=bf16:")
    assert "train.amp=auto" in amp_warning("bf16", CPU)
    assert amp_warning("auto", CPU) is None and resolve_amp("auto", CPU) is None
    assert resolve_amp("bf16", CPU) is torch.bfloat16
    cpu(ZEN5)
    assert resolve_amp("auto", CPU) is torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "auto"])
def test_cuda_device_without_cuda(name):
    if name == "auto":
        assert resolve_device("auto") == CPU
        return
    with pytest.raises(UserError, match=f"--device {name}: no CUDA GPU") as exc:
        resolve_device(name)
    assert "\n" not in str(exc.value)


def test_cpu_flags_read_from_cpuinfo(monkeypatch):
    path = Path("/proc/cpuinfo")
    if not path.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    monkeypatch.delenv(capabilities.PORTABLE_ENV, raising=False)
    line = next(ln for ln in path.read_text().splitlines() if ln.startswith("flags"))
    capabilities.clear()
    assert capabilities.cpu_flags() == frozenset(line.partition(":")[2].split())


def test_info_prints_every_decision(capsys, monkeypatch):
    from transunet_app.cli import main

    monkeypatch.setenv(capabilities.PORTABLE_ENV, "1")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("bf16 hardware: no", "oneDNN bf16: no", "oneDNN fp32 packing: no", "C kernels: no",
                 "CUDA:", "precision auto on CPU: fp32", "AVX2 (portable mode)"):
        assert name in out, name
