"""``transunet convert``: an official TransUNet state dict becomes a checkpoint segment can use."""
import subprocess
import sys
from pathlib import Path

import torch

from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint
from transunet_app.models import build_model, load_pretrained
from transunet_app.testing import golden

ROOT = Path(__file__).resolve().parents[2]


def test_convert_official_checkpoint(tmp_path):
    g = golden.load_golden(ROOT / "tests" / "fidelity" / "golden" / "transunet_vit_b16_pth.npz")
    official = tmp_path / "epoch_149.pth"
    torch.save({"module." + k: v for k, v in
                golden.official_like_state(g["schema"], 0, torch.float32).items()}, official)
    out = tmp_path / "converted.pt"
    cmd = [sys.executable, "-m", "transunet_app", "convert", str(official), "-o", str(out),
           "--model", "ViT-B_16"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["classes"][5] == "liver" and ckpt["preprocessing"]["hu_window"] == [-125.0, 275.0]
    converted = model_from_checkpoint(ckpt).eval()
    direct = build_model("ViT-B_16", 9)
    load_pretrained(direct, official)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(converted(x), direct.eval()(x))
    # never overwrites silently; the error is one line, exit code 2
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "exists" in r.stderr
