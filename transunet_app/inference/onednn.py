"""oneDNN fused kernels for CPU inference: pre-packed weights and fused activations.

For a bf16 or float32 model on a CPU, every ``Linear`` and ``Conv2d`` of that dtype is replaced
by a module that calls oneDNN directly (Linear weights reordered once into oneDNN's blocked
layout), and the activation that follows is fused into the same kernel:

* ``Conv2d -> ReLU`` (the decoder's units once their BatchNorm is folded): one pass less over
  the activations;
* ``Mlp.fc1 -> GELU`` (erf GELU, as ViT): the GELU is applied in the matmul's epilogue.

These are the kernels ``torch.compile`` (Inductor's "freezing") emits for the same graphs, called
through the same ``torch.ops.mkldnn`` operators, without its minutes of compilation per model.
Measured in ``tools/bench/bench_model.py`` (mode ``bf16-inference``); outputs agree with the unfused
model to rounding (tests/inference/test_onednn.py).

float32 matters on CPUs where torch's float32 ``F.linear`` (MKL's GEMM) does not use AVX-512
(AMD CPUs with AVX-512); on AVX2-only CPUs the packed float32 model is slower than the plain one,
so :func:`transunet_app.inference.optimize.prepare_for_inference` uses it only where
:func:`transunet_app.capabilities.onednn_fp32` says so. Where the operators are missing (a torch
built without oneDNN, or bf16 on a CPU whose oneDNN has no bf16 path), nothing is changed.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import capabilities
from ..models.layers import Mlp

#: Activations that can follow a layer and be fused into it: module type -> (attr, algorithm).
_FUSABLE = {nn.ReLU: ("relu", ""), nn.GELU: ("gelu", "none")}


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's pointwise operators can run ``dtype`` layers on this CPU (asked of
    :mod:`transunet_app.capabilities`: bf16 packing needs AVX512-BW/VL/DQ)."""
    return bool(capabilities.onednn_bf16() if dtype == torch.bfloat16 else capabilities.onednn())


class OneDNNLinear(nn.Module):
    """``activation(x @ W^T + b)`` for (..., in_features) bf16 inputs, weight pre-packed."""

    def __init__(self, linear: nn.Linear, attr: str = "none", algorithm: str = ""):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.attr, self.algorithm = attr, algorithm
        w = linear.weight.detach()
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(w, 1024),
                             persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [],
                                                  self.algorithm)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, fused={self.attr}"


class OneDNNConv2d(nn.Module):
    """``activation(conv2d(x))`` for (B, C, H, W) channels-last bf16 inputs, activation fused."""

    def __init__(self, conv: nn.Conv2d, attr: str = "none", algorithm: str = ""):
        super().__init__()
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.attr, self.algorithm = attr, algorithm
        self.out_channels = conv.out_channels
        # The weight stays a plain channels-last tensor: oneDNN's pre-packed convolution
        # layout, chosen without the input size, was many times slower for some shapes
        # (BENCHMARKS.md, "Layer measurements").
        self.register_buffer("weight", conv.weight.detach().contiguous(
            memory_format=torch.channels_last), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The weight is channels-last: an NCHW input (e.g. tokens viewed as a map) would make
        # oneDNN reorder on every call (BENCHMARKS.md, "Layer measurements"); one copy to
        # channels-last is far cheaper.
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"out={self.out_channels}, fused={self.attr}"


def _convertible_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _fused(module: nn.Module, activation: nn.Module | None, dtype: torch.dtype):
    """The oneDNN replacement of ``module`` with ``activation`` fused (None: no activation),
    or None for a layer that stays (another dtype, device or kind)."""
    attr, algorithm = ("none", "")
    if activation is not None:
        attr, algorithm = _FUSABLE[type(activation)]
        if isinstance(activation, nn.GELU) and activation.approximate != "none":
            return None
    if module.weight.dtype != dtype or module.weight.device.type != "cpu":
        return None  # e.g. a bf16 model's float32 islands (stem, segmentation head) stay
    if isinstance(module, nn.Linear):
        return OneDNNLinear(module, attr, algorithm)
    if _convertible_conv(module):
        return OneDNNConv2d(module, attr, algorithm)
    return None


def _fuse_children(parent: nn.Module, dtype: torch.dtype) -> int:
    """Replace the layers directly under ``parent`` (and fuse an activation that follows a layer
    in a Sequential, or ``fc1 -> act`` in an MLP). Returns how many layers were replaced."""
    count = 0
    names = list(parent._modules)
    pairs = []
    if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
        # a following activation, skipping Identity left by BatchNorm folding
        for i, name in enumerate(names):
            if type(parent._modules[name]) not in (nn.Linear, nn.Conv2d):
                continue
            j = i + 1
            while j < len(names) and isinstance(parent._modules[names[j]], nn.Identity):
                j += 1
            if j < len(names) and type(parent._modules[names[j]]) in _FUSABLE:
                pairs.append((name, names[j]))
    elif isinstance(parent, Mlp) and type(parent.act) in _FUSABLE:
        pairs.append(("fc1", "act"))  # Mlp applies act directly to fc1's output
    for layer, act in pairs:
        new = _fused(parent._modules[layer], parent._modules[act], dtype)
        if new is not None:
            parent._modules[layer] = new
            parent._modules[act] = nn.Identity()
            count += 1
    for name in names:
        child = parent._modules[name]  # a layer fused above is a OneDNN module now: no children
        if child is None:
            continue
        if type(child) in (nn.Linear, nn.Conv2d):
            new = _fused(child, None, dtype)
            if new is not None:
                parent._modules[name] = new
                count += 1
        else:
            count += _fuse_children(child, dtype)
    return count


def fuse_for_onednn(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Swap the CPU Linear/Conv2d layers of an inference model whose weights are ``dtype``
    (bfloat16 or float32) for pre-packed, fused oneDNN layers (in place). Returns the number
    of layers replaced (0 when not applicable: layers of other dtypes and devices are left
    alone).

    Only exact ``nn.Linear`` / ``nn.Conv2d`` types are replaced (subclasses such as
    :class:`~transunet_app.models.layers.DepthwiseConv2d` stay with torch). Activations are fused
    after a layer in a plain ``nn.Sequential`` and after ``fc1`` in
    :class:`transunet_app.models.layers.Mlp`.
    """
    if not onednn_available(dtype):
        return 0
    with torch.no_grad():
        return _fuse_children(model, dtype)
