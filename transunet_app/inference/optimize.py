"""Turn a trained model into an inference model: same outputs, less work per slice.

:func:`prepare_for_inference` runs :data:`PASSES`, an ordered list of named passes
``(model, ctx) -> model``; each decides for itself whether it applies (precision, device,
:mod:`transunet_app.capabilities`), so a test can run them one at a time (:func:`run_passes`).
What they do and why:

* Weight-standardised convolutions (ResNetV2 ``StdConv2d``) recompute mean/variance of their
  weights on every call; at inference the weights are fixed, so they are standardised once
  and the layer becomes a plain ``Conv2d`` (identical up to float rounding).
* A BatchNorm that directly follows a convolution in an ``nn.Sequential`` (the decoder's
  conv-BN-ReLU units, CvT's depthwise projections) is folded into the convolution's weight and
  bias: one pass over the activations less per unit, identical up to float rounding.
* channels_last memory format: oneDNN's convolution kernels work on NHWC; NCHW inputs would be
  reordered before and after every convolution.
* On CPU (bf16 and float32), Linear/Conv2d layers use pre-packed oneDNN weights with the
  following ReLU or GELU fused (:mod:`.onednn`).
* bf16 keeps float32 where rounding decides near-ties between organs and float32 costs
  little (measured with ``tools/bench/check_bf16_agreement.py`` on a trained model):

  - the stem convolution (:func:`find_stem`: R50's root conv, a ViT's patch embedding, ...)
    runs in float32 on the float32 model input, summed over the repeated grey channels
    (:class:`GreyStemConv`: a third of the work): rounding the [0, 1] input to bf16 alone is
    +-0.4 HU of a 400 HU window. (Its GroupNorm in float32 as well bought nothing measurable
    and cost more than the convolution: the (B, 64, 112, 112) map read and written in float32.)
  - layers oneDNN takes over keep a float32 bias, added to the float32 accumulator inside the
    kernel: a folded BatchNorm bias is the difference of large terms, and its rounding shifted
    whole channels (half of the logit error);
  - the segmentation head runs in float32 (:class:`Float32Head`) with the float32 weights:
    bf16 logits near 8 are 0.03 apart.

  Islands (:class:`Float32Island`) are made before the cast, so they keep the float32 weights.
* For bf16/fp16 the other weights are cast once, so no per-call weight casts happen.
  Normalisation layers (GroupNorm, LayerNorm, BatchNorm) run on the low-precision activations
  too; their reductions accumulate in float32 inside the kernels.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_weights

from .. import capabilities
from ..fast_layers.attention import use_attention_dispatch
from ..fast_layers.group_norm import use_channels_last_group_norm
from ..models.layers import DepthwiseConv2d
from .fused_resnet import fuse_resnet_group_norms
from .low_res_decoder import lower_decoder_upsampling
from .onednn import OneDNNConv2d, OneDNNLinear, fuse_for_onednn, onednn_available
from .precision import torch_dtype

#: Convolutions whose forward is ``conv(x, weight, bias)``, so a folded bias is honoured.
_FOLDABLE_CONVS = (nn.Conv2d, DepthwiseConv2d)


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace every ``StdConv2d`` by a ``Conv2d`` holding its standardised weight (in place)."""
    from ..models.layers import StdConv2d

    for name, child in list(model.named_children()):
        if isinstance(child, StdConv2d):
            # built on the meta device: no random initialisation of weights replaced next
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                             child.padding, child.dilation, child.groups, bias=child.bias is not None,
                             padding_mode=child.padding_mode, device="meta")
            with torch.no_grad():
                conv.weight = nn.Parameter(child.standardized_weight(), child.weight.requires_grad)
                if child.bias is not None:
                    conv.bias = nn.Parameter(child.bias.detach().clone(), child.bias.requires_grad)
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


def _cast_floats(obj, dtype: torch.dtype):
    """``obj`` with every floating-point tensor in it (tuples, lists, dicts) cast to ``dtype``."""
    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast_floats(v, dtype) for v in obj)
    if isinstance(obj, dict):
        return {k: _cast_floats(v, dtype) for k, v in obj.items()}
    return obj


class Float32Island(nn.Module):
    """Runs ``layer`` in float32 inside a low-precision model.

    Floating-point inputs are cast to float32, the layer's weights are float32, and the outputs
    are cast to ``out_dtype`` (None: left in float32, for a consumer that is an island too or
    the model's output).

    Args:
        layer: the module to run in float32 (cast here, in place).
        out_dtype: dtype of the outputs handed to the rest of the model.
    """

    def __init__(self, layer: nn.Module, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.layer = layer.float()
        self.out_dtype = out_dtype

    def forward(self, *args, **kwargs):
        y = self.layer(*_cast_floats(args, torch.float32), **_cast_floats(kwargs, torch.float32))
        return y if self.out_dtype is None else _cast_floats(y, self.out_dtype)

    def __getattr__(self, name: str):
        # the wrapped layer's declarations (e.g. a decoder block's ``skip_channels``) stay
        # visible to the code that calls it
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)

    def extra_repr(self) -> str:
        return f"float32 -> {self.out_dtype}"


class Float32Head(Float32Island):
    """The segmentation head in float32 on a low-precision input: logits keep float32 resolution.

    bf16 logits of magnitude ~8 are spaced 0.03 apart, which alone decides near-ties between
    organs; the segmentation head is a few hundred MFLOP per slice (~1% of R50-ViT-B_16).
    """

    def __init__(self, layer: nn.Module):
        super().__init__(layer, out_dtype=None)


class GreyStemConv(nn.Module):
    """The encoder's first convolution, which sees a 1-channel slice repeated to C channels.

    ``conv(x.expand(-1, C, -1, -1), W)`` equals ``conv(x, W.sum(dim=1, keepdim=True))`` up to
    the order of the float additions, so a repeated input (a stride-0 channel dimension, as
    ``TransUNet.forward``'s ``expand`` makes) costs one input channel instead of C. Any other
    input goes through the full weight.

    Args:
        conv: a plain ``nn.Conv2d`` (weight standardisation already folded).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.register_buffer("grey_weight", conv.weight.detach().sum(dim=1, keepdim=True),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.ndim == 4 and x.shape[1] == c.in_channels > 1 and x.stride(1) == 0 and c.groups == 1:
            return c._conv_forward(x[:, :1], self.grey_weight.to(x.dtype), c.bias)
        return c(x)


def find_stem(model: nn.Module) -> str | None:
    """Name of the convolution that first sees the model input, as the encoder declares it
    (``Encoder.stem``: R50's ``hybrid.root.conv``, a ViT's ``patch_embed``, ...), or None for a
    model without an encoder or a declaration (tests/inference/test_optimize.py checks for
    every registered model that the declared stem sees the model input)."""
    encoder = getattr(model, "encoder", None)
    stem = getattr(encoder, "stem", "") if isinstance(encoder, nn.Module) else ""
    return f"encoder.{stem}" if stem else None


def _wrap(model: nn.Module, name: str, wrapper) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList) or isinstance(parent, nn.Sequential):
        parent._modules[child] = wrapper(parent._modules[child])
    else:
        setattr(parent, child, wrapper(getattr(parent, child)))


def keep_in_float32(model: nn.Module, dtype: torch.dtype, stem: bool = True,
                    modules=()) -> str | None:
    """Wrap the parts of a low-precision model that decide near-ties into float32 islands.

    Args:
        model: the folded float32 model, before it is cast to ``dtype`` (an island made
            after the cast would compute in float32 on weights already rounded to ``dtype``,
            and rounding weights and biases is most of the error).
        dtype: the low-precision dtype the rest of the model will run in.
        stem: run the stem convolution (:func:`find_stem`) in float32 on the float32 model
            input, summed over repeated grey channels (:class:`GreyStemConv`); rounding the
            [0, 1] input to bf16 alone is +-0.4 HU of a 400 HU window.
        modules: further module names to run in float32 (outputs cast back to ``dtype``).

    Returns:
        The stem's name, or None (then the model expects a ``dtype`` input).
    """
    stem_name = find_stem(model) if stem else None
    if stem_name is not None:
        _wrap(model, stem_name, lambda conv: Float32Island(GreyStemConv(conv), dtype))
    for name in modules:
        _wrap(model, name, lambda m: Float32Island(m, dtype))
    return stem_name


def cast_outside_islands(model: nn.Module, dtype: torch.dtype, keep=None) -> nn.Module:
    """Cast the floating-point parameters and buffers of ``model`` to ``dtype``, except those
    inside a :class:`Float32Island` and those ``keep(module, name)`` selects (in place)."""
    if isinstance(model, Float32Island):
        return model
    for name, t in list(model._parameters.items()) + list(model._buffers.items()):
        if t is None or not t.is_floating_point() or t.dtype == dtype or (keep and keep(model, name)):
            continue
        if name in model._parameters:
            model._parameters[name] = nn.Parameter(t.detach().to(dtype), t.requires_grad)
        else:
            model._buffers[name] = t.to(dtype)
    for child in model.children():
        cast_outside_islands(child, dtype, keep)
    return model


def _fused_layer(module: nn.Module, name: str) -> bool:
    return isinstance(module, (OneDNNConv2d, OneDNNLinear))


def fuse_on_this_cpu(precision: str) -> capabilities.Decision:
    """Whether the oneDNN pass (:func:`fuse_for_onednn`) runs for ``precision`` on this CPU:
    bf16 where torch's oneDNN has a bf16 path, fp32 where packing measured faster (AVX-512)."""
    if precision == "bf16":
        return capabilities.onednn_bf16()
    if precision == "fp32":
        return capabilities.onednn_fp32()
    return capabilities.Decision("oneDNN " + precision, False, "no oneDNN pass for " + precision)


@dataclass
class PassContext:
    """What the passes of :data:`PASSES` need to decide whether and how they apply.

    Attributes:
        device: where the model runs.
        precision: "fp32", "bf16" or "fp16" (resolved).
        fuse: the oneDNN pass and the C-kernel passes that build on it may run (asked, on
            CPU, of :func:`fuse_on_this_cpu`).
        float32_stem: for bf16/fp16, run the stem in float32 (module notes).
        float32_modules: for bf16/fp16, further module names to run in float32.
        low_res_decoder: for bf16 with ``fuse``, convolve the decoder's upsampled inputs at
            low resolution (:mod:`.low_res_decoder`).
        stem: the stem's name once the float32 islands are made (set by a pass).
        float32_biases: (layer, float32 bias) of the Conv2d/Linear layers the oneDNN pass
            may take, kept aside by the cast for it (set by a pass).
    """

    device: torch.device
    precision: str
    fuse: bool = True
    float32_stem: bool = True
    float32_modules: tuple = ()
    low_res_decoder: bool = True
    stem: str | None = None
    float32_biases: list = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)

    @property
    def low_precision(self) -> bool:
        return self.precision != "fp32"


def make_context(device: torch.device, precision: str, fuse: bool | None = None,
                 float32_stem: bool = True, float32_modules=(),
                 low_res_decoder: bool = True) -> PassContext:
    """The :class:`PassContext` for ``precision`` on ``device``, ``fuse`` resolved as
    :func:`prepare_for_inference` documents it (None: :func:`fuse_on_this_cpu`)."""
    if fuse is None:
        fuse = bool(fuse_on_this_cpu(precision))
    fuse = fuse and device.type == "cpu" and precision in ("bf16", "fp32") \
        and onednn_available(torch_dtype(precision))
    return PassContext(device, precision, fuse, float32_stem, tuple(float32_modules),
                       low_res_decoder)


def _fold_weight_standardization(model: nn.Module, ctx: PassContext) -> nn.Module:
    return fold_weight_standardization(model)


def _fold_batch_norm(model: nn.Module, ctx: PassContext) -> nn.Module:
    return fold_batch_norm(model)


def _place(model: nn.Module, ctx: PassContext) -> nn.Module:
    """Float32 on the device, no gradients; the input dtype is float32 until a cast."""
    model.to(device=ctx.device, dtype=torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    model.input_dtype = torch.float32
    return model


def _low_precision(model: nn.Module, ctx: PassContext) -> nn.Module:
    """bf16/fp16: the float32 islands (head, stem, ``float32_modules``), made before the cast
    so they keep the float32 weights, then everything else cast to the low precision."""
    if not ctx.low_precision:
        return model
    if isinstance(getattr(model, "segmentation_head", None), nn.Module):
        model.segmentation_head = Float32Head(model.segmentation_head)
    ctx.stem = keep_in_float32(model, ctx.dtype, stem=ctx.float32_stem,
                               modules=ctx.float32_modules)
    # Layers oneDNN takes over keep a float32 bias: a folded BatchNorm bias is the difference
    # of large terms (``beta - mean * s``), and its bf16 rounding shifts a whole channel (most
    # of bf16's logit error on a trained model). Kept aside here, so that the model runs
    # between the passes; the oneDNN pass gives them back to the layers it takes.
    if ctx.fuse:
        ctx.float32_biases = [(m, m.bias.detach().clone()) for m in model.modules()
                              if type(m) in (nn.Conv2d, nn.Linear) and m.bias is not None
                              and m.bias.dtype == torch.float32]
    cast_outside_islands(model, ctx.dtype)
    model.input_dtype = torch.float32 if ctx.stem else ctx.dtype
    return model


def _channels_last(model: nn.Module, ctx: PassContext) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def _channels_last_group_norm(model: nn.Module, ctx: PassContext) -> nn.Module:
    use_channels_last_group_norm(model)
    return model


def _attention_kernel(model: nn.Module, ctx: PassContext) -> nn.Module:
    use_attention_dispatch(model)
    if ctx.precision == "bf16" and ctx.device.type == "cpu" and capabilities.c_kernels():
        from ..kernels.attention import kernel_available

        kernel_available()  # compiled (once per machine) while the model loads, not mid-run
    return model


def _onednn(model: nn.Module, ctx: PassContext) -> nn.Module:
    if ctx.fuse:
        for layer, bias in ctx.float32_biases:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        ctx.float32_biases = []
        fuse_for_onednn(model, ctx.dtype)
        if ctx.low_precision:
            cast_outside_islands(model, ctx.dtype, keep=_fused_layer)  # layers oneDNN did not take
    return model


def _low_res_decoder(model: nn.Module, ctx: PassContext) -> nn.Module:
    if ctx.fuse and ctx.precision == "bf16" and ctx.low_res_decoder:
        lower_decoder_upsampling(model)
    return model


def _fused_resnet_group_norm(model: nn.Module, ctx: PassContext) -> nn.Module:
    if ctx.fuse and ctx.precision == "bf16":
        fuse_resnet_group_norms(model)
    return model


#: The passes of :func:`prepare_for_inference`, in order.
PASSES = (
    ("fold_weight_standardization", _fold_weight_standardization),
    ("fold_batch_norm", _fold_batch_norm),
    ("place", _place),
    ("low_precision", _low_precision),
    ("channels_last", _channels_last),
    ("channels_last_group_norm", _channels_last_group_norm),
    ("attention_kernel", _attention_kernel),
    ("onednn", _onednn),
    ("low_res_decoder", _low_res_decoder),
    ("fused_resnet_group_norm", _fused_resnet_group_norm),
)


def run_passes(model: nn.Module, ctx: PassContext, passes=PASSES) -> nn.Module:
    """Run ``passes`` (``(name, fn)`` pairs) on ``model`` in order; returns the model."""
    for _, fn in passes:
        model = fn(model, ctx)
    return model


def prepare_for_inference(model: nn.Module, device: torch.device, precision: str,
                          copy_model: bool = False, fuse: bool | None = None, float32_stem: bool = True,
                          float32_modules=(), low_res_decoder: bool = True) -> nn.Module:
    """An eval-mode, folded, channels_last model on ``device`` in the resolved ``precision``.

    Args:
        model: a model from :func:`transunet_app.checkpoint.model_from_checkpoint`.
        device: where to run.
        precision: "fp32", "bf16" or "fp16" (already resolved).
        copy_model: work on a deep copy and leave ``model`` untouched.
        fuse: for bf16 and fp32 on CPU, swap layers for pre-packed fused oneDNN ones
            (:mod:`transunet_app.inference.onednn`). None (default): where
            :func:`fuse_on_this_cpu` says it is supported and faster on this CPU; True: wherever
            torch's oneDNN can run the dtype (tests, measurements); False: never.
        float32_stem: for bf16/fp16, run the stem in float32 (see the module notes).
        float32_modules: for bf16/fp16, further modules to run in float32 by name (e.g.
            ``"decoder.blocks.3"``; for measurements, see tools/bench/check_bf16_agreement.py).
        low_res_decoder: for bf16 on CPU (with ``fuse``), decoder blocks convolve their
            upsampled input at low resolution (:mod:`.low_res_decoder`). (With ``fuse``, R50's
            GroupNorms also take the following addition and ReLU: :mod:`.fused_resnet`.)

    Returns:
        The prepared model (``requires_grad`` off everywhere). Its ``input_dtype`` attribute
        is the dtype its input should have: float32 when the stem runs in float32.
    """
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    ctx = make_context(device, precision, fuse, float32_stem, float32_modules, low_res_decoder)
    return run_passes(model, ctx)
