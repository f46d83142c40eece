"""R50's GroupNorm + residual + ReLU fused at bf16 inference: same model, fewer passes."""
from __future__ import annotations

import pytest
import torch

from transunet_app.inference import fused_resnet, optimize
from transunet_app.inference.fused_resnet import FusedBottleneck, GroupNormReLU
from transunet_app.inference.optimize import prepare_for_inference
from transunet_app.kernels import group_norm
from transunet_app.models import build_model
from transunet_app.models.encoders.resnet_v2 import PreActBottleneck

CPU = torch.device("cpu")


@pytest.mark.skipif(not group_norm.kernel_available(), reason="group_norm kernel unavailable")
@pytest.mark.parametrize("name", ["R50-ViT-B_16", "tiny"])
def test_fused_units_compute_the_same_model(name, monkeypatch):
    torch.manual_seed(0)
    model = build_model(name, 9, img_size=64).eval()
    fused = prepare_for_inference(model, CPU, "bf16", copy_model=True)
    monkeypatch.setattr(optimize, "fuse_resnet_group_norms", lambda m: 0)
    plain = prepare_for_inference(model, CPU, "bf16", copy_model=True)
    f32 = prepare_for_inference(model, CPU, "fp32", copy_model=True)
    trunk = fused.encoder.hybrid
    assert isinstance(trunk.root.gn, GroupNormReLU) and isinstance(trunk.root.relu, torch.nn.Identity)
    units = [m for m in fused.modules() if isinstance(m, (FusedBottleneck, PreActBottleneck))]
    assert units and all(type(u) is FusedBottleneck for u in units)
    assert not any(isinstance(m, FusedBottleneck) for m in f32.modules())
    x = torch.rand(2, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    calls = []
    real = group_norm.group_norm
    monkeypatch.setattr(fused_resnet, "group_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.inference_mode():
        a, b, ref = fused(x).double(), plain(x).double(), f32(x).double()
    assert len(calls) >= 1 + 3 * len(units)  # the root and every unit's three norms
    err_plain = (b - ref).norm() / ref.norm()
    assert ((a - b).norm() / b.norm()) < err_plain
    assert ((a - ref).norm() / ref.norm()) < 1.1 * err_plain


def test_nothing_changes_without_the_kernel(monkeypatch):
    monkeypatch.setattr(fused_resnet, "kernel_available", lambda: False)
    model = prepare_for_inference(build_model("tiny", 9, img_size=64).eval(), CPU, "bf16")
    assert not any(isinstance(m, (FusedBottleneck, GroupNormReLU)) for m in model.modules())
