"""GroupNorm (+ residual) (+ ReLU) of channels-last bf16 maps: the C kernel against float64."""
from __future__ import annotations

import pytest
import torch

from transunet_app.kernels import group_norm as gk

CL = torch.channels_last


@pytest.fixture
def kernel():
    if not gk.kernel_available():
        pytest.skip(f"group_norm kernel unavailable: {gk.unavailable_reason()}")


@pytest.mark.parametrize("shape, groups", [((2, 64, 11, 9), 32), ((3, 256, 7, 7), 256),
                                           ((1, 32, 1, 2), 32), ((2, 128, 5, 13), 4)])
@pytest.mark.parametrize("residual, relu", [(False, False), (False, True), (True, True)])
@pytest.mark.parametrize("offset", [0.0, 100.0])  # mean 100 std 1: no cancellation allowed
def test_kernel_rounds_the_exact_result_once(kernel, shape, groups, residual, relu, offset):
    if offset and shape[2] * shape[3] * shape[1] // groups < 32:
        pytest.skip("a few bf16 values near 100 (spacing 0.5) may all be equal: the exact "
                    "result then depends on the rounding of the input, not on the kernel")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) + offset).bfloat16().contiguous(memory_format=CL)
    res = torch.randn(shape, generator=g).bfloat16().contiguous(memory_format=CL) if residual else None
    w = torch.randn(shape[1], generator=g).bfloat16()
    b = torch.randn(shape[1], generator=g).bfloat16()
    assert gk.kernel_takes(x, groups, res)
    out = gk.group_norm(x, groups, w, b, 1e-6, res, relu)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=CL)
    exact = gk.group_norm_reference(x.double(), groups, w.double(), b.double(), 1e-6,
                                    None if res is None else res.double(), relu)
    err = (out.double() - exact).abs()
    assert (err <= 2.0 ** -8 * exact.abs() + 1e-5 * exact.abs().max()).all(), err.max()


def test_kernel_is_deterministic_across_threads(kernel):
    x = torch.randn(4, 64, 20, 20).bfloat16().contiguous(memory_format=CL)
    w, b = torch.ones(64), torch.zeros(64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gk.group_norm(x, 32, w, b, 1e-5, relu=True)
        torch.set_num_threads(2)
        two = gk.group_norm(x, 32, w, b, 1e-5, relu=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_constant_groups_give_beta(kernel):
    """Zero variance: every output is beta exactly (no cancellation of large terms)."""
    x = torch.full((2, 32, 3, 5), 100.5).bfloat16().contiguous(memory_format=CL)
    w = torch.randn(32).bfloat16()
    b = torch.randn(32).bfloat16()
    out = gk.group_norm(x, 8, w, b, 1e-6)
    assert torch.equal(out, b.view(1, 32, 1, 1).expand_as(out))


def test_one_value_per_group_is_refused_as_torch_refuses_it():
    x = torch.randn(1, 32, 1, 1).bfloat16().contiguous(memory_format=CL)
    assert not gk.kernel_takes(x, 32)
    with pytest.raises(ValueError, match="more than 1 value"):
        gk.group_norm(x, 32, torch.ones(32).bfloat16(), torch.zeros(32).bfloat16(), 1e-5)


@pytest.mark.parametrize("case", ["float32", "channels 24", "NCHW", "requires grad"])
def test_other_inputs_take_torch(case):
    x = torch.randn(2, 24 if case == "channels 24" else 32, 6, 6)
    x = x if case == "float32" else x.bfloat16()
    if case != "NCHW":
        x = x.contiguous(memory_format=CL)
    w, b = torch.randn(x.shape[1]), torch.randn(x.shape[1])
    if case == "requires grad":
        x.requires_grad_()
    assert not gk.kernel_takes(x, 8)
    w, b = w.to(x.dtype), b.to(x.dtype)
    out = gk.group_norm(x, 8, w, b, 1e-5, relu=True)
    assert torch.equal(out, gk.group_norm_reference(x, 8, w, b, 1e-5, relu=True))
