"""Fast layers (transunet_app.fast_layers) against the plain ones: the channels-last GroupNorm
equals torch's GroupNorm, the 15-bit dropout drops at rate p; the plain layers stay plain."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transunet_app.fast_layers.group_norm import ChannelsLastGroupNorm as GroupNorm
from transunet_app.fast_layers.group_norm import channels_last_group_norm


def _norm(groups, channels, dtype, eps=1e-6):
    torch.manual_seed(0)
    gn = GroupNorm(groups, channels, eps=eps).to(dtype)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    return gn


# (shape, groups): per-channel norm (TransUNet's projection GN), few channels per group, and a
# non-square map; all below 1024 pixels, where the fast path applies.
CASES = [((3, 64, 14, 14), 64), ((2, 128, 7, 9), 32), ((2, 32, 28, 28), 32)]


@pytest.mark.parametrize("shape,groups", CASES)
def test_channels_last_group_norm_equals_torch_in_float64(shape, groups):
    gn = _norm(groups, shape[1], torch.float64)
    # a large common offset per channel: E[x^2] - mean^2 must still be accurate
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 10).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        fast = gn(x)
        ref = F.group_norm(x.contiguous(), groups, gn.weight, gn.bias, gn.eps)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,groups", CASES)
def test_channels_last_group_norm_in_bf16_is_as_accurate_as_torch(shape, groups):
    gn = _norm(groups, shape[1], torch.float32)
    x = (torch.randn(shape) * 2 + 3).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = gn(x)
        native = F.group_norm(x, groups, gn.weight, gn.bias, gn.eps)
        exact = F.group_norm(x.double(), groups, gn.weight.double(), gn.bias.double(), gn.eps)
    assert fast.dtype == torch.bfloat16
    err_fast = (fast.double() - exact).abs().max()
    err_native = (native.double() - exact).abs().max()
    assert err_fast <= 1.5 * err_native + 1e-6


def test_group_norm_layer_with_autograd_gets_gradients():
    gn = _norm(16, 16, torch.float64)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gn(t), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape,groups", [((2, 8, 5, 6), 4), ((2, 6, 4, 4), 6), ((1, 4, 3, 5), 1)])
def test_channels_last_group_norm_gradients_in_float64(shape, groups):
    """The analytic backward against finite differences, for input, weight and bias."""
    gn = _norm(groups, shape[1], torch.float64)
    gn.weight.requires_grad_()
    gn.bias.requires_grad_()
    x = (torch.randn(shape, dtype=torch.float64) + 2).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, w, b: channels_last_group_norm(t, groups, w, b, 1e-6),
                                    (x, gn.weight, gn.bias))


def test_channels_last_group_norm_gradients_equal_torch_in_bf16():
    gn = _norm(32, 128, torch.float32)
    x0 = (torch.randn(2, 128, 14, 14) * 2 + 1).bfloat16().contiguous(memory_format=torch.channels_last)
    g = torch.randn(x0.shape).bfloat16().contiguous(memory_format=torch.channels_last)
    grads = []
    for fn in (lambda t: channels_last_group_norm(t, 32, gn.weight, gn.bias, gn.eps),
               lambda t: F.group_norm(t.double(), 32, gn.weight.double(), gn.bias.double(), gn.eps)):
        x = x0.clone().requires_grad_()
        gn.weight.grad = gn.bias.grad = None
        fn(x).backward(g.to(torch.float64) if fn(x0).dtype == torch.float64 else g)
        grads.append((x.grad.double(), gn.weight.grad.double().clone(), gn.bias.grad.double().clone()))
    for ours, exact in zip(*grads):
        assert ((ours - exact).abs().max() / exact.abs().max()) < 1e-2


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_dropout_drops_at_rate_p_and_scales_the_rest(p, dtype):
    from transunet_app.fast_layers.dropout import dropout

    torch.manual_seed(0)
    x = torch.rand(1000, 1001, dtype=dtype) + 1.0  # odd count: the last int64 is used in part
    y = dropout(x, p)
    dropped = y == 0
    # 1e6 Bernoulli(p) draws: std <= 5e-4, so 3e-3 is 6 standard deviations.
    assert abs(dropped.double().mean().item() - p) < 3e-3
    assert y.dtype == dtype
    torch.testing.assert_close(y[~dropped], (x * (1.0 / (1.0 - p)))[~dropped], rtol=0, atol=0)
    # No pattern between neighbours (each comes from another 16-bit slice of an int64).
    a, b = dropped.flatten()[:-1].double(), dropped.flatten()[1:].double()
    assert abs((a * b).mean().item() - p * p) < 3e-3


def test_dropout_backward_uses_the_forward_mask():
    from transunet_app.fast_layers.dropout import dropout

    torch.manual_seed(1)
    x = (torch.rand(64, 300, dtype=torch.float64) + 1.0).requires_grad_()
    g = torch.randn(64, 300, dtype=torch.float64)
    y = dropout(x, 0.25)
    y.backward(g)
    keep = y.detach() != 0
    torch.testing.assert_close(x.grad, g * keep * (1.0 / 0.75), rtol=0, atol=0)


def test_dropout_is_reproducible_from_the_seed_and_off_in_eval():
    from transunet_app.fast_layers.dropout import BitsDropout as Dropout

    layer = Dropout(0.1)
    x = torch.rand(8, 196, 64) + 1.0
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, layer(x))  # the generator moved on
    assert layer.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_transunet_vit_drops_attention_output_with_the_attention_rate():
    # Official vit_seg_modeling.Attention: proj_dropout = Dropout(attention_dropout_rate), while
    # the MLP and the embeddings use dropout_rate.
    from transunet_app.models import build_model

    model = build_model("tiny", 9)
    vit = [m for m in model.modules() if type(m).__name__ == "TransformerBlock"]
    assert vit
    for block in vit:
        assert block.attn.proj_drop.p == 0.0
        assert block.mlp.drop.p == 0.1


# --------------------------------------------------------------------------- plain vs fast


def test_plain_model_has_plain_layers_and_runs_without_kernels(monkeypatch):
    """build_model() gives torch's own layers; its forward never loads a C kernel."""
    from transunet_app.kernels import native
    from transunet_app.models import build_model

    def refuse(*a, **k):
        raise AssertionError("a plain forward tried to load a C kernel")

    monkeypatch.setattr(native, "load", refuse)
    model = build_model("tiny", 9, img_size=64)
    fast_modules = [type(m).__module__ for m in model.modules()
                    if type(m).__module__.startswith("transunet_app.fast_layers")]
    assert not fast_modules
    assert any(type(m) is torch.nn.Dropout for m in model.modules())
    assert any(type(m) is torch.nn.GroupNorm for m in model.modules())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        model.eval()(x.bfloat16().float())
        model.eval().bfloat16()(x.bfloat16().contiguous(memory_format=torch.channels_last))


def test_training_fast_paths_keep_parameters_and_state_dict_keys():
    from transunet_app.fast_layers import use_training_fast_paths
    from transunet_app.fast_layers.attention import DispatchAttention
    from transunet_app.fast_layers.dropout import BitsDropout
    from transunet_app.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", 9, img_size=64)
    params = {n: p for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before = model.eval()(x)
    counts = use_training_fast_paths(model)
    assert all(counts.values()), counts
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())
    assert any(type(m) is BitsDropout for m in model.modules())
    assert any(type(m) is DispatchAttention for m in model.modules())
    with torch.no_grad():
        after = model.eval()(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert use_training_fast_paths(model) == {k: 0 for k in counts}  # already swapped


def test_trainer_switches_on_the_fast_layers():
    """The one visible place: the Trainer's model carries the fast layers."""
    import inspect

    from transunet_app.engine import trainer

    assert "use_training_fast_paths(model)" in inspect.getsource(trainer.Trainer._build_model)


# --------------------------------------------------------------------------- pos embeddings


def test_resample_abs_pos_embed_keeps_prefix_and_matches_interpolate():
    from transunet_app.models.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4 * 6, 8, dtype=torch.float64)
    assert resample_abs_pos_embed(pos, (4, 6), (4, 6), num_prefix_tokens=1) is pos
    out = resample_abs_pos_embed(pos, (8, 3), (4, 6), num_prefix_tokens=1, mode="bicubic",
                                 align_corners=False)
    assert out.shape == (1, 1 + 24, 8) and out.dtype == torch.float64
    assert torch.equal(out[:, :1], pos[:, :1])
    grid = pos[:, 1:].reshape(1, 4, 6, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(8, 3), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 24, 8))
    # a square grid is inferred; corners of an aligned bilinear resize are the old corners
    sq = torch.randn(1, 9, 4)
    big = resample_abs_pos_embed(sq, (5, 5))
    torch.testing.assert_close(big[0, [0, 4, 20, 24]], sq[0, [0, 2, 6, 8]])
    with pytest.raises(ValueError, match="square grid"):
        resample_abs_pos_embed(torch.randn(1, 10, 4), (4, 4))
