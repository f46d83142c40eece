"""Every registered model, parametrised over the registry: a new backbone is tested for free."""
import pytest
import torch

from transunet_app.models import build_encoder, build_model, list_models

OFFICIAL = ["R50-ViT-B_16", "R50-ViT-L_16", "ViT-B_16", "ViT-B_32", "ViT-L_16"]
ALL = list_models()
# Training steps of the largest variants take ~1 min each on 2 CPU cores: slow marker.
LARGE = {"R50-ViT-L_16", "ViT-L_16", "CvT-W24", "Conformer-B", "CeiT-B"}
ALL_LEARN = [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in ALL]


def test_official_variants_registered():
    assert set(OFFICIAL + ["tiny"]) <= set(ALL)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*R50-ViT-B_16"):
        build_model("R51-ViT-B_16", 9)


def test_names_are_case_insensitive():
    assert build_model("TINY", 3).model_name == "tiny"


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError, match="unknown encoder option"):
        build_model("tiny", 3, hidden_sise=12)


def test_duplicate_registration_refused():
    from transunet_app.models.registry import get_spec, register_encoder

    spec = get_spec("tiny")
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("TINY", spec.builder)


@pytest.mark.parametrize("name", ALL)
def test_encoder_declarations_match_features(name):
    enc = build_encoder(name, img_size=224).eval()
    d = enc.size_divisor
    h, w = 2 * d, 3 * d  # non-square, small: declarations are size-independent
    with torch.inference_mode():
        out = enc(torch.randn(1, enc.in_channels, h, w))
    s = enc.bottleneck_stride
    assert out.bottleneck.shape == (1, enc.bottleneck_channels, h // s, w // s)
    for skip, ch, stride in zip(out.skips, enc.skip_channels, (8, 4, 2)):
        if ch == 0:
            assert skip is None
        else:
            assert skip.shape == (1, ch, h // stride, w // stride)


def _second_size(model):
    d = model.encoder.size_divisor
    return (max(160 // d, 2) * d, max(192 // d, 3) * d)


@pytest.mark.parametrize("name", ALL)
def test_forward_at_224_and_a_second_size(name):
    model = build_model(name, 9).eval()
    for size in [(224, 224), _second_size(model)]:
        x = torch.randn(1, 1, *size)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        assert y.shape == (1, 9, *size)
        assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", ALL_LEARN)
def test_every_model_learns(name):
    """A few optimisation steps of the full model on a tiny batch lower the loss."""
    torch.manual_seed(0)
    d = build_encoder(name).size_divisor
    size = (2 * max(d, 32), 2 * max(d, 32))
    model = build_model(name, 3, img_size=size).train()
    x = torch.randn(2, 1, *size)
    y = (x[:, 0] > 0.5).long() + (x[:, 0] > 1.5).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses
