"""The AVX512-BF16 attention kernel against a float64 reference, and its fallbacks to SDPA."""
from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F

from transunet_app import capabilities
from transunet_app.kernels import attention as fa

SHAPES = [(8, 12, 196, 64), (2, 3, 1, 64), (1, 2, 17, 32), (2, 4, 50, 64), (1, 1, 197, 128)]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Compile into a fresh directory (not the user's cache) and forget the probe afterwards."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRANSUNET_APP_CACHE", str(tmp_path_factory.mktemp("kernel_cache")))
    mp.delenv(fa.ENV_SWITCH, raising=False)
    fa.clear_caches()
    yield
    mp.undo()
    fa.clear_caches()


@pytest.fixture
def kernel():
    if not fa.kernel_available():
        pytest.skip(f"attention kernel unavailable: {fa.unavailable_reason()}")


def qkv_inputs(shape, score_std=1.0, layout="qkv", seed=0):
    """q, k, v of ``shape`` (B, H, N, D) bf16 whose scores q.k/sqrt(D) have std ~score_std:
    permuted views of one (B, N, 3, H, D) tensor as the models make them, or contiguous."""
    B, H, N, D = shape
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, N, 3, H, D, generator=g)
    qkv[:, :, :2] *= score_std ** 0.5
    qkv = qkv.bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    if layout == "contiguous":
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return q, k, v


def reference(q, k, v, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    w = torch.softmax(q.double() @ k.double().transpose(-2, -1) * scale, dim=-1)
    return w @ v.double()


def rel_error(out, ref):
    """Max absolute error over the max magnitude of the reference."""
    return float((out.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("layout", ["qkv", "contiguous"])
@pytest.mark.parametrize("score_std", [1.0, 10.0])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_accuracy_against_float64(kernel, shape, score_std, layout):
    q, k, v = qkv_inputs(shape, score_std, layout)
    ref = reference(q, k, v)
    out = fa.attention(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and out.is_contiguous()
    ours, sdpa = rel_error(out, ref), rel_error(F.scaled_dot_product_attention(q, k, v), ref)
    assert ours <= 1.5 * sdpa and ours <= 5e-3, (ours, sdpa)


@pytest.mark.parametrize("scale", [0.05, 0.3, -0.125])
def test_custom_scale(kernel, scale):
    q, k, v = qkv_inputs((2, 4, 50, 64), 4.0)
    ref = reference(q, k, v, scale)
    ours = rel_error(fa.attention(q, k, v, scale=scale), ref)
    sdpa = rel_error(F.scaled_dot_product_attention(q, k, v, scale=scale), ref)
    assert ours <= 1.5 * sdpa and ours <= 5e-3, (ours, sdpa)


@pytest.mark.parametrize("shape", [(2, 2, 33, 46), (1, 3, 70, 256), (1, 1, 5, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_other_head_dims(kernel, shape):
    """D not a multiple of 32 (masked columns) and the largest D."""
    q, k, v = qkv_inputs(shape, 1.0)
    ref = reference(q, k, v)
    ours, sdpa = rel_error(fa.attention(q, k, v), ref), rel_error(F.scaled_dot_product_attention(q, k, v), ref)
    assert ours <= 1.5 * sdpa and ours <= 5e-3, (ours, sdpa)


def test_padded_keys_get_no_weight(kernel):
    """Keys beyond N (the packed tail of the last block of 16) must not enter the softmax: with
    all real scores very negative, a zero score of a padded key would dominate."""
    q, k, v = qkv_inputs((1, 2, 17, 32), 1.0)
    q = -q.abs() * 8
    k = k.abs() * 8
    ref = reference(q, k, v)
    out = fa.attention(q, k, v)
    assert torch.isfinite(out).all()
    assert rel_error(out, ref) <= 5e-3


def test_out_into_token_buffer(kernel):
    """``out=`` a (B, H, N, D) view of a (B, N, H*D) buffer: written in place, same bits."""
    B, H, N, D = 2, 4, 50, 64
    q, k, v = qkv_inputs((B, H, N, D), 1.0)
    buf = torch.full((B, N, H * D), float("nan"), dtype=torch.bfloat16)
    view = buf.view(B, N, H, D).transpose(1, 2)
    res = fa.attention(q, k, v, out=view)
    assert res.data_ptr() == buf.data_ptr()
    assert torch.equal(buf, fa.attention(q, k, v).transpose(1, 2).reshape(B, N, H * D))


def test_threads_give_the_same_bits(kernel):
    q, k, v = qkv_inputs((3, 5, 60, 64), 1.0)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fa.attention(q, k, v)
        torch.set_num_threads(2)
        two = fa.attention(q, k, v)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, two)


def test_two_python_threads(kernel):
    """Two Python threads: the same bits as sequential calls, and the calls overlap in time
    (ctypes releases the GIL: with it held, two calls could never be in flight at once)."""
    inputs = [qkv_inputs((8, 12, 196, 64), 1.0, seed=s) for s in (1, 2)]
    expected = [fa.attention(*x) for x in inputs]
    results: dict[int, list] = {0: [], 1: []}
    spans: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        for _ in range(6):
            t0 = time.perf_counter()
            results[i].append(fa.attention(*inputs[i]))
            spans[i].append((t0, time.perf_counter()))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(results[i]) == 6 and all(torch.equal(r, expected[i]) for r in results[i])
    assert any(a0 < b1 and b0 < a1 for a0, a1 in spans[0] for b0, b1 in spans[1])


# ---- fallbacks: the result of scaled_dot_product_attention, bit for bit ----


def test_fallback_float32():
    q, k, v = (t.float() for t in qkv_inputs((2, 3, 20, 32)))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_fallback_requires_grad():
    q, k, v = (t.clone().requires_grad_() for t in qkv_inputs((2, 3, 20, 32)))
    out = fa.attention(q, k, v)
    assert out.requires_grad
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    out.float().sum().backward()
    assert q.grad is not None


def test_fallback_odd_head_dim():
    q, k, v = qkv_inputs((1, 2, 9, 33))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_fallback_env_switch(monkeypatch):
    q, k, v = qkv_inputs((2, 3, 50, 64), 10.0)
    monkeypatch.setenv(fa.ENV_SWITCH, "0")
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    buf = torch.empty(2, 50, 3 * 64, dtype=torch.bfloat16)
    fa.attention(q, k, v, out=buf.view(2, 50, 3, 64).transpose(1, 2))
    assert torch.equal(buf, F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 50, -1))
    assert "disabled" in fa.describe()


@pytest.fixture
def fresh_probe(monkeypatch, tmp_path):
    """An empty cache directory and a forgotten probe; the probe is forgotten again afterwards."""
    monkeypatch.setenv("TRANSUNET_APP_CACHE", str(tmp_path / "cache"))
    fa.clear_caches()
    yield tmp_path
    fa.clear_caches()


#: /proc/cpuinfo flags of a CPU the kernels run on: the fallback tests fake them, so they check
#: the fallback's reason on every machine (AVX2-only ones too).
KERNEL_CPU = frozenset("fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512dq avx512_bf16".split())


def test_fallback_no_compiler(monkeypatch, fresh_probe):
    monkeypatch.setattr(capabilities, "_proc_cpu_flags", lambda: KERNEL_CPU)
    monkeypatch.delenv(capabilities.PORTABLE_ENV, raising=False)
    monkeypatch.setattr(capabilities, "COMPILER_NAMES", ("no-such-compiler-xyz",))
    assert fa.kernel_available() is False
    assert "no C compiler" in fa.unavailable_reason()
    assert "unavailable" in fa.describe()
    q, k, v = qkv_inputs((2, 3, 50, 64))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_fallback_compile_error(monkeypatch, fresh_probe):
    bad = fresh_probe / "bad.c"
    bad.write_text('#error "deliberately broken"\n')
    monkeypatch.setattr(fa._kernel, "source", bad)
    monkeypatch.setattr(capabilities, "_proc_cpu_flags", lambda: KERNEL_CPU)
    monkeypatch.delenv(capabilities.PORTABLE_ENV, raising=False)
    if capabilities.compiler() is None:
        pytest.skip("no C compiler on this machine (the compile error needs one)")
    assert fa.kernel_available() is False
    assert "deliberately broken" in fa.unavailable_reason()
    assert not list((fresh_probe / "cache").glob("*.so")), "no half-written library left behind"
    q, k, v = qkv_inputs((1, 2, 17, 32))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("name", ["tiny", "ViT-B_16"])
def test_bf16_inference_models_run_the_kernel(kernel, monkeypatch, name):
    """The prepared bf16 model's attention goes through the kernel (written straight into the
    projection's (B, N, C) input) and gives SDPA's result to bf16 rounding; float32 and
    autograd keep their paths."""
    from transunet_app.fast_layers import attention as fast_attention
    from transunet_app.inference.optimize import prepare_for_inference
    from transunet_app.models import build_model, layers

    torch.manual_seed(0)
    size = 64 if name == "tiny" else 32
    net = prepare_for_inference(build_model(name, 9, img_size=size).eval(), torch.device("cpu"),
                                "bf16")
    x = torch.rand(2, 1, size, size).contiguous(memory_format=torch.channels_last)
    calls = []

    def counted(q, k, v, scale=None, out=None):
        calls.append((q.dtype, out is not None and fa._kernel_takes(q, k, v, out)))
        return fa.attention(q, k, v, scale=scale, out=out)

    monkeypatch.setattr(fast_attention, "kernel_attention", counted)
    with torch.inference_mode():
        fast = net(x.to(net.input_dtype)).double()
    n_blocks = sum(1 for m in net.modules() if isinstance(m, layers.Attention))
    assert n_blocks and calls == [(torch.bfloat16, True)] * n_blocks
    monkeypatch.setenv(fa.ENV_SWITCH, "0")
    with torch.inference_mode():
        sdpa = net(x.to(net.input_dtype)).double()
    # measured 3e-4 (tiny) and 2e-5 (ViT-B_16): only the summation order differs from SDPA
    assert ((fast - sdpa).norm() / sdpa.norm()) < 3e-3


def test_fallback_cpu_without_avx512_bf16(monkeypatch, fresh_probe):
    """An AVX2-only CPU (faked): the kernel is not built, SDPA answers, the reason names the
    missing extensions."""
    monkeypatch.setattr(capabilities, "_proc_cpu_flags",
                        lambda: frozenset("fpu sse2 avx avx2 fma f16c".split()))
    assert fa.kernel_available() is False
    assert "CPU lacks avx512f" in fa.unavailable_reason()
    assert not (fresh_probe / "cache").exists(), "nothing compiled"
    q, k, v = qkv_inputs((2, 3, 50, 64))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_fallback_portable_mode(monkeypatch, fresh_probe):
    monkeypatch.setenv(capabilities.PORTABLE_ENV, "1")
    assert fa.kernel_available() is False
    assert "CPU lacks" in fa.unavailable_reason()
    q, k, v = qkv_inputs((1, 2, 17, 32))
    assert torch.equal(fa.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
