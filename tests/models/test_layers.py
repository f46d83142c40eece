"""Shared layers: the channels-last GroupNorm fast path equals torch's GroupNorm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transunet_app.models.layers import GroupNorm, channels_last_group_norm


def _norm(groups, channels, dtype, eps=1e-6):
    torch.manual_seed(0)
    gn = GroupNorm(groups, channels, eps=eps).to(dtype)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    return gn


# (shape, groups): per-channel norm (TransUNet's projection GN), few channels per group, and a
# non-square map; all below 1024 pixels, where the fast path applies.
CASES = [((3, 64, 14, 14), 64), ((2, 128, 7, 9), 32), ((2, 32, 28, 28), 32)]


@pytest.mark.parametrize("shape,groups", CASES)
def test_channels_last_group_norm_equals_torch_in_float64(shape, groups):
    gn = _norm(groups, shape[1], torch.float64)
    # a large common offset per channel: E[x^2] - mean^2 must still be accurate
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 10).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        fast = gn(x)
        ref = F.group_norm(x.contiguous(), groups, gn.weight, gn.bias, gn.eps)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,groups", CASES)
def test_channels_last_group_norm_in_bf16_is_as_accurate_as_torch(shape, groups):
    gn = _norm(groups, shape[1], torch.float32)
    x = (torch.randn(shape) * 2 + 3).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = gn(x)
        native = F.group_norm(x, groups, gn.weight, gn.bias, gn.eps)
        exact = F.group_norm(x.double(), groups, gn.weight.double(), gn.bias.double(), gn.eps)
    assert fast.dtype == torch.bfloat16
    err_fast = (fast.double() - exact).abs().max()
    err_native = (native.double() - exact).abs().max()
    assert err_fast <= 1.5 * err_native + 1e-6


def test_group_norm_layer_with_autograd_gets_gradients():
    gn = _norm(16, 16, torch.float64)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gn(t), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape,groups", [((2, 8, 5, 6), 4), ((2, 6, 4, 4), 6), ((1, 4, 3, 5), 1)])
def test_channels_last_group_norm_gradients_in_float64(shape, groups):
    """The analytic backward against finite differences, for input, weight and bias."""
    gn = _norm(groups, shape[1], torch.float64)
    gn.weight.requires_grad_(); gn.bias.requires_grad_()
    x = (torch.randn(shape, dtype=torch.float64) + 2).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, w, b: channels_last_group_norm(t, groups, w, b, 1e-6),
                                    (x, gn.weight, gn.bias))


def test_channels_last_group_norm_gradients_equal_torch_in_bf16():
    gn = _norm(32, 128, torch.float32)
    x0 = (torch.randn(2, 128, 14, 14) * 2 + 1).bfloat16().contiguous(memory_format=torch.channels_last)
    g = torch.randn(x0.shape).bfloat16().contiguous(memory_format=torch.channels_last)
    grads = []
    for fn in (lambda t: channels_last_group_norm(t, 32, gn.weight, gn.bias, gn.eps),
               lambda t: F.group_norm(t.double(), 32, gn.weight.double(), gn.bias.double(), gn.eps)):
        x = x0.clone().requires_grad_()
        gn.weight.grad = gn.bias.grad = None
        fn(x).backward(g.to(torch.float64) if fn(x0).dtype == torch.float64 else g)
        grads.append((x.grad.double(), gn.weight.grad.double().clone(), gn.bias.grad.double().clone()))
    for ours, exact in zip(*grads):
        assert ((ours - exact).abs().max() / exact.abs().max()) < 1e-2
