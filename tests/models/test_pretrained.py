"""load_pretrained: format detection, safe reading, and clear refusals."""
import argparse
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from transunet_app.errors import CheckpointError
from transunet_app.models import build_encoder, build_model, load_pretrained
from transunet_app.testing import golden
from transunet_app.testing.google_npz import write_npz

GOLDEN = Path(__file__).resolve().parents[1] / "fidelity" / "golden"


@pytest.fixture(scope="module")
def official_r50(tmp_path_factory):
    g = golden.load_golden(GOLDEN / "transunet_r50_vit_b16_pth.npz")
    state = golden.official_like_state(g["schema"], seed=0, dtype=torch.float32)
    path = tmp_path_factory.mktemp("w") / "epoch_149.pth"
    torch.save(state, path)
    return path, state


def test_official_pth_loads_every_tensor(official_r50):
    path, state = official_r50
    model = build_model("R50-ViT-B_16", 9)
    report = load_pretrained(model, path)
    assert report.format == "official TransUNet"
    assert not report.missing and not report.skipped
    q = state["transformer.encoder.layer.3.attn.query.weight"]
    assert torch.equal(model.encoder.blocks[3].attn.qkv.weight[:768], q)
    assert "loaded" in report.summary()


def test_wrapped_official_pth(tmp_path, official_r50):
    _, state = official_r50
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    report = load_pretrained(build_model("R50-ViT-B_16", 9), path)
    assert report.format == "official TransUNet" and not report.missing


def test_different_class_count_is_refused(official_r50):
    with pytest.raises(CheckpointError, match="different number of classes"):
        load_pretrained(build_model("R50-ViT-B_16", 4), official_r50[0])


def test_wrong_variant_is_refused(official_r50):
    with pytest.raises(CheckpointError, match="no place in ViT-B_16"):
        load_pretrained(build_model("ViT-B_16", 9), official_r50[0])


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load.*pickled"):
        load_pretrained(build_model("tiny", 3), path)
    assert not marker.exists()


def test_deit_style_args_namespace_is_allowed(tmp_path):
    enc = build_encoder("ViT-B_16", num_layers=2)
    sd = {"patch_embed.proj.weight": torch.randn(768, 3, 16, 16), "patch_embed.proj.bias": torch.randn(768),
          "cls_token": torch.randn(1, 1, 768), "pos_embed": torch.randn(1, 197, 768),
          "norm.weight": torch.ones(768), "norm.bias": torch.zeros(768),
          "head.weight": torch.randn(1000, 768), "head.bias": torch.zeros(1000)}
    for k, v in enc.state_dict().items():
        if k.startswith("blocks."):
            sd[k] = torch.randn_like(v)
    path = tmp_path / "deit.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-3), "epoch": 299}, path)
    report = load_pretrained(enc, path)
    assert report.format == "DeiT/timm ViT"
    assert {"cls_token", "head.weight", "head.bias"} <= set(report.skipped)
    assert torch.equal(enc.pos_embed, sd["pos_embed"][:, 1:])


def test_corrupt_and_missing_files(tmp_path):
    model = build_model("tiny", 3)
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_pretrained(model, bad)
    good = tmp_path / "good.pth"
    torch.save(model.state_dict(), good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_pretrained(model, trunc)
    npz = tmp_path / "bad.npz"
    npz.write_bytes(gzip.compress(b"nope"))
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_pretrained(model, npz)


def test_unrecognised_format(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint format"):
        load_pretrained(build_model("tiny", 3), path)


def test_npz_into_bare_encoder_and_missing_stem(tmp_path):
    npz = tmp_path / "ViT-B_16.npz"
    write_npz(npz, hybrid=False)
    enc = build_encoder("ViT-B_16")
    report = load_pretrained(enc, npz)
    assert report.format == "Google ViT .npz" and not report.missing
    # A pure-ViT file lacks the ResNet stem a hybrid needs: refused, not half-loaded.
    with pytest.raises(CheckpointError, match="lacks tensor 'conv_root/kernel'"):
        load_pretrained(build_model("R50-ViT-B_16", 9), npz)


def test_npz_with_pickle_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        load_pretrained(build_model("tiny", 3), path)
