"""Conformer encoders: registry, declared channels, shapes at several sizes, the fused
bottleneck, attention maps, gradients and dtype. Behaviour runs on a reduced-depth model
(depth 3, narrow), fidelity to the official code is in ``test_conformer_official.py``.
"""
import pytest
import torch
import torch.nn.functional as F

from transunet_app.models import build_encoder, build_model, count_parameters, list_models
from transunet_app.models.encoders.conformer import ConformerEncoder, fuse_bottleneck

SMALL = dict(channel_ratio=0.25, embed_dim=48, depth=3, num_heads=3)  # C1 = 16
VARIANTS = {  # name: (C1, embed_dim, official parameter count with both ImageNet heads)
    "Conformer-Ti": (64, 384, 23.5e6),
    "Conformer-S": (256, 384, 37.7e6),
    "Conformer-B": (384, 576, 83.3e6),
}


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_encoder("Conformer-S", **SMALL).eval()


def test_registered_names():
    names = list_models()
    assert {"Conformer-Ti", "Conformer-S", "Conformer-B"} <= set(names)
    assert isinstance(build_encoder("conformer-s", **SMALL), ConformerEncoder)  # any case


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_declarations_and_size(name, monkeypatch):
    # Shapes only: skip the (slow) random initialisation and allocate nothing.
    monkeypatch.setattr(ConformerEncoder, "_init_weights", lambda self: None)
    with torch.device("meta"):
        enc = build_encoder(name)
    c1, dim, official = VARIANTS[name]
    assert enc.weight_family == "conformer"
    assert (enc.bottleneck_stride, enc.size_divisor) == (16, 16)
    assert enc.bottleneck_channels == 4 * c1 + dim
    assert enc.skip_channels == (2 * c1, c1, 64)
    assert len(enc.stage_names) == 11 and enc.group_ends == (4, 8, 12)
    heads = (4 * c1 + 1) * 1000 + (dim + 1) * 1000  # conv_cls_head + trans_cls_head
    assert round((count_parameters(enc) + heads) / 1e5) == round(official / 1e5)


@pytest.mark.parametrize("hw", [(64, 96), (48, 80), (80, 48)])  # 48, 80: not divisible by 32
def test_shapes_match_declarations(small, hw):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = small(x)
    h, w = hw
    assert out.bottleneck.shape == (2, small.bottleneck_channels, h // 16, w // 16)
    for skip, c, s in zip(out.skips, small.skip_channels, (8, 4, 2)):
        assert skip.shape == (2, c, h // s, w // s)
    assert out.attentions is None


def test_bottleneck_is_cnn_map_and_normed_tokens(small):
    x = torch.randn(1, 3, 48, 80)  # token grid 3x5, final CNN map 2x3
    with torch.no_grad():
        f = small.forward_features(x)
        out = small(x)
    assert f.grid == (3, 5) and f.cnn[-1].shape[-2:] == (2, 3)
    torch.testing.assert_close(out.bottleneck, fuse_bottleneck(f.cnn[-1], f.normed, f.grid))
    cc = f.cnn[-1].shape[1]
    tokens = out.bottleneck[:, cc:]  # (1, C, 3, 5) == normed patch tokens, row-major
    torch.testing.assert_close(tokens.flatten(2).transpose(1, 2), f.normed[:, 1:])
    cnn = out.bottleneck[:, :cc]  # corners aligned: even 1/16 pixels are the 1/32 pixels
    torch.testing.assert_close(cnn[..., ::2, ::2], f.cnn[-1])
    torch.testing.assert_close(cnn[..., 1, 1], f.cnn[-1][..., :2, :2].mean((-2, -1)))
    # The class token is not in the map but steers every patch token through attention.
    assert f.tokens[-1].shape[1] == 1 + 15


def test_skips_are_the_stage_ends(small):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f = small.forward_features(x)
        out = small(x)
    assert len(f.cnn) == len(f.tokens) == small.depth == 3
    assert out.skips[0] is not None and torch.equal(out.skips[0], f.cnn[1])  # 1/8
    assert torch.equal(out.skips[1], f.cnn[0])  # 1/4
    assert torch.equal(out.skips[2], f.stem)  # 1/2, before the max-pool
    assert torch.equal(F.max_pool2d(f.stem, 3, 2, 1), small.maxpool(f.stem))


def test_attention_maps(small):
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        plain = small(x)
        out = small(x, return_attention=True)
    n = 1 + (48 // 16) * (64 // 16)
    assert len(out.attentions) == small.depth
    for a in out.attentions:
        assert a.shape == (2, 3, n, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, n))
    torch.testing.assert_close(out.bottleneck, plain.bottleneck)


def test_bad_sizes_and_options():
    enc = build_encoder("Conformer-Ti", **SMALL)
    with pytest.raises(ValueError, match="not divisible by 16"):
        enc(torch.randn(1, 3, 64, 72))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        enc(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="multiple of 3"):
        build_encoder("Conformer-Ti", **{**SMALL, "depth": 4})
    with pytest.raises(ValueError, match="not divisible by 16"):
        build_encoder("Conformer-Ti", img_size=200, **SMALL)
    with pytest.raises(ValueError, match="unknown encoder option"):
        build_encoder("Conformer-Ti", patch_size=32)


def test_drop_path_schedule_and_eval_determinism():
    enc = build_encoder("Conformer-Ti", **{**SMALL, "drop_path": 0.2})
    rates = [enc.trans_1.drop_path.p] + [getattr(enc, n).trans_block.drop_path.p
                                         for n in enc.stage_names]
    assert rates == pytest.approx([0.0, 0.1, 0.2])  # linear from 0, as the official
    x = torch.randn(4, 3, 32, 32)
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(x).bottleneck, enc(x).bottleneck)
        # eval BN: a sample does not depend on the rest of its batch
        torch.testing.assert_close(enc(x[:1]).bottleneck, enc(x).bottleneck[:1])


def test_float64_and_every_parameter_learns():
    torch.manual_seed(0)
    model = build_model("Conformer-Ti", 3, img_size=32, decoder_channels=(16, 8, 8, 4),
                        head_channels=16, **SMALL).double().train()
    assert model.decoder.used_skip_channels == model.encoder.skip_channels  # n_skip = 3
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)  # a CT slice, repeated to 3 channels
    logits = model(x)
    assert logits.shape == (2, 3, 32, 32) and logits.dtype == torch.float64
    F.cross_entropy(logits, torch.randint(0, 3, (2, 32, 32))).backward()
    dead = [n for n, p in model.encoder.named_parameters()
            if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"encoder tensors without gradient: {dead}"
