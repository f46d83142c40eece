"""Our Conformer encoders against the official implementation, through golden files it recorded.

``tools/golden/make_golden_conformer.py`` ran the official ``Conformer`` (pengzhiliang/Conformer) in
float64 on a deterministic state dict and recorded, per stage group, its CNN-branch map and its
tokens, the normalised final tokens and the 1/2 stem map. Each test here writes that state dict
in an official release format itself (raw, as ``main.py`` saves it with ``{'model': ...}`` and
training extras, or DataParallel ``module.``), loads it with ``load_pretrained`` into our
encoder built in float64, and compares every recorded output: relative error <= 1e-10 (a wrong
normalisation eps shows as ~1e-9..1e-5 here; float32 is held to 1e-5).

Full-size float64 forwards are slow on 2 cores: Conformer-Ti (224x224) and Conformer-S
(144x112, odd token grid) run by default, Conformer-B and the float32 check are ``slow``.
"""
import argparse
from pathlib import Path

import pytest
import torch

from transunet_app.errors import CheckpointError
from transunet_app.models import build_encoder, build_model, load_pretrained
from transunet_app.testing import golden

GOLDEN = Path(__file__).resolve().parent / "golden"
HEADS = {"conv_cls_head.weight", "conv_cls_head.bias", "trans_cls_head.weight",
         "trans_cls_head.bias"}
#: the official ``Conformer(base_channel=64, channel_ratio=0.25, embed_dim=48, depth=3, ...)``
#: the reduced golden file was recorded with, as overrides of a registered variant.
REDUCED = dict(channel_ratio=0.25, embed_dim=48, depth=3, num_heads=3)


def _write(tmp_path, g, wrap="raw", drop=()):
    """An official-format checkpoint of the golden state dict.

    wrap: ``raw`` (a bare state dict), ``main_py`` (the ``{'model', 'epoch', 'args', ...}``
    dict the official ``main.py`` saves) or ``module`` (DataParallel prefix).
    """
    state = golden.official_like_state(g["schema"], seed=0)
    for k in drop:
        del state[k]
    if wrap == "module":
        state = {"module." + k: v for k, v in state.items()}
    elif wrap == "main_py":
        state = {"model": state, "epoch": 299, "lr_scheduler": {"last_epoch": 299},
                 "args": argparse.Namespace(model="Conformer_small_patch16", drop_path=0.1)}
    path = tmp_path / f"conformer_{wrap}.pth"
    torch.save(state, path)
    return path


def _feature(f, name):
    if name == "stem":
        return f.stem
    if name == "normed":
        return f.normed
    kind, stage = name.split("_")
    return (f.cnn if kind == "cnn" else f.tokens)[int(stage) - 1]


def _check(encoder, g, dtype=torch.float64, tol=1e-10):
    encoder = encoder.to(dtype).eval()
    x = golden.make_input(g["input_shape"], g["input_seed"], dtype)
    with torch.no_grad():
        f = encoder.forward_features(x)
    errors = {name: golden.relative_error(_feature(f, name), expected)
              for name, expected in g["outputs"].items()}
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, f"outputs beyond {tol}: {bad}"
    return errors


def _reduced(g):
    return build_encoder("Conformer-Ti", img_size=g["input_shape"][2:], **REDUCED)


@pytest.mark.parametrize("case,name,wrap", [
    ("conformer_ti", "Conformer-Ti", "raw"),
    ("conformer_s", "Conformer-S", "main_py"),
    pytest.param("conformer_b", "Conformer-B", "module", marks=pytest.mark.slow),
])
def test_official_release_float64(tmp_path, case, name, wrap):
    g = golden.load_golden(GOLDEN / f"{case}.npz")
    encoder = build_encoder(name, img_size=g["input_shape"][2:]).double()
    report = load_pretrained(encoder, _write(tmp_path, g, wrap))
    assert report.format == "official Conformer"
    assert set(report.skipped) == HEADS and not report.missing and not report.resized
    assert len(report.loaded) == len(g["schema"]) - len(HEADS)
    errors = _check(encoder, g)
    assert {"cnn_4", "tokens_4", "cnn_8", "tokens_8", "cnn_12", "tokens_12",
            "normed"} <= set(errors)


def test_reduced_depth_every_stage_and_encoder_output(tmp_path):
    """Depth 3 (one stage per resolution): every stage, and the skips the decoder gets."""
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    encoder = _reduced(g).double()
    report = load_pretrained(encoder, _write(tmp_path, g, "module"))
    assert set(report.skipped) == HEADS and not report.missing
    errors = _check(encoder, g)
    assert set(errors) == {"stem", "cnn_1", "tokens_1", "cnn_2", "tokens_2", "cnn_3",
                           "tokens_3", "normed"}
    x = golden.make_input(g["input_shape"], g["input_seed"])
    with torch.no_grad():
        out = encoder(x)
    # The decoder's skips are the official maps at 1/8 (end of stage 2 here), 1/4, 1/2.
    for skip, name in zip(out.skips, ("cnn_2", "cnn_1", "stem")):
        assert golden.relative_error(skip, g["outputs"][name]) <= 1e-10


def test_whole_model_takes_encoder_weights(tmp_path):
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    model = build_model("Conformer-Ti", 9, img_size=g["input_shape"][2:], **REDUCED).double()
    report = load_pretrained(model, _write(tmp_path, g, "main_py"))
    assert all(k.startswith("encoder.") for k in report.loaded)
    assert report.missing and all(not k.startswith("encoder.") for k in report.missing)
    _check(model.encoder, g)


@pytest.mark.parametrize("where,eps", [
    ("bn1", 1e-6),  # the stem BN keeps PyTorch's 1e-5, unlike the blocks
    ("trans_norm", 1e-6),  # so does the final LayerNorm
    ("conv_trans_2.cnn_block.bn2", 1e-5),  # the CNN blocks use 1e-6
    ("conv_trans_2.squeeze_block.ln", 1e-5),  # and so does the FCU-down LayerNorm
])
def test_golden_detects_a_wrong_eps(tmp_path, where, eps):
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    encoder = _reduced(g).double()
    load_pretrained(encoder, _write(tmp_path, g))
    encoder.get_submodule(where).eps = eps
    with pytest.raises(AssertionError, match="beyond"):
        _check(encoder, g)


def test_golden_detects_a_wrong_interpolation(tmp_path, monkeypatch):
    """FCU up-sampling is nearest in the official code; bilinear would be a silent change."""
    import transunet_app.models.encoders.conformer as conformer

    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    encoder = _reduced(g).double()
    load_pretrained(encoder, _write(tmp_path, g))
    real = conformer.F.interpolate
    monkeypatch.setattr(conformer.F, "interpolate",
                        lambda x, size=None, mode="nearest", **kw: real(
                            x, size=size, mode="bilinear" if mode == "nearest" else mode, **kw))
    with pytest.raises(AssertionError, match="beyond"):
        _check(encoder, g)


@pytest.mark.slow
def test_official_release_float32(tmp_path):
    g = golden.load_golden(GOLDEN / "conformer_ti.npz")
    encoder = build_encoder("Conformer-Ti")
    load_pretrained(encoder, _write(tmp_path, g))
    _check(encoder, g, torch.float32, tol=1e-5)  # measured ~6e-7


# ------------------------------------------------------------------------------ refusals


def test_missing_tensor_is_refused(tmp_path):
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    path = _write(tmp_path, g, drop=("conv_trans_3.fusion_block.residual_bn.running_var",))
    with pytest.raises(CheckpointError, match="lacks 1 tensors.*residual_bn.running_var"):
        load_pretrained(_reduced(g), path)


def test_other_variant_is_refused(tmp_path):
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    path = _write(tmp_path, g)
    wider = build_encoder("Conformer-Ti", **{**REDUCED, "embed_dim": 96})
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        load_pretrained(wider, path)
    deeper = build_encoder("Conformer-Ti", **{**REDUCED, "depth": 6})
    with pytest.raises(CheckpointError, match="wrong variant"):
        load_pretrained(deeper, path)


def test_checkpoint_of_another_family_is_refused(tmp_path):
    g = golden.load_golden(GOLDEN / "conformer_reduced.npz")
    deit = {"cls_token": torch.zeros(1, 1, 48), "pos_embed": torch.zeros(1, 197, 48),
            "patch_embed.proj.weight": torch.zeros(48, 3, 16, 16),
            "patch_embed.proj.bias": torch.zeros(48),
            "blocks.0.attn.qkv.weight": torch.zeros(144, 48), "head.weight": torch.zeros(10, 48)}
    torch.save({"model": deit}, tmp_path / "deit.pth")
    with pytest.raises(CheckpointError, match=r"DeiT/timm ViT checkpoint \(vit family\).*"
                                              r"takes conformer weights"):
        load_pretrained(_reduced(g), tmp_path / "deit.pth")
    # ... and the other way round: Conformer weights into a ViT-family encoder.
    with pytest.raises(CheckpointError, match=r"official Conformer checkpoint \(conformer "
                                              r"family\)"):
        load_pretrained(build_encoder("tiny"), _write(tmp_path, g))
