"""Our CvT encoders against the official microsoft/CvT code, through golden files it recorded
(``tools/golden/make_golden_cvt.py``).

Each test writes a checkpoint in the official release format itself (the plain state dict of
``ConvolutionalVisionTransformer``, or a training checkpoint ``{'state_dict': ...}``), loads it
with ``load_pretrained`` into our encoder (bare, or inside a full model) built in float64, and
compares the four official stage outputs (token maps of stages 1-3, stage-3 class token):
relative error <= 1e-10 in float64.
"""
from pathlib import Path

import pytest
import torch

from transunet_app.errors import CheckpointError
from transunet_app.models import build_encoder, build_model, load_pretrained
from transunet_app.models.encoders.cvt import LayerNorm
from transunet_app.testing import golden

from .float64_depthwise import float64

GOLDEN = Path(__file__).resolve().parent / "golden"
OUTPUTS = ("stage1", "stage2", "stage3", "cls_token")
HEAD_KEYS = {"head.weight", "head.bias", "norm.weight", "norm.bias"}


def _write_official(tmp_path, g, wrap=None, extra=None):
    state = golden.official_like_state(g["schema"], seed=0)
    state.update(extra or {})
    if wrap == "state_dict":  # the official training checkpoint (lib/utils/utils.py)
        state = {"epoch": 300, "model": "cls_cvt", "state_dict": state, "perf": 81.6}
    elif wrap == "module":
        state = {"module." + k: v for k, v in state.items()}
    path = tmp_path / "cvt_official.pth"
    torch.save(state, path)
    return path


def _stage_outputs(encoder, g, dtype=torch.float64, contract=False):
    encoder = encoder.to(dtype).eval()
    x = golden.make_input(g["input_shape"], g["input_seed"], dtype)
    with torch.no_grad():
        outs = dict(zip(OUTPUTS, encoder.stage_outputs(x)))
        if contract:  # the encoder contract exposes exactly the official stage maps
            feats = encoder(x)
            assert feats.bottleneck.equal(outs["stage3"])
            assert feats.skips[0].equal(outs["stage2"]) and feats.skips[1].equal(outs["stage1"])
            assert feats.skips[2] is None
    return outs


def _check(g, target, path, full_model, contract=False):
    encoder = target.encoder if full_model else target
    report = load_pretrained(target, path)
    assert report.format == "official CvT"
    assert set(report.skipped) == HEAD_KEYS
    assert report.loaded and not [k for k in report.missing
                                  if k.startswith("encoder.") or not full_model]
    outs = _stage_outputs(encoder, g, contract=contract)
    errors = {k: golden.relative_error(outs[k], g["outputs"][k]) for k in OUTPUTS}
    assert max(errors.values()) <= 1e-10, errors
    return encoder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The CvT-13 golden (2x3x64x96), its official state written once, and an encoder
    loaded from it."""
    g = golden.load_golden(GOLDEN / "cvt_13_small.npz")
    path = _write_official(tmp_path_factory.mktemp("cvt"), g)
    encoder = _check(g, float64(build_encoder("CvT-13")), path, False, contract=True)
    return g, path, encoder


def test_official_release_into_bare_encoder_float64(small):
    g, _, encoder = small  # the fixture ran the check; re-check the cached encoder is intact
    outs = _stage_outputs(encoder, g)
    assert golden.relative_error(outs["stage3"], g["outputs"]["stage3"]) <= 1e-10


def test_official_training_checkpoint_into_full_model_float64(small, tmp_path):
    g, path, _ = small
    wrapped = tmp_path / "checkpoint.pth"  # lib/utils/utils.py save_checkpoint_on_master
    torch.save({"epoch": 300, "model": "cls_cvt", "perf": 81.6,
                "state_dict": torch.load(path, weights_only=True)}, wrapped)
    model = float64(build_model("CvT-13", 9))
    _check(g, model, wrapped, True)


@pytest.mark.slow
@pytest.mark.parametrize("case,name,wrap,full_model", [
    ("cvt_13", "CvT-13", "module", True),
    ("cvt_21", "CvT-21", None, False),
    ("cvt_w24", "CvT-W24", "state_dict", False),
])
def test_official_stage_outputs_float64_all_variants(tmp_path, case, name, wrap, full_model):
    g = golden.load_golden(GOLDEN / f"{case}.npz")
    target = float64(build_model(name, 9) if full_model else build_encoder(name))
    _check(g, target, _write_official(tmp_path, g, wrap), full_model)


def test_float32_close_to_official(small):
    g, _, encoder = small
    outs = _stage_outputs(encoder.float(), g, torch.float32)
    encoder.double()
    for k in OUTPUTS:
        assert golden.relative_error(outs[k], g["outputs"][k]) <= 1e-4


@pytest.mark.parametrize("perturb", ["layernorm_eps", "head_dim_scale"])
def test_golden_detects_small_deviations(small, perturb):
    """The check sees a LayerNorm eps slip (1e-5 -> 2e-5) and the usual head-dim attention
    scale instead of CvT's full-dim one."""
    g, _, encoder = small
    saved = {}
    for m in encoder.modules():
        if perturb == "layernorm_eps" and isinstance(m, LayerNorm):
            saved[m] = ("eps", m.eps)
            m.eps = 2e-5
        elif perturb == "head_dim_scale" and hasattr(m, "conv_proj_q"):
            saved[m] = ("scale", m.scale)
            m.scale = (m.proj.in_features // m.num_heads) ** -0.5
    try:
        outs = _stage_outputs(encoder, g)
    finally:
        for m, (attr, value) in saved.items():
            setattr(m, attr, value)
    assert golden.relative_error(outs["stage3"], g["outputs"]["stage3"]) > 1e-9


def test_other_family_checkpoint_is_refused(tmp_path):
    vit = {"patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
           "blocks.0.attn.qkv.weight": torch.zeros(2304, 768),
           "pos_embed": torch.zeros(1, 197, 768)}
    path = tmp_path / "deit.pth"
    torch.save({"model": vit}, path)
    with pytest.raises(CheckpointError, match="vit family.*CvT-13 takes cvt weights"):
        load_pretrained(build_encoder("CvT-13", depths=(1, 1, 1)), path)


def test_other_variant_checkpoint_is_refused(small, tmp_path):
    """A CvT-21 file (more stage-3 blocks) does not silently half-load into CvT-13."""
    _, official, encoder = small
    state = torch.load(official, weights_only=True)
    state["stage2.blocks.10.norm1.weight"] = torch.ones(384)
    path = tmp_path / "cvt21_like.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="wrong variant"):
        load_pretrained(encoder, path)
    # ... and a W24-sized tensor does not fit either.
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        torch.save({"stage0.patch_embed.proj.weight": torch.zeros(192, 3, 7, 7)}, path)
        load_pretrained(encoder, path, strict=False)
