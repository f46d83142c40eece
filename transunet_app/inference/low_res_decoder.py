"""Decoder blocks whose upsampled input is convolved at low resolution (bf16 CPU inference).

A TransUNet decoder block computes ``relu(conv3x3(cat(up2(x), skip)) + b)`` (BatchNorm
folded) with ``up2`` the bilinear x2 upsampling. The convolution splits by input channels
into a part over ``up2(x)`` and a part over ``skip``, and the first part equals
``sum_t shift_t(up2(W_t x))`` (:mod:`transunet_app.kernels.upsampled_taps`): the nine taps'
1x1 convolutions run on the low-resolution map, a quarter of that part's multiply-adds.
For R50-ViT-B_16 that is 4.9 of the decoder's 15.6 GFLOP per slice removed, and the
upsampled x and the concatenation are never built.

Numerics: the taps' maps and their upsampled sum are each rounded to bf16 once (the plain
block rounds only its output), the bias is added in float32 before the sum's rounding; the
skip's convolution accumulates the sum in float32 inside oneDNN and applies the ReLU.
Measured on a trained model with ``tools/bench/check_bf16_agreement.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels.upsampled_taps import kernel_available, upsampled_taps
from ..models.decoder import Conv2dReLU, DecoderBlock, DecoderCup
from .onednn import OneDNNConv2d


class LowResolutionUpConvBlock(nn.Module):
    """A prepared :class:`~transunet_app.models.decoder.DecoderBlock` computed as above.

    Args:
        block: a bf16 block whose ``upsampled_unit`` is a fused oneDNN 3x3 convolution with
            ReLU (BatchNorm folded) and ``output_unit`` anything.

    Forward: (B, Cin, h, w) [+ skip (B, Cs, 2h, 2w)] -> (B, Cout, 2h, 2w), as the block.
    """

    def __init__(self, block: DecoderBlock):
        super().__init__()
        conv = block.upsampled_unit.conv
        w = conv.weight  # (Cout, Cup + Cs, 3, 3) bf16, channels-last
        cout = w.shape[0]
        self.skip_channels = block.skip_channels
        up_channels = w.shape[1] - self.skip_channels
        taps = nn.Conv2d(up_channels, 9 * cout, 1, bias=False, device="meta")
        # tap t = ky*3 + kx holds output channels t*Cout .. t*Cout + Cout - 1
        taps.weight = nn.Parameter(w[:, :up_channels].permute(2, 3, 0, 1)
                                   .reshape(9 * cout, up_channels, 1, 1), requires_grad=False)
        self.taps = OneDNNConv2d(taps)
        self.register_buffer("bias", conv.bias, persistent=False)
        self.register_buffer("skip_weight", w[:, up_channels:].contiguous(
            memory_format=torch.channels_last) if self.skip_channels else None, persistent=False)
        self.conv2 = block.output_unit

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        up = upsampled_taps(self.taps(x), (2 * h, 2 * w), self.bias, relu=not self.skip_channels)
        if self.skip_channels:
            skip = skip.contiguous(memory_format=torch.channels_last)
            up = torch.ops.mkldnn._convolution_pointwise.binary(
                skip, up, self.skip_weight, None, [1, 1], [1, 1], [1, 1], 1, "add", 1.0, "relu",
                [], "")
        return self.conv2(up)

    def extra_repr(self) -> str:
        return f"skip_channels={self.skip_channels}"


def _convertible(block: nn.Module) -> bool:
    if type(block) is not DecoderBlock or not isinstance(block.upsampled_unit, Conv2dReLU):
        return False
    conv = block.upsampled_unit.conv
    rest_identity = all(isinstance(m, nn.Identity) for m in block.upsampled_unit.after_conv())
    return (isinstance(conv, OneDNNConv2d) and conv.attr == "relu" and rest_identity
            and conv.weight.dtype == torch.bfloat16 and tuple(conv.weight.shape[-2:]) == (3, 3)
            and conv.padding == [1, 1] and conv.stride == [1, 1] and conv.dilation == [1, 1]
            and conv.groups == 1 and conv.bias is not None and conv.out_channels % 16 == 0)


def lower_decoder_upsampling(model: nn.Module) -> int:
    """Replace the convertible blocks of every :class:`DecoderCup` in ``model`` (a prepared
    bf16 CPU model, after :func:`~transunet_app.inference.onednn.fuse_for_onednn`) in place;
    returns how many. Nothing changes where the C kernel is unavailable."""
    if not kernel_available():
        return 0
    count = 0
    for cup in [m for m in model.modules() if isinstance(m, DecoderCup)]:
        for i, block in enumerate(cup.blocks):
            if _convertible(block):
                cup.blocks[i] = LowResolutionUpConvBlock(block)
                count += 1
    return count
