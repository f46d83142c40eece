"""Our CeiT encoders against the official coeusguo/ceit code, through golden files it recorded
(``tools/golden/make_golden_ceit.py``).

Each test writes a checkpoint in the official release format itself (the DeiT-style training
checkpoint ``{'model': state, 'optimizer': ..., 'epoch': ..., 'args': Namespace}``, or the bare
state dict), loads it with ``load_pretrained`` into our encoder built in float64, and compares
the tokens after the last block, the I2T stem maps (our skips) and the official class
embedding (LCA + norm): relative error <= 1e-10.
"""
import argparse
from pathlib import Path

import pytest
import torch

from transunet_app.errors import CheckpointError
from transunet_app.models import build_encoder, build_model, load_pretrained
from transunet_app.testing import golden

from .float64_depthwise import float64

GOLDEN = Path(__file__).resolve().parent / "golden"
LCA_KEYS = ("lca.", "pos_layer_embed", "norm.")


def _write_official(path, g, wrap=True):
    state = golden.official_like_state(g["schema"], seed=0)
    if wrap:  # main.py: utils.save_on_master({...}, checkpoint_path)
        state = {"model": state, "optimizer": {"state": {}, "param_groups": []},
                 "lr_scheduler": {}, "epoch": 299, "scaler": {},
                 "args": argparse.Namespace(model="ceit_tiny_patch16_224", lr=5e-4)}
    torch.save(state, path)
    return path


def _compare(encoder, g, dtype=torch.float64):
    """Relative errors of every recorded output, from one forward pass."""
    encoder = encoder.to(dtype).eval()
    x = golden.make_input(g["input_shape"], g["input_seed"], dtype)
    with torch.no_grad():
        f = encoder.features(x)
        ours = {"tokens": f.tokens, "stem_quarter": f.stem_quarter, "stem_half": f.stem_half}
        if encoder.include_lca:
            ours["class_embedding"] = encoder.class_embedding(f.cls_tokens)
    assert set(g["outputs"]) <= set(ours) | {"class_embedding"}
    return {k: golden.relative_error(ours[k], v) for k, v in g["outputs"].items() if k in ours}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """CeiT-T golden (224), its official checkpoint, and a float64 encoder with LCA loaded
    from it."""
    g = golden.load_golden(GOLDEN / "ceit_t.npz")
    path = _write_official(tmp_path_factory.mktemp("ceit") / "ceit_tiny.pth", g)
    encoder = float64(build_encoder("CeiT-T", include_lca=True))
    report = load_pretrained(encoder, path)
    assert report.format == "official CeiT"
    assert set(report.skipped) == {"head.weight", "head.bias"} and not report.missing
    return g, path, encoder


def test_tokens_stem_and_class_embedding_float64(tiny):
    g, _, encoder = tiny
    errors = _compare(encoder, g)
    assert set(errors) == {"tokens", "stem_quarter", "stem_half", "class_embedding"}
    assert max(errors.values()) <= 1e-10, errors


def test_segmentation_encoder_and_full_model_load_the_same_weights(tiny):
    """The default encoder (no LCA) and a full model take the same tensors from the release;
    LCA, its layer embedding, the final norm and the head are skipped and reported."""
    g, path, reference = tiny
    ref = reference.state_dict()
    for target in (build_encoder("CeiT-T"), build_model("CeiT-T", 9)):
        report = load_pretrained(target, path)
        skipped = set(report.skipped)
        assert {"head.weight", "head.bias", "pos_layer_embed", "norm.weight"} <= skipped
        assert all(k.startswith(("head.",) + LCA_KEYS) for k in skipped)
        encoder = getattr(target, "encoder", target)
        assert not [k for k in report.missing if k.startswith("encoder.") or encoder is target]
        own = encoder.state_dict()
        assert set(own) == {k for k in ref if not k.startswith(LCA_KEYS)}
        for k, v in own.items():
            assert torch.equal(v, ref[k].to(v.dtype)), k


def test_position_embeddings_resized_like_official_finetuning(tmp_path):
    """A 224 release into a 256 encoder: the grid part of pos_embed is resized bicubically,
    as the official fine-tuning code does, and the tokens match the official model at 256."""
    g = golden.load_golden(GOLDEN / "ceit_t_resize.npz")
    encoder = float64(build_encoder("CeiT-T", img_size=256))
    report = load_pretrained(encoder, _write_official(tmp_path / "c.pth", g, wrap=False))
    assert report.resized == {"pos_embed": ((1, 197, 192), (1, 257, 192))}
    errors = _compare(encoder, g)
    assert errors["tokens"] <= 1e-10, errors


@pytest.mark.slow
@pytest.mark.parametrize("case,name", [("ceit_s", "CeiT-S"), ("ceit_b", "CeiT-B")])
def test_other_variants_float64(tmp_path, case, name):
    g = golden.load_golden(GOLDEN / f"{case}.npz")
    encoder = float64(build_encoder(name, include_lca=True))
    load_pretrained(encoder, _write_official(tmp_path / "c.pth", g))
    errors = _compare(encoder, g)
    assert max(errors.values()) <= 1e-10, errors


def test_float32_close_to_official(tiny):
    g, _, encoder = tiny
    try:
        errors = _compare(encoder.float(), g, torch.float32)
    finally:
        encoder.double()
    assert max(errors.values()) <= 1e-4, errors


def test_golden_detects_a_wrong_eps(tiny):
    """The check sees a LayerNorm eps slip (1e-6 -> 2e-6)."""
    g, _, encoder = tiny
    norms = [m for m in encoder.blocks.modules() if isinstance(m, torch.nn.LayerNorm)]
    for m in norms:
        m.eps = 2e-6
    try:
        errors = _compare(encoder, g)
    finally:
        for m in norms:
            m.eps = 1e-6
    assert errors["tokens"] > 1e-9, errors


def test_other_family_checkpoint_is_refused(tmp_path):
    cvt = {"stage0.patch_embed.proj.weight": torch.zeros(64, 3, 7, 7)}
    path = tmp_path / "cvt.pth"
    torch.save(cvt, path)
    with pytest.raises(CheckpointError, match="cvt family.*CeiT-T takes ceit weights"):
        load_pretrained(build_encoder("CeiT-T", depth=1), path)


def test_other_variant_checkpoint_is_refused(tiny, tmp_path):
    _, path, _ = tiny
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        load_pretrained(build_encoder("CeiT-S"), path)
    with pytest.raises(CheckpointError, match="wrong variant"):
        load_pretrained(build_encoder("CeiT-T", depth=6), path)
