"""Decoder blocks that convolve their upsampled input at low resolution (bf16 CPU inference)."""
from __future__ import annotations

import pytest
import torch

from transunet_app.inference import low_res_decoder
from transunet_app.inference.low_res_decoder import LowResolutionUpConvBlock
from transunet_app.inference.optimize import prepare_for_inference
from transunet_app.kernels import upsampled_taps
from transunet_app.models import build_model
from transunet_app.models.decoder import DecoderBlock

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not upsampled_taps.kernel_available(),
                                reason=f"kernel unavailable: {upsampled_taps.unavailable_reason()}")


def _pair(name, size):
    torch.manual_seed(0)
    model = build_model(name, 9, img_size=size).eval()
    low = prepare_for_inference(model, CPU, "bf16", copy_model=True)
    plain = prepare_for_inference(model, CPU, "bf16", copy_model=True, low_res_decoder=False)
    f32 = prepare_for_inference(model, CPU, "fp32", copy_model=True)
    return low, plain, f32


@pytest.mark.parametrize("name, size, converted", [("R50-ViT-B_16", 64, 4), ("tiny", 64, 3),
                                                     ("Conformer-Ti", 64, 4)])
def test_low_resolution_blocks_compute_the_same_model(name, size, converted):
    low, plain, f32 = _pair(name, size)
    kinds = [type(b) for b in low.decoder.blocks]
    assert kinds.count(LowResolutionUpConvBlock) == converted
    assert all(type(b) is DecoderBlock for b in plain.decoder.blocks)
    assert not any(isinstance(b, LowResolutionUpConvBlock) for b in f32.decoder.blocks)
    x = torch.rand(2, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b, ref = low(x).double(), plain(x).double(), f32(x).double()
    assert a.shape == b.shape == (2, 9, size, size)
    # the two bf16 models differ by less than bf16's own error, and the low-resolution one is
    # no farther from float32 (measured, random weights: 0.70-0.96x and 0.96-1.02x)
    err_plain = (b - ref).norm() / ref.norm()
    assert ((a - b).norm() / b.norm()) < err_plain
    assert ((a - ref).norm() / ref.norm()) < 1.1 * err_plain


def test_blocks_keep_their_declarations():
    low, _, _ = _pair("R50-ViT-B_16", 64)
    assert [b.skip_channels for b in low.decoder.blocks] == [512, 256, 64, 0]


def test_nothing_changes_without_the_kernel(monkeypatch):
    monkeypatch.setattr(low_res_decoder, "kernel_available", lambda: False)
    model = prepare_for_inference(build_model("tiny", 9, img_size=64).eval(), CPU, "bf16")
    assert all(type(b) is DecoderBlock for b in model.decoder.blocks)
