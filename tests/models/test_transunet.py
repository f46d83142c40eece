"""TransUNet assembly: skips, channels, sizes, dtypes, attention maps."""
import pytest
import torch

from transunet_app.models import build_model, count_parameters


def test_centerpiece_parameter_count_matches_paper():
    # TransUNet paper / official code: 105.28M parameters for R50-ViT-B_16 (9 classes).
    assert round(count_parameters(build_model("R50-ViT-B_16", 9)) / 1e6, 2) == 105.28


@pytest.mark.parametrize("n_skip", [0, 1, 2, 3])
def test_n_skip_changes_decoder_inputs(n_skip):
    model = build_model("tiny", 4, img_size=64, n_skip=n_skip).eval()
    used = model.decoder.used_skip_channels
    assert sum(1 for c in used if c) == n_skip
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 4, 64, 64)


def test_n_skip_beyond_encoder_is_rejected():
    with pytest.raises(ValueError, match="n_skip"):
        build_model("ViT-B_16", 9, n_skip=3, num_layers=1)


@pytest.mark.parametrize("num_classes", [1, 2, 14])
def test_any_number_of_classes(num_classes):
    model = build_model("tiny", num_classes, img_size=64).eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, num_classes, 64, 64)


def test_one_channel_input_equals_repeated_three_channel():
    model = build_model("tiny", 3, img_size=64).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.repeat(1, 3, 1, 1)))


def test_non_square_input_and_runtime_size_change():
    model = build_model("tiny", 3, img_size=(224, 256)).eval()
    assert model.encoder.grid == (14, 16)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 256)).shape == (1, 3, 224, 256)
        assert model(torch.randn(1, 1, 96, 160)).shape == (1, 3, 96, 160)


def test_size_not_divisible_by_16_is_a_clear_error():
    model = build_model("tiny", 3, img_size=64).eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.randn(1, 1, 64, 72))


def test_vit_b32_tokens_at_1_32_full_resolution_logits():
    model = build_model("ViT-B_32", 2, num_layers=1).eval()
    assert model.encoder.bottleneck_stride == 32
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 2, 224, 224)


def test_attention_maps_vis_mode_same_logits():
    model = build_model("tiny", 3, img_size=64).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        plain = model(x)
        logits, attn = model(x, return_attention=True)
    assert torch.allclose(plain, logits, atol=1e-5)
    assert len(attn) == 2 and attn[0].shape == (2, 4, 16, 16)
    assert torch.allclose(attn[0].sum(-1), torch.ones(2, 4, 16))


def test_runs_in_float64_without_casts():
    model = build_model("tiny", 3, img_size=64).double().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64, dtype=torch.float64)).dtype == torch.float64


def test_bf16_autocast_and_channels_last_agree_with_fp32():
    torch.manual_seed(0)
    model = build_model("tiny", 3, img_size=64).eval()
    x = torch.randn(4, 1, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        xl = x.contiguous(memory_format=torch.channels_last)
        assert torch.allclose(model(xl), ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(xl).float()
    assert ((low - ref).norm() / ref.norm()).item() < 0.05


def test_stdconv_cache_follows_weight_updates():
    model = build_model("tiny", 3, img_size=64).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        before = model(x)
        conv = model.encoder.hybrid.root.conv
        conv.weight.copy_(torch.randn_like(conv.weight))
        after = model(x)
    fresh = model(x)  # grad mode: computed without the cache
    assert not torch.allclose(before, after)
    assert torch.allclose(after, fresh.detach(), atol=1e-6)


def test_predict_returns_probabilities_and_keeps_mode():
    model = build_model("tiny", 3, img_size=64).train()
    p = model.predict(torch.randn(1, 1, 64, 64))
    assert model.training and torch.allclose(p.sum(1), torch.ones(1, 64, 64), atol=1e-5)
