"""Our TransUNet against the official implementation, through golden files it recorded.

Each test writes a checkpoint in the official format itself (state dict with the official
keys, plain or DataParallel-wrapped; Google ``.npz``), loads it with ``load_pretrained``, and
compares the logits to what the official code computed from the same file, in float64
(relative error <= 1e-10 -- a wrong normalisation eps shows as ~1e-11..1e-6 here) and float32
(<= 1e-4).
"""
from pathlib import Path

import pytest
import torch

from transunet_app.models import build_model, load_pretrained
from transunet_app.testing import golden
from transunet_app.testing.google_npz import write_npz

GOLDEN = Path(__file__).resolve().parent / "golden"


def _official_pth(tmp_path, g, wrap=False):
    state = golden.official_like_state(g["schema"], seed=0)
    if wrap:
        state = {"module." + k: v for k, v in state.items()}
    path = tmp_path / ("dp.pth" if wrap else "official.pth")
    torch.save(state, path)
    return path


def _run(model, g, dtype):
    model = model.to(dtype).eval()
    x = golden.make_input(g["input_shape"], g["input_seed"], dtype)
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def r50_official(tmp_path_factory):
    """R50-ViT-B_16 in float64 with an official state dict loaded, and its path."""
    tmp = tmp_path_factory.mktemp("r50")
    g = golden.load_golden(GOLDEN / "transunet_r50_vit_b16_pth.npz")
    path = _official_pth(tmp, g)
    model = build_model("R50-ViT-B_16", 9).double()
    report = load_pretrained(model, path)
    return g, model.eval(), report, tmp


def test_official_r50_state_dict_float64(r50_official):
    g, model, report, _ = r50_official
    assert report.format == "official TransUNet" and not report.missing and not report.skipped
    err = golden.relative_error(_run(model, g, torch.float64), g["outputs"]["logits"])
    assert err <= 1e-10, err


def test_official_data_parallel_checkpoint_loads_identically(r50_official):
    g, model, _, tmp = r50_official
    wrapped = build_model("R50-ViT-B_16", 9).double()
    load_pretrained(wrapped, _official_pth(tmp, g, wrap=True))
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in wrapped.state_dict().items())


def test_official_vit_b16_state_dict_float64(tmp_path):
    g = golden.load_golden(GOLDEN / "transunet_vit_b16_pth.npz")
    model = build_model("ViT-B_16", 9).double()
    report = load_pretrained(model, _official_pth(tmp_path, g))
    assert not report.missing
    err = golden.relative_error(_run(model, g, torch.float64), g["outputs"]["logits"])
    assert err <= 1e-10, err


def test_official_state_dict_float32(tmp_path):
    g = golden.load_golden(GOLDEN / "transunet_r50_vit_b16_pth.npz")
    model = build_model("R50-ViT-B_16", 9)
    load_pretrained(model, _official_pth(tmp_path, g))
    err = golden.relative_error(_run(model, g, torch.float32), g["outputs"]["logits"])
    assert err <= 1e-4, err


@pytest.mark.parametrize("case,name,img", [
    ("transunet_r50_vit_b16_npz", "R50-ViT-B_16", 224),
    ("transunet_r50_vit_b16_npz_resize", "R50-ViT-B_16", 256),
    ("transunet_vit_b16_npz_resize", "ViT-B_16", 288),
])
def test_google_npz_float64(tmp_path, case, name, img):
    g = golden.load_golden(GOLDEN / f"{case}.npz")
    model = build_model(name, 9, img_size=img).double()
    # The official run initialised decoder and head from the same state dict, then read the
    # .npz into the encoder: do the same.
    load_pretrained(model, _official_pth(tmp_path, g))
    npz = tmp_path / "imagenet21k.npz"
    write_npz(npz, hybrid=name.startswith("R50"))
    report = load_pretrained(model, npz)
    assert report.format == "Google ViT .npz"
    assert set(report.skipped) == {"cls", "head/kernel", "head/bias"}
    assert all(not k.startswith("encoder.") for k in report.missing)
    if img != 224:
        assert "encoder.pos_embed" in report.resized
    err = golden.relative_error(_run(model, g, torch.float64), g["outputs"]["logits"])
    assert err <= 1e-10, err


def test_golden_detects_a_wrong_eps(r50_official):
    """The check is sharp enough to see a normalisation-eps slip (1e-5 -> 2e-5)."""
    g, model, _, _ = r50_official
    convs = [m for m in model.modules() if type(m).__name__ == "StdConv2d"]
    for m in convs:
        m.eps = 2e-5
    try:
        err = golden.relative_error(_run(model, g, torch.float64), g["outputs"]["logits"])
    finally:
        for m in convs:
            m.eps = 1e-5
    assert err > 1e-9, err
