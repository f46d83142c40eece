"""CvT encoders: declarations, shapes at two sizes, attention maps, gradients, sizes of the
registered variants (fidelity to the official code: test_cvt_official.py)."""
import pytest
import torch

from transunet_app.models import build_encoder, build_model, list_models

from ..fidelity.float64_depthwise import Float64DepthwiseConv2d, float64
from .encoder_checks import check_full_model_bf16, parameters_without_gradient

# A 1-block-per-stage CvT-13 keeps the behaviour tests fast; the variants' own sizes are
# checked on the meta device (no memory, no compute).
SMALL = dict(depths=(1, 1, 1))


def test_variants_are_registered():
    names = list_models()
    for name in ("CvT-13", "CvT-21", "CvT-W24"):
        assert name in names


@pytest.mark.parametrize("name,bottleneck,skips,params_m", [
    # Official parameter counts (paper Table 2 / model zoo: 20M, 32M, 277M) minus the
    # classifier head and the class-token norm.
    ("CvT-13", 384, (192, 64, 0), 19.6),
    ("CvT-21", 384, (192, 64, 0), 31.2),
    ("CvT-W24", 1024, (768, 192, 0), 276.2),
])
def test_declarations_and_size(name, bottleneck, skips, params_m):
    with torch.device("meta"):
        enc = build_encoder(name)
    assert enc.bottleneck_channels == bottleneck and enc.bottleneck_stride == 16
    assert enc.skip_channels == skips and enc.size_divisor == 16
    assert enc.weight_family == "cvt"
    n = sum(p.numel() for p in enc.parameters()) / 1e6
    assert n == pytest.approx(params_m, abs=0.1), n


@pytest.mark.parametrize("size", [(224, 224), (160, 192)])
def test_feature_shapes(size):
    enc = build_encoder("CvT-13", **SMALL).eval()
    h, w = size
    with torch.no_grad():
        out = enc(torch.randn(2, 3, h, w))
    assert out.bottleneck.shape == (2, 384, h // 16, w // 16)
    assert out.skips[0].shape == (2, 192, h // 8, w // 8)
    assert out.skips[1].shape == (2, 64, h // 4, w // 4)
    assert out.skips[2] is None and out.attentions is None
    assert torch.isfinite(out.bottleneck).all()


def test_input_size_checked():
    enc = build_encoder("CvT-13", **SMALL)
    with pytest.raises(ValueError, match="not divisible by 16"):
        enc(torch.randn(1, 3, 100, 96))
    with pytest.raises(ValueError, match="not divisible by 16"):
        build_encoder("CvT-13", img_size=200)


def test_attention_maps():
    enc = build_encoder("CvT-13", **SMALL).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 64), return_attention=True)
    # one map per block; queries at stride 1, keys/values at stride 2; class token in stage 3
    assert [tuple(a.shape) for a in out.attentions] == [
        (1, 1, 256, 64), (1, 3, 64, 16), (1, 6, 1 + 16, 1 + 4)]
    for a in out.attentions:
        assert torch.allclose(a.sum(-1), torch.ones(()))
    with torch.no_grad():
        plain = enc(torch.randn(1, 3, 64, 64))
    assert plain.attentions is None


def test_attention_paths_agree():
    """The explicit-softmax path (return_attention) and the fused SDPA path give the same
    features."""
    enc = float64(build_encoder("CvT-13", **SMALL).eval())
    x = torch.randn(1, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        a, b = enc(x).bottleneck, enc(x, return_attention=True).bottleneck
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_every_parameter_gets_a_gradient():
    """Including the stage-3 class token: it is attended to, so it shapes the patch tokens."""
    assert not parameters_without_gradient(build_encoder("CvT-13", **SMALL))


def test_depthwise_float64_path_matches_conv2d():
    torch.manual_seed(0)
    for stride, padding, bias in ((1, 1, True), (2, 1, False), (2, 0, True)):
        conv = Float64DepthwiseConv2d(6, 3, stride, padding, bias).double()
        x = torch.randn(2, 6, 9, 12, dtype=torch.float64)
        ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride, padding, 1, 6)
        assert torch.allclose(conv(x), ref, rtol=0, atol=1e-13)


def test_bf16_autocast_and_full_model():
    check_full_model_bf16(build_model("CvT-13", 9, **SMALL), used_skips=(192, 64, 0))
