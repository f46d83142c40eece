"""A test-side pass for float64 fidelity runs: depthwise convolutions as ``unfold`` + ``einsum``.

PyTorch's CPU float64 grouped convolution falls back to a loop over channels (and batch): a
384-channel 4x6 map at batch 2 takes seconds, and the CvT / CeiT goldens run dozens of them.
``unfold`` + ``einsum`` is the same sum (equal to rounding), fast in float64. Only the float64
fidelity tests need it, so it lives here; the product's depthwise convolution is plain torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transunet_app.fast_layers import swap_layers
from transunet_app.models.layers import DepthwiseConv2d


class Float64DepthwiseConv2d(DepthwiseConv2d):
    """:class:`DepthwiseConv2d` whose float64 forward is ``unfold`` + ``einsum`` (same sum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float64 or self.padding_mode != "zeros":
            return super().forward(x)
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), dilation=self.dilation, padding=(ph, pw), stride=(sh, sw))
        y = torch.einsum("bckl,ck->bcl", cols.view(b, c, kh * kw, ho * wo),
                         self.weight.view(c, kh * kw))
        if self.bias is not None:
            y = y + self.bias.view(1, c, 1)
        return y.view(b, c, ho, wo)


def float64(model: nn.Module) -> nn.Module:
    """``model`` in float64 with its depthwise convolutions in the fast float64 form (in place)."""
    swap_layers(model, DepthwiseConv2d, Float64DepthwiseConv2d)
    return model.double()
