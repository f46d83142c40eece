"""Labels of bilinearly upsampled class scores, without the full-size float map.

``segment`` places class boundaries at the slice's own resolution by resizing the model's
scores, not its labels: ``F.interpolate(scores, (H, W), mode="bilinear", align_corners=True)``
then an argmax over classes. For a batch of 8 slices, 9 classes, 224 -> 512 that writes and
reads back a (8, 9, 512, 512) float32 map, a tenth of the bf16 forward's time (BENCHMARKS.md).

Bilinear interpolation is a convex combination of the 4 source pixels around an output pixel.
If those 4 pixels have the same argmax ``k`` (their scores for ``k`` at least those for any
later class and greater than those for any earlier one), the combination does too: the
upsampled label is ``k`` without computing anything. So: argmax on the source grid, find the
source cells whose 4 corners agree, copy their label to the output pixels inside them (one
byte gather), and interpolate + argmax the scores only at output pixels in cells whose
corners disagree: organ boundaries, ~2-3% of the pixels of an abdominal slice.

Equal to interpolate + argmax except where two classes tie to float rounding (the boundary
pixels are interpolated with torch's formula and weights, in the scores' dtype; the exact-arithmetic
argument can differ from the rounded kernel only for scores equal to ~1e-7 relative).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import upsampled_argmax as native

#: Above this share of source cells with disagreeing corners the plain path is cheaper (the
#: exact path's cost per disagreeing pixel against interpolate + argmax for every pixel breaks
#: even near 11%: tools/bench/bench_upsampled_argmax.py, BENCHMARKS.md).
MAX_UNSURE = 0.08


def _source_coordinates(n_in: int, n_out: int):
    """torch's ``align_corners=True`` sampling of one axis (``upsample_bilinear2d``, CPU):
    lower source index, upper source index and the upper one's weight, per output index."""
    scale = torch.tensor((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, dtype=torch.float32)
    src = scale * torch.arange(n_out, dtype=torch.float32)
    lo = src.to(torch.int64).clamp_(max=n_in - 1)
    hi = (lo + 1).clamp_(max=n_in - 1)
    return lo, hi, src - lo


def _interpolated_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=True).argmax(1).to(torch.uint8)


def upsampled_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(scores, size, mode="bilinear", align_corners=True).argmax(1)``.

    Args:
        scores: (B, K, h, w) floating class scores (logits or probabilities), K <= 128;
            channels-last memory is read without a copy.
        size: (H, W) output size.

    Returns:
        (B, H, W) uint8 labels. float32 CPU scores go through the C kernel
        (:mod:`transunet_app.kernels.upsampled_argmax`, the same algorithm in one pass) where
        it is available; elsewhere :func:`upsampled_argmax_torch`, where downsampling
        (H < h or W < w), K > 128 and scores whose labels change in more than
        :data:`MAX_UNSURE` of the source cells take the plain path.
    """
    big_h, big_w = int(size[0]), int(size[1])
    if native.kernel_takes(scores, (big_h, big_w)):
        return native.upsampled_argmax(scores, (big_h, big_w))  # the same, in one C pass
    return upsampled_argmax_torch(scores, (big_h, big_w))


def upsampled_argmax_torch(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`upsampled_argmax` in torch operations (any device and dtype; the cross-check of
    the C kernel)."""
    b, k, h, w = scores.shape
    big_h, big_w = int(size[0]), int(size[1])
    if big_h < h or big_w < w or k > 128 or min(h, w) < 1:
        return _interpolated_argmax(scores, (big_h, big_w))
    device = scores.device
    labels = scores.argmax(1).to(torch.uint8)                          # (B, h, w)
    y0, y1, ly = (t.to(device) for t in _source_coordinates(h, big_h))
    x0, x1, lx = (t.to(device) for t in _source_coordinates(w, big_w))
    # the corners below, right and diagonal of each source cell (edge repeated: a cell on the
    # last row/column only ever gets weight on its first corner)
    below = torch.cat([labels[:, 1:], labels[:, -1:]], 1)
    right = torch.cat([labels[:, :, 1:], labels[:, :, -1:]], 2)
    diagonal = torch.cat([below[:, :, 1:], below[:, :, -1:]], 2)
    unsure = (labels != below) | (labels != right) | (labels != diagonal)
    if unsure.float().mean().item() > MAX_UNSURE:
        # noisy scores (an untrained model): interpolating every pixel in one kernel is cheaper
        return _interpolated_argmax(scores, (big_h, big_w))
    # label and "corners disagree" in one byte, gathered once for every output pixel
    code = labels | (unsure.to(torch.uint8) << 7)
    cell = (y0[:, None] * w + x0[None, :]).view(-1)                   # (H*W,) source cell
    out = code.view(b, h * w)[:, cell].view(b, big_h, big_w)
    bi, oi, oj = (out >= 128).nonzero(as_tuple=True)
    out &= 127
    if bi.numel():
        # scores of the 4 corners as rows of K (a view for channels-last scores)
        rows = scores.permute(0, 2, 3, 1).reshape(b * h * w, k)
        top, bottom = bi * (h * w) + y0[oi] * w, bi * (h * w) + y1[oi] * w
        left, right_ = x0[oj], x1[oj]
        wy, wx = ly[oi, None].to(scores.dtype), lx[oj, None].to(scores.dtype)
        value = ((1 - wy) * ((1 - wx) * rows[top + left] + wx * rows[top + right_])
                 + wy * ((1 - wx) * rows[bottom + left] + wx * rows[bottom + right_]))
        out[bi, oi, oj] = value.argmax(1).to(torch.uint8)
    return out
