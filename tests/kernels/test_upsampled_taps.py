"""The low-resolution form of a convolution of an upsampled map, and its C kernel."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transunet_app.kernels import upsampled_taps as ut


def tap_weights(w: torch.Tensor) -> torch.Tensor:
    """(C, Cin, 3, 3) -> the nine taps as one 1x1 conv weight (9*C, Cin, 1, 1), tap-major."""
    c, cin = w.shape[:2]
    return w.permute(2, 3, 0, 1).reshape(9 * c, cin, 1, 1)


@pytest.mark.parametrize("shape", [(2, 8, 7, 5), (1, 3, 1, 4), (1, 4, 14, 14), (2, 5, 2, 2)])
def test_convolution_of_upsampled_map_equals_low_resolution_taps(shape):
    """conv3x3(up2(x)) == sum_t shift_t(up2(W_t x)) in float64 (the identity the decoder uses)."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    w = torch.randn(6, shape[1], 3, 3, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    for relu in (False, True):
        ref = F.conv2d(up, w, bias, padding=1)
        ref = ref.relu() if relu else ref
        low = ut.upsampled_taps_reference(F.conv2d(x, tap_weights(w)), up.shape[-2:], bias, relu)
        assert (low - ref).abs().max() <= 1e-12 * ref.abs().max()


@pytest.fixture
def kernel():
    if not ut.kernel_available():
        pytest.skip(f"upsampled_taps kernel unavailable: {ut.unavailable_reason()}")


@pytest.mark.parametrize("shape, size", [((2, 9 * 16, 7, 5), None), ((3, 9 * 256, 14, 14), None),
                                         ((1, 9 * 64, 56, 56), None), ((2, 9 * 144, 5, 9), None),
                                         ((1, 9 * 16, 1, 3), None), ((2, 9 * 32, 9, 6), (17, 6)),
                                         ((1, 9 * 16, 4, 4), (31, 9))])
@pytest.mark.parametrize("relu", [False, True])
def test_kernel_rounds_the_exact_sum_once(kernel, shape, size, relu):
    torch.manual_seed(1)
    z = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last)
    c = shape[1] // 9
    bias = torch.randn(c)
    size = size or (2 * shape[2], 2 * shape[3])
    assert ut.kernel_takes(z, size)
    out = ut.upsampled_taps(z, size, bias, relu)
    assert out.dtype == torch.bfloat16 and out.shape == (shape[0], c, *size)
    assert out.is_contiguous(memory_format=torch.channels_last)
    exact = ut.upsampled_taps_reference(z.double(), size, bias.double(), relu)
    # one bf16 rounding (at most half a unit in the 8th significant bit: 2^-8 relative) of a
    # float32 sum of 37 terms (cancellation leaves ~2e-6 of the largest value where the sum
    # is near zero)
    err = (out.double() - exact).abs()
    assert (err <= 2.0 ** -8 * exact.abs() + 1e-5 * exact.abs().max()).all()
    assert err.max() > 0  # it did round: the check above is not vacuous


def test_kernel_is_deterministic_across_threads(kernel):
    z = torch.randn(2, 9 * 64, 28, 28).bfloat16().contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ut.upsampled_taps(z, (56, 56))
        torch.set_num_threads(2)
        two = ut.upsampled_taps(z, (56, 56))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_other_inputs_take_the_reference():
    z = torch.randn(1, 9 * 6, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last)
    assert not ut.kernel_takes(z, (8, 8))  # 6 channels: not a multiple of 16
    out = ut.upsampled_taps(z, (8, 8))
    assert torch.equal(out, ut.upsampled_taps_reference(z, (8, 8)))
    z32 = torch.randn(1, 9 * 16, 4, 4)
    assert not ut.kernel_takes(z32, (8, 8))
    assert torch.allclose(ut.upsampled_taps(z32, (8, 8)), ut.upsampled_taps_reference(z32, (8, 8)))


def test_downsampling_takes_the_reference():
    """The kernel's row ring assumes upsampling; a smaller output goes to the reference."""
    z = torch.randn(1, 9 * 16, 12, 10).bfloat16().contiguous(memory_format=torch.channels_last)
    assert not ut.kernel_takes(z, (5, 10))
    assert torch.equal(ut.upsampled_taps(z, (5, 10)),
                       ut.upsampled_taps_reference(z, (5, 10)).contiguous(memory_format=torch.channels_last))
