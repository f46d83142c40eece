"""CeiT encoders: declarations, shapes at two sizes, position-embedding interpolation, LeFF,
attention maps, gradients, sizes of the registered variants (fidelity to the official code:
test_ceit_official.py)."""
import pytest
import torch

from transunet_app.models import build_encoder, build_model, list_models
from transunet_app.models.encoders.ceit import LeFF
from transunet_app.models.layers import resample_abs_pos_embed

from .encoder_checks import check_full_model_bf16, parameters_without_gradient

SMALL = dict(depth=2)  # behaviour tests on a 2-block CeiT-T


def test_variants_are_registered():
    names = list_models()
    for name in ("CeiT-T", "CeiT-S", "CeiT-B"):
        assert name in names


@pytest.mark.parametrize("name,dim,official_m", [
    # Official parameter counts (README model zoo: 6.4M, 24.2M, 94.4M) include LCA, the final
    # norm and the 1000-class head.
    ("CeiT-T", 192, 6.4), ("CeiT-S", 384, 24.2), ("CeiT-B", 768, 94.4),
])
def test_declarations_and_size(name, dim, official_m):
    with torch.device("meta"):
        enc = build_encoder(name)
        full = build_encoder(name, include_lca=True)
    assert enc.bottleneck_channels == dim and enc.bottleneck_stride == 16
    assert enc.skip_channels == (0, 64, 64) and enc.size_divisor == 16
    assert enc.weight_family == "ceit" and not hasattr(enc, "lca")
    n_full = sum(p.numel() for p in full.parameters()) + dim * 1000 + 1000
    assert n_full / 1e6 == pytest.approx(official_m, abs=0.05)
    assert sum(p.numel() for p in enc.parameters()) < n_full


@pytest.mark.parametrize("size", [(224, 224), (160, 192)])
def test_feature_shapes(size):
    enc = build_encoder("CeiT-T", **SMALL).eval()
    h, w = size
    with torch.no_grad():
        out = enc(torch.randn(2, 3, h, w))
    assert out.bottleneck.shape == (2, 192, h // 16, w // 16)
    assert out.skips[0] is None
    assert out.skips[1].shape == (2, 64, h // 4, w // 4)
    assert out.skips[2].shape == (2, 64, h // 2, w // 2)
    assert out.attentions is None and torch.isfinite(out.bottleneck).all()


def test_input_size_checked():
    enc = build_encoder("CeiT-T", **SMALL)
    with pytest.raises(ValueError, match="not divisible by 16"):
        enc(torch.randn(1, 3, 224, 200))
    with pytest.raises(ValueError, match="not divisible by 16"):
        build_encoder("CeiT-T", img_size=(224, 100))


def test_position_embeddings_interpolated_on_the_fly():
    """An encoder built for 224 run at 160x192 equals one built for 160x192 whose stored
    embeddings were resized the same way (bicubic, class token kept)."""
    torch.manual_seed(0)
    a = build_encoder("CeiT-T", **SMALL).eval()
    b = build_encoder("CeiT-T", img_size=(160, 192), **SMALL).eval()
    state = a.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], (10, 12), (14, 14),
                                                num_prefix_tokens=1, mode="bicubic",
                                                align_corners=False)
    b.load_state_dict(state)
    assert b.pos_embed.shape == (1, 1 + 120, 192)
    assert torch.equal(b.pos_embed[:, 0], a.pos_embed[:, 0])
    x = torch.randn(1, 3, 160, 192)
    with torch.no_grad():
        assert torch.allclose(a(x).bottleneck, b(x).bottleneck, atol=1e-5)


def test_leff_passes_the_class_token_through():
    leff = LeFF(8, 16).eval()
    x = torch.randn(2, 1 + 12, 8)
    y = leff(x, (3, 4))
    assert y.shape == x.shape and torch.equal(y[:, 0], x[:, 0])
    assert not torch.allclose(y[:, 1:], x[:, 1:])


def test_attention_maps():
    enc = build_encoder("CeiT-T", **SMALL).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 96), return_attention=True)
        plain = enc(torch.randn(1, 3, 64, 96))
    assert [tuple(a.shape) for a in out.attentions] == [(1, 3, 1 + 24, 1 + 24)] * 2
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(()))
    assert plain.attentions is None


def test_every_parameter_gets_a_gradient():
    assert not parameters_without_gradient(build_encoder("CeiT-T", **SMALL))


def test_class_embedding_needs_lca():
    enc = build_encoder("CeiT-T", **SMALL).eval()
    with torch.no_grad():
        f = enc.features(torch.randn(1, 3, 64, 64))
    assert f.cls_tokens.shape == (1, 2, 192)
    with pytest.raises(RuntimeError, match="without the LCA"):
        enc.class_embedding(f.cls_tokens)
    lca = build_encoder("CeiT-T", include_lca=True, **SMALL).eval()
    with torch.no_grad():
        cls_tokens = lca.features(torch.randn(1, 3, 64, 64)).cls_tokens
        assert lca.class_embedding(cls_tokens).shape == (1, 192)


def test_full_model_uses_both_stem_skips_and_runs_in_bf16():
    check_full_model_bf16(build_model("CeiT-T", 9, **SMALL), used_skips=(0, 64, 64))
