"""Turn a trained model into an inference model: same outputs, less work per slice.

* Weight-standardised convolutions (ResNetV2 ``StdConv2d``) recompute mean/variance of their
  weights on every call; at inference the weights are fixed, so they are standardised once
  and the layer becomes a plain ``Conv2d`` (identical up to float rounding).
* A BatchNorm that directly follows a convolution in an ``nn.Sequential`` (the decoder's
  conv-BN-ReLU units, CvT's depthwise projections) is folded into the convolution's weight and
  bias: one pass over the activations less per unit, identical up to float rounding.
* channels_last memory format: oneDNN's convolution kernels work on NHWC; NCHW inputs would be
  reordered before and after every convolution.
* For bf16 on CPU, Linear/Conv2d layers use pre-packed oneDNN weights with the following ReLU
  or GELU fused (:mod:`.onednn`).
* The segmentation head runs in float32 (:class:`Float32Head`): logits at bf16 resolution
  decided near-ties between organs.
* For bf16/fp16 the weights are cast once, so no per-call weight casts happen. Normalisation
  layers (GroupNorm, LayerNorm, BatchNorm) run on the low-precision activations too; their
  reductions accumulate in float32 inside the kernels.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_weights

from ..models.layers import DepthwiseConv2d
from .onednn import fuse_for_onednn
from .precision import torch_dtype

#: Convolutions whose forward is ``conv(x, weight, bias)``, so a folded bias is honoured.
_FOLDABLE_CONVS = (nn.Conv2d, DepthwiseConv2d)


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace every ``StdConv2d`` by a ``Conv2d`` holding its standardised weight (in place)."""
    from ..models.layers import StdConv2d

    for name, child in list(model.named_children()):
        if isinstance(child, StdConv2d):
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                             child.padding, child.dilation, child.groups, bias=child.bias is not None,
                             padding_mode=child.padding_mode)
            conv.to(device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(child.standardized_weight())
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(model, name, conv)
        else:
            fold_weight_standardization(child)
    return model


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` into that convolution (in place; the BatchNorm becomes ``Identity`` so
    positions and names of the other modules stay).

    ``y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta`` is ``conv'(x)`` with weight
    ``w * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output
    channel (``torch.nn.utils.fuse_conv_bn_weights``).
    """
    for child in model.children():
        fold_batch_norm(child)
    if not isinstance(model, nn.Sequential):
        return model
    names = list(model._modules)
    for first, second in zip(names, names[1:]):
        conv, bn = model._modules[first], model._modules[second]
        if not (type(conv) in _FOLDABLE_CONVS and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats and bn.running_mean is not None
                and conv.out_channels == bn.num_features):
            continue
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                                bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        model._modules[second] = nn.Identity()
    return model


class Float32Head(nn.Module):
    """Runs ``layer`` in float32 on a low-precision input, so logits keep float32 resolution.

    bf16 logits of magnitude ~8 are spaced 0.03 apart, which alone decides near-ties between
    organs; the segmentation head is a few hundred MFLOP per slice (~1% of R50-ViT-B_16).
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float())


def prepare_for_inference(model: nn.Module, device: torch.device, precision: str,
                          copy_model: bool = False, fuse: bool = True) -> nn.Module:
    """An eval-mode, folded, channels_last model on ``device`` in the resolved ``precision``.

    Args:
        model: a model from :func:`transunet_app.checkpoint.model_from_checkpoint`.
        device: where to run.
        precision: "fp32", "bf16" or "fp16" (already resolved).
        copy_model: work on a deep copy and leave ``model`` untouched.
        fuse: for bf16 on CPU, swap layers for pre-packed fused oneDNN ones
            (:mod:`transunet_app.inference.onednn`).

    Returns:
        The prepared model (``requires_grad`` off everywhere).
    """
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    fold_weight_standardization(model)
    fold_batch_norm(model)
    model.to(device=device, dtype=torch_dtype(precision))
    if precision != "fp32" and isinstance(getattr(model, "segmentation_head", None), nn.Module):
        model.segmentation_head = Float32Head(model.segmentation_head)
    model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    if fuse and precision == "bf16" and device.type == "cpu":
        fuse_for_onednn(model)
    return model
