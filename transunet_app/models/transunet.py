"""TransUNet = encoder -> cascaded decoder (DecoderCup) -> segmentation head.

Any registered encoder plugs in; the decoder is built from the encoder's declarations. With a
ViT encoder this is numerically the official TransUNet (``VisionTransformer`` in
``vit_seg_modeling.py``); official state dicts load through
:func:`transunet_app.models.pretrained.load_pretrained`.

Paper: Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image
Segmentation", arXiv:2102.04306, 2021.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import DecoderCup
from .encoders.base import Encoder


class TransUNet(nn.Module):
    """Segmentation model.

    Args:
        encoder: an :class:`~transunet_app.models.encoders.base.Encoder`.
        num_classes: output classes K (background included).
        n_skip: number of encoder skips the decoder uses (0..3); defaults to all available.
        decoder_channels: channels of the four decoder blocks.
        head_channels: channels of ``conv_more`` (official: 512).

    Forward: (B, C, H, W) with C = 1 (repeated to the encoder's 3 channels, as the official
    model does) or C = encoder.in_channels -> logits (B, K, H, W). With
    ``return_attention=True`` returns ``(logits, attention maps)`` (official ``vis`` mode).
    """

    def __init__(self, encoder: Encoder, num_classes: int, n_skip: int | None = None,
                 decoder_channels: Sequence[int] = (256, 128, 64, 16), head_channels: int = 512):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        # n_skip counts decoder stages from the deepest (1/8, 1/4, 1/2) as the official n_skip;
        # a stage whose skip the encoder lacks (0 channels, e.g. CeiT's 1/8) just upsamples.
        # Default: up to the shallowest skip the encoder has.
        deepest = max((i + 1 for i, c in enumerate(encoder.skip_channels) if c), default=0)
        n_skip = deepest if n_skip is None else n_skip
        if n_skip > deepest:
            raise ValueError(f"n_skip={n_skip} but the encoder provides skips with channels "
                             f"{encoder.skip_channels} (at most n_skip={deepest})")
        self.num_classes = num_classes
        self.encoder = encoder
        self.decoder = DecoderCup(encoder.bottleneck_channels, encoder.skip_channels, n_skip,
                                  decoder_channels, head_channels)
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        # The decoder upsamples x16; an encoder at 1/32 (ViT-B_32) needs one more x2 (the
        # official SegmentationHead's ``upsampling`` argument).
        self.head_upsampling = encoder.bottleneck_stride // 16
        if self.head_upsampling not in (1, 2) or encoder.bottleneck_stride % 16:
            raise ValueError(f"unsupported bottleneck stride {encoder.bottleneck_stride}")

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if x.shape[1] == 1 and self.encoder.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        feats = self.encoder(x, return_attention=return_attention)
        y = self.decoder(feats.bottleneck, feats.skips)
        logits = self.segmentation_head(y)
        if self.head_upsampling > 1:
            logits = F.interpolate(logits, scale_factor=self.head_upsampling, mode="bilinear",
                                   align_corners=True)
        if return_attention:
            return logits, feats.attentions
        return logits

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K, H, W) in eval mode, without autograd."""
        was_training = self.training
        self.eval()
        try:
            return self(x).softmax(dim=1)
        finally:
            self.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


