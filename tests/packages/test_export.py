"""``transunet export``: ONNX and TorchScript give the torch model's logits on real CT slices.

The ONNX parity test is the one that fails on the wrong export path: the trained checkpoint
holds channels-last weights and the exporter gets a frozen (no-gradient) model, the two
conditions under which the former fast paths inside the layers (Attention's no-grad ``out=``
buffer write, GroupNorm's channels-last autograd Function) were exported as ONNX Constants
(logits 0.12-0.42 relative to eager); the plain layers must export exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint

from .conftest import ct_slices


def _eager(ckpt_path):
    model = model_from_checkpoint(load_checkpoint(ckpt_path)).eval()
    return model


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.slow  # trains the tiny model for ~1 min on 1 thread first
def test_onnx_matches_torch_on_real_ct(cli, trained_ckpt, shared_ct, tmp_path, home):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [export] extra")
    import onnx

    from transunet_app.packages.export.onnx import run_onnx

    pkg = tmp_path / "trained.zip"
    assert cli("package", trained_ckpt, "-o", pkg)[0] == 0
    assert cli("models", "install", pkg)[0] == 0
    out = tmp_path / "trained.onnx"
    code, _, err = cli("export", "trained", "-o", out, "--format", "onnx")  # an installed name
    assert code == 0, err
    graph = onnx.load(out)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = graph.graph.input
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    x = ct_slices(shared_ct[0], 64, count=12)
    model = _eager(trained_ckpt)
    for batch in (x, x[:5]):  # two batch sizes: the batch axis is dynamic
        with torch.no_grad():
            ref = model(batch)
        got = run_onnx(out, batch)
        assert _rel(got, ref) <= 1e-4
        agree = (got.argmax(1) == ref.argmax(1)).double().mean().item()
        assert agree >= 0.999, agree
    assert len(ref.argmax(1).unique()) > 1  # the trained model finds organs on these slices


def test_onnx_from_channels_last_frozen_model(cli, tmp_path, shared_ct):
    """The fast check of the same export path: an untrained tiny model with channels-last
    weights (as training leaves them), exported from a checkpoint, on real CT slices."""
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [export] extra")
    from transunet_app.checkpoint import save_checkpoint
    from transunet_app.packages.export.onnx import run_onnx

    from .conftest import tiny_checkpoint

    ck = tiny_checkpoint(seed=3)
    # an untrained transformer adds little to the residual stream: give attention a say, as
    # training does, so a lost attention output shows in the logits
    ck["state_dict"] = {k: (v * 20 if k.endswith("attn.proj.weight") else
                            v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v)
                        for k, v in ck["state_dict"].items()}
    save_checkpoint(tmp_path / "cl.pt", ck)
    out = tmp_path / "cl.onnx"
    code, _, err = cli("export", tmp_path / "cl.pt", "-o", out, "--format", "onnx")
    assert code == 0, err
    x = ct_slices(shared_ct[0], 32, count=6)
    with torch.no_grad():
        ref = _eager(tmp_path / "cl.pt")(x)
    got = run_onnx(out, x)
    assert _rel(got, ref) <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).double().mean().item() >= 0.999


def test_torchscript_runs_without_transunet_app(cli, tiny_ckpt, shared_ct, tmp_path, home):
    trained_ckpt = tiny_ckpt
    pkg = tmp_path / "tiny.zip"
    assert cli("package", trained_ckpt, "-o", pkg)[0] == 0
    out = tmp_path / "trained.ts"
    code, _, err = cli("export", pkg, "-o", out, "--format", "torchscript")  # a package file
    assert code == 0, err
    x = ct_slices(shared_ct[0], 32, count=6)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        f"m = torch.jit.load({str(out)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(x), {str(tmp_path / 'y.pt')!r})\n"
        "assert not [k for k in sys.modules if k.startswith('transunet_app')], 'imported transunet_app'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with torch.no_grad():
        ref = _eager(trained_ckpt)(x)
    assert _rel(torch.load(tmp_path / "y.pt"), ref) <= 1e-5


def test_export_refusals(cli, tiny_ckpt, tmp_path, home):
    code, _, err = cli("export", "no-such-model", "-o", tmp_path / "m.onnx", "--format", "onnx")
    assert code == 2 and "no installed model" in err and len(err.strip().splitlines()) == 1
    existing = tmp_path / "m.ts"
    existing.write_bytes(b"keep")
    code, _, err = cli("export", tiny_ckpt, "-o", existing, "--format", "torchscript")
    assert code == 2 and "already exists" in err and existing.read_bytes() == b"keep"


def test_export_leaves_the_model_as_it_was_and_plain(tiny_ckpt):
    """Export traces the plain model: no fast layer swapped in, gradients flags untouched."""
    from transunet_app.packages.export import load_source
    from transunet_app.packages.export.torchscript import trace

    src = load_source(tiny_ckpt)
    trace(src.model, src.example())
    assert not any(p.requires_grad for p in src.model.parameters())
    assert not any(type(m).__module__.startswith("transunet_app.fast_layers")
                   for m in src.model.modules())
