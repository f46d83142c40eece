"""The bf16 inference model's float32 parts (stem, oneDNN biases, head) and its outputs.

``prepare_for_inference`` keeps in float32 what decides near-ties between organs at little cost
(see transunet_app/inference/optimize.py and tools/bench/check_bf16_agreement.py); these tests pin
where each part runs and that the prepared models still compute the trained model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transunet_app.inference.low_res_decoder import LowResolutionUpConvBlock
from transunet_app.inference.onednn import OneDNNConv2d, OneDNNLinear, onednn_available
from transunet_app.inference.optimize import Float32Head, Float32Island, GreyStemConv, find_stem, prepare_for_inference
from transunet_app.models import build_model

CPU = torch.device("cpu")
SIZE = 64


def _small_vit():
    # a pure ViT (patch-embedding stem, no skips) small enough for a unit test
    return build_model("ViT-B_16", 9, img_size=SIZE, hidden_size=32, num_layers=1, num_heads=2,
                       mlp_dim=64, decoder_channels=(16, 8, 8, 8), head_channels=16)


#: One model per encoder family, and the stem each one's input meets first.
FAMILIES = {
    "tiny": (lambda: build_model("tiny", 9, img_size=SIZE), "encoder.hybrid.root.conv"),
    "ViT": (_small_vit, "encoder.patch_embed"),
    "CvT-13": (lambda: build_model("CvT-13", 9, img_size=SIZE), None),
    "CeiT-T": (lambda: build_model("CeiT-T", 9, img_size=SIZE), None),
    "Conformer-Ti": (lambda: build_model("Conformer-Ti", 9, img_size=SIZE), None),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[name][0]().eval()
    # non-trivial BatchNorm statistics, so folded biases are not zero
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def _input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def test_grey_stem_conv_is_the_conv_on_repeated_channels():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False).double()
    grey = GreyStemConv(conv)
    x = torch.rand(2, 1, 20, 20, dtype=torch.float64)
    repeated = x.expand(-1, 3, -1, -1)
    assert repeated.stride(1) == 0
    with torch.no_grad():
        torch.testing.assert_close(grey(repeated), conv(repeated.contiguous()), rtol=1e-12, atol=1e-12)
        other = torch.rand(2, 3, 20, 20, dtype=torch.float64)  # real colour channels
        torch.testing.assert_close(grey(other), conv(other), rtol=0, atol=0)
    assert grey.grey_weight.shape == (8, 1, 7, 7)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_stem_is_what_the_model_input_meets_first(name):
    model = _model(name)
    stem = find_stem(model)
    expected = FAMILIES[name][1]
    if expected is not None:
        assert stem == expected
    assert stem is not None
    seen, calls = [], []
    layers = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: calls.append(n))
               for n, m in model.named_modules() if isinstance(m, layers)]
    handles.append(model.get_submodule(stem).register_forward_pre_hook(
        lambda mod, args: seen.append(args[0])))
    x = _input()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    # the stem gets the model input (the grey slice repeated to the encoder's channels) ...
    assert len(seen) == 1
    assert seen[0].stride(1) == 0 or model.in_channels == 1
    torch.testing.assert_close(seen[0], x.expand(-1, model.in_channels, -1, -1), rtol=0, atol=0)
    # ... before any other layer runs
    assert calls[0] == stem or calls[0].startswith(stem + ".")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_model_runs_stem_biases_and_head_in_float32(name):
    model = _model(name)
    # the folded float32 model with plain layers (fp32 inference swaps them for oneDNN ones)
    f32 = prepare_for_inference(model, CPU, "fp32", copy_model=True, fuse=False)
    b16 = prepare_for_inference(model, CPU, "bf16", copy_model=True)
    stem = find_stem(f32)
    assert f32.input_dtype == torch.float32 and not any(
        isinstance(m, Float32Island) for m in f32.modules())
    assert b16.input_dtype == torch.float32
    island = b16.get_submodule(stem)
    assert isinstance(island, Float32Island) and island.out_dtype == torch.bfloat16
    assert any(isinstance(m, GreyStemConv) for m in island.modules())
    assert isinstance(b16.segmentation_head, Float32Head)
    # islands hold the float32 weights themselves, not bf16-rounded copies
    stem_w = [p for p in f32.get_submodule(stem).parameters()]
    assert [p.dtype for p in island.parameters()] == [torch.float32] * len(stem_w)
    for a, b in zip(island.parameters(), stem_w):
        assert torch.equal(a, b)
    assert torch.equal(b16.segmentation_head.layer.weight, f32.segmentation_head.weight)
    in_islands = {id(t) for isl in b16.modules() if isinstance(isl, Float32Island)
                  for t in list(isl.parameters()) + list(isl.buffers())}
    fused = [m for m in b16.modules() if isinstance(m, (OneDNNConv2d, OneDNNLinear))]
    fused_bias = {id(m.bias) for m in fused if m.bias is not None}
    # a low-resolution decoder block adds its (folded) bias in float32 inside its kernel
    fused_bias |= {id(m.bias) for m in b16.modules() if isinstance(m, LowResolutionUpConvBlock)}
    if onednn_available(torch.bfloat16):
        assert fused and all(m.weight.dtype == torch.bfloat16 for m in fused)
        assert fused_bias and all(m.bias.dtype == torch.float32 for m in fused if m.bias is not None)
    rest = [t for t in list(b16.parameters()) + list(b16.buffers())
            if t.is_floating_point() and id(t) not in in_islands and id(t) not in fused_bias]
    assert rest and all(t.dtype == torch.bfloat16 for t in rest)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_prepared_models_compute_the_trained_model(name):
    model = _model(name)
    x = _input()
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    f32 = prepare_for_inference(model, CPU, "fp32", copy_model=True)
    with torch.inference_mode():
        assert _rel(f32(x.contiguous(memory_format=torch.channels_last)), ref) < 1e-4
        for fuse in (True, False):
            b16 = prepare_for_inference(model, CPU, "bf16", copy_model=True, fuse=fuse)
            y = b16(x.to(b16.input_dtype).contiguous(memory_format=torch.channels_last))
            assert y.dtype == torch.float32 and y.shape == ref.shape
            assert _rel(y, ref) < 2e-2, (fuse, _rel(y, ref))
            # a bf16 input (callers that do not read ``input_dtype``) still works
            assert _rel(b16(x.bfloat16().contiguous(memory_format=torch.channels_last)), ref) < 2e-2


class _Wrapper(nn.Module):
    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x)


@pytest.mark.skipif(not onednn_available(torch.bfloat16), reason="oneDNN has no bf16 path on this CPU")
def test_float32_bias_keeps_a_cancelling_folded_bias_exact():
    """conv -> BatchNorm with a large running mean folds into a conv whose output is the
    difference of two large terms; a bf16 bias would shift the whole channel by up to half a
    bf16 step of the bias (0.125 between 32 and 64), the float32 bias leaves only the rounding
    of the (small) output."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4).eval()
    net = nn.Sequential(conv, bn, nn.ReLU())
    x = torch.rand(2, 16, 12, 12)
    with torch.no_grad():
        nn.init.uniform_(conv.weight, 0.5, 1.0)
        bn.running_mean.copy_(conv(x).mean(dim=(0, 2, 3)))  # ~ +48: output ~ 0 after the mean
        bn.running_var.fill_(1.0)
    prepared = prepare_for_inference(_Wrapper(net), CPU, "bf16", copy_model=True)
    layer = prepared.decoder[0]
    assert isinstance(layer, OneDNNConv2d) and layer.bias.dtype == torch.float32
    xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = prepared(xb).double()
        # the exact result for the bf16 input and bf16 weight, float32 bias
        exact = torch.relu(nn.functional.conv2d(xb.double(), layer.weight.double(),
                                                layer.bias.double(), padding=1))
    assert float(exact.abs().max()) < 16 and float(layer.bias.abs().min()) > 32
    assert float((y - exact).abs().max()) <= 0.0315  # bf16 rounding of outputs below 16


def test_float32_island_forwards_declarations_and_casts():
    block = nn.Linear(4, 3)
    block.skip_channels = 7
    island = Float32Island(block, torch.bfloat16)
    assert island.skip_channels == 7 and island.layer.weight.dtype == torch.float32
    y = island(torch.rand(2, 4).bfloat16())
    assert y.dtype == torch.bfloat16
    assert Float32Island(nn.Linear(4, 3))(torch.rand(2, 4).bfloat16()).dtype == torch.float32


def test_predictor_feeds_float32_to_a_float32_stem_and_leaves_the_volume_alone():
    from transunet_app.checkpoint import model_from_checkpoint
    from transunet_app.inference.predictor import SlicePredictor

    from .conftest import tiny_checkpoint_dict

    ckpt = tiny_checkpoint_dict()
    pred = SlicePredictor(model_from_checkpoint(ckpt), ckpt["preprocessing"], CPU, "bf16")
    slab = np.linspace(-1000, 1000, 3 * 20 * 24, dtype=np.float32).reshape(3, 20, 24)
    before = slab.copy()
    x = pred.normalize(slab)
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(slab, before)  # float32 input shares memory: not clamped in place
    assert pred.predict(slab).labels.shape == (3, 20, 24)


# --------------------------------------------------------------------------- the passes


def test_passes_are_an_ordered_list_of_named_functions():
    from transunet_app.inference.optimize import PASSES

    names = [name for name, _ in PASSES]
    assert names == ["fold_weight_standardization", "fold_batch_norm", "place", "low_precision",
                     "channels_last", "channels_last_group_norm", "attention_kernel", "onednn",
                     "low_res_decoder", "fused_resnet_group_norm"]
    assert all(callable(fn) for _, fn in PASSES)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("bf16", 2e-2)])
@pytest.mark.parametrize("name", ["tiny", "CvT-13"])
def test_each_pass_keeps_the_model_output(name, precision, tol):
    """The passes run one at a time: after every one of them the model still computes the
    trained model (float32 reference) to the precision's tolerance."""
    import copy

    from transunet_app.inference.optimize import PASSES, make_context, run_passes

    model = _model(name)
    x = _input()
    with torch.no_grad():
        ref = model(x)
    ctx = make_context(CPU, precision)
    net = copy.deepcopy(model)
    for pass_name, fn in PASSES:
        net = run_passes(net, ctx, [(pass_name, fn)])
        dtype = getattr(net, "input_dtype", torch.float32)
        with torch.inference_mode():
            y = net(x.to(dtype).contiguous(memory_format=torch.channels_last))
        assert y.shape == ref.shape
        assert _rel(y.float(), ref) < tol, (pass_name, _rel(y.float(), ref))


def test_every_registered_encoder_declares_its_stem():
    """A declared stem names a convolution over the encoder's input channels (the test above
    checks for one model per family that it is what the input meets first)."""
    from transunet_app.models import list_models

    for name in list_models():
        with torch.device("meta"):
            model = build_model(name, 9)
        stem = find_stem(model)
        assert stem is not None, name
        conv = model.get_submodule(stem)
        assert isinstance(conv, nn.Conv2d) and conv.in_channels == model.encoder.in_channels, name
