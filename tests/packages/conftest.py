"""Fixtures for the model-package tests: a tiny checkpoint, a run folder, a card, the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transunet_app.checkpoint import make_checkpoint, save_checkpoint
from transunet_app.data.phantom import CLASSES, make_phantom
from transunet_app.engine.validate import HD95_CONVENTION
from transunet_app.models import build_model

IMG_SIZE = 32

CARD_YAML = """\
version: "1.2.0"
description: tiny TransUNet for the package tests
authors: [Package Test Team]
copyright: "(c) 2026 Package Test Team"
license: CC-BY-NC-4.0
intended_use: research on abdominal CT segmentation
not_intended_for: [clinical diagnosis, paediatric CT]
references: ["Chen J. et al. TransUNet, arXiv:2102.04306"]
"""


def tiny_checkpoint(seed: int = 0, metrics=None, config=None) -> dict:
    torch.manual_seed(seed)
    model = build_model("tiny", len(CLASSES), img_size=IMG_SIZE)
    with torch.no_grad():  # sharper logits: a random head gives near-ties everywhere
        model.segmentation_head.weight.mul_(30.0)
    return make_checkpoint(model, list(CLASSES), {"img_size": [IMG_SIZE, IMG_SIZE]},
                           metrics=metrics, config=config)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_checkpoint())
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as the trainer writes it: config.yaml, checkpoints/best.pt with the
    validation metrics and resolved config the trainer stores (engine/trainer.py _save_best),
    and the split lists under data.root."""
    run = tmp_path_factory.mktemp("run")
    data = run.parent / (run.name + "_data")
    (data / "lists_Synapse").mkdir(parents=True)
    (data / "lists_Synapse" / "train.txt").write_text(
        "".join(f"case000{c}_slice{s:03d}\n" for c in (1, 2, 3) for s in range(4)))
    (data / "lists_Synapse" / "test_vol.txt").write_text("case0008\ncase0009\n")
    per_organ = {name: 0.5 + 0.05 * i for i, name in enumerate(CLASSES[1:])}
    # HD95 as engine/validate.py reports it: nan where the organ never met its reference
    hd95 = {name: (float("nan") if name == "pancreas" else 2.0 + i) for i, name in enumerate(CLASSES[1:])}
    finite = [v for v in hd95.values() if v == v]
    metrics = {"mean_dice": sum(per_organ.values()) / len(per_organ), "per_organ": per_organ,
               "hd95": hd95, "mean_hd95": sum(finite) / len(finite),
               "hd95_convention": HD95_CONVENTION.format(unit="mm"),
               "validation": "volumes:test_vol", "iteration": 120, "epoch": 10}
    config = {"model": {"name": "tiny"}, "data": {"root": str(data), "img_size": IMG_SIZE,
                                                   "train_split": "train"},
              "val": {"source": "volumes", "split": "test_vol"},
              "dataset": {"root": str(data), "name": "phantom", "synthetic": True}}
    save_checkpoint(run / "checkpoints" / "best.pt", tiny_checkpoint(metrics=metrics, config=config))
    (run / "config.yaml").write_text("model:\n  name: tiny\n")
    return run


@pytest.fixture
def card_yaml(tmp_path) -> Path:
    p = tmp_path / "card.yaml"
    p.write_text(CARD_YAML)
    return p


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty $TRANSUNET_HOME for the test."""
    h = tmp_path / "home"
    monkeypatch.setenv("TRANSUNET_HOME", str(h))
    return h


@pytest.fixture
def cli(capsys):
    """Run ``transunet ...`` in-process: returns (exit code, stdout, stderr)."""
    from transunet_app.cli import main, segment_main

    def run(*argv):
        argv = [str(a) for a in argv]
        code = segment_main(argv[1:]) if argv[0] == "segment" else main(argv)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def ct_file(tmp_path) -> Path:
    """A small phantom CT (48 x 48 voxels, 10 slices) as NIfTI."""
    import nibabel as nib

    ph = make_phantom(7, matrix=48, slices=10, orientation="LPS", noise=True)
    p = tmp_path / "in" / "case01.nii.gz"
    p.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ph.image.astype("float32"), ph.affine), p)
    return p


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory) -> Path:
    """A tiny model trained on phantom slices (its labels mean something), saved from a
    channels-last model as training with ``train.channels_last`` leaves it: the layout in
    which ONNX export used to go wrong."""
    from ..inference.phantom_training import train_tiny

    model, _ = train_tiny(steps=150, img_size=64)
    model = model.to(memory_format=torch.channels_last)
    ck = make_checkpoint(model, list(CLASSES), {"img_size": [64, 64], "hu_window": [-125.0, 275.0]})
    assert ck["state_dict"]["segmentation_head.weight"].is_contiguous(memory_format=torch.channels_last)
    path = tmp_path_factory.mktemp("trained") / "trained_tiny.pt"
    save_checkpoint(path, ck)
    return path


def ct_slices(ct_path: Path, img_size: int, count: int = 12) -> torch.Tensor:
    """(count, 1, S, S) model inputs from the axial slices of a CT file, prepared as
    ``segment`` prepares them (canonical frame, HU window to [0, 1], bilinear resize)."""
    import nibabel as nib
    import numpy as np
    import torch.nn.functional as F

    from transunet_app.data.geometry import to_canonical

    img = nib.load(ct_path)
    vol, _ = to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    idx = np.linspace(0, vol.shape[0] - 1, count).round().astype(int)
    x = torch.from_numpy(np.ascontiguousarray(vol[idx])).clamp(-125, 275).sub(-125).div(400).unsqueeze(1)
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=True)
