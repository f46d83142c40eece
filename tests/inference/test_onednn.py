"""oneDNN fused layers for bf16 CPU inference: same outputs as the unfused bf16 model."""
from __future__ import annotations

import pytest
import torch

from transunet_app.inference.low_res_decoder import LowResolutionUpConvBlock
from transunet_app.inference.onednn import OneDNNConv2d, OneDNNLinear, fuse_for_onednn, onednn_available
from transunet_app.inference.optimize import Float32Island, prepare_for_inference
from transunet_app.models import build_model

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")
#: oneDNN's bf16 kernels need AVX512-BW/VL/DQ (torch's own check; TRANSUNET_APP_PORTABLE=1 says
#: no); their twins without oneDNN run everywhere (test_optimize: fuse=False), and the float32
#: oneDNN pass below runs on every CPU with oneDNN.
needs_onednn_bf16 = pytest.mark.skipif(not onednn_available(torch.bfloat16),
                                       reason="oneDNN has no bf16 path on this CPU")


@needs_onednn_bf16
@pytest.mark.parametrize("name", ["tiny", "CvT-13", "CeiT-T", "Conformer-Ti"])
def test_fused_model_matches_unfused_bf16(name):
    torch.manual_seed(0)
    model = build_model(name, 9, img_size=64).eval()
    plain = prepare_for_inference(model, CPU, "bf16", copy_model=True, fuse=False)
    fused = prepare_for_inference(model, CPU, "bf16", copy_model=True, fuse=True)
    kinds = [type(m) for m in fused.modules()]
    assert OneDNNConv2d in kinds
    # every bf16 layer swapped; only the float32 parts (stem, segmentation head) stay Conv2d
    in_float32 = {id(m) for island in fused.modules() if isinstance(island, Float32Island)
                  for m in island.modules()}
    plain_layers = [m for m in fused.modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d)]
    assert fused.segmentation_head.layer in plain_layers
    assert all(id(m) in in_float32 and m.weight.dtype == torch.float32 for m in plain_layers)
    x = torch.rand(2, 1, 64, 64).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b = plain(x).double(), fused(x).double()
    assert b.shape == a.shape
    assert fused(x).dtype == plain(x).dtype == torch.float32  # the head runs in float32
    assert ((a - b).norm() / a.norm()) < 2e-2  # bf16 rounding, different summation order


@needs_onednn_bf16
def test_activations_are_fused_into_the_preceding_layer():
    model = prepare_for_inference(build_model("tiny", 9, img_size=64).eval(), CPU, "bf16",
                                  copy_model=True, fuse=True)
    # conv -> (folded BN) -> ReLU; a low-resolution block's taps have no activation of their
    # own (its ReLU follows the sum of the taps and the skip's convolution)
    taps = {id(m.taps) for m in model.decoder.modules() if isinstance(m, LowResolutionUpConvBlock)}
    convs = [m for m in model.decoder.modules() if isinstance(m, OneDNNConv2d) and id(m) not in taps]
    assert convs and all(c.attr == "relu" for c in convs)
    fc1 = [m.fc1 for m in model.modules() if type(m).__name__ == "Mlp"]
    assert fc1 and all(isinstance(f, OneDNNLinear) and f.attr == "gelu" for f in fc1)
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.GELU)) for m in model.decoder.modules())


def test_other_dtypes_are_left_alone():
    model = build_model("tiny", 9, img_size=64).eval()
    assert fuse_for_onednn(model) == 0  # default: bf16 layers only
    assert any(type(m) is torch.nn.Linear for m in model.modules())
    model64 = build_model("tiny", 9, img_size=64).double().eval()
    assert fuse_for_onednn(model64, torch.float32) == 0


@pytest.mark.parametrize("name", ["tiny", "CvT-13", "CeiT-T", "Conformer-Ti"])
def test_fused_fp32_model_matches_unfused_fp32(name):
    torch.manual_seed(0)
    model = build_model(name, 9, img_size=64).eval()
    plain = prepare_for_inference(model, CPU, "fp32", copy_model=True, fuse=False)
    fused = prepare_for_inference(model, CPU, "fp32", copy_model=True, fuse=True)
    kinds = [type(m) for m in fused.modules()]
    assert OneDNNLinear in kinds and OneDNNConv2d in kinds
    assert not any(type(m) in (torch.nn.Linear, torch.nn.Conv2d) for m in fused.modules())
    x = torch.rand(2, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b = plain(x).double(), fused(x).double()
    assert fused(x).dtype == torch.float32
    assert ((a - b).norm() / a.norm()) < 1e-5  # float32 rounding, different summation order
