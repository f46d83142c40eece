"""``transunet package`` and ``transunet models``: the card's contents, install/list/show/remove."""
from __future__ import annotations

import json
import zipfile

import pytest
import torch

from transunet_app.data.phantom import CLASSES
from transunet_app.packages.card import CARD_FORMAT, UNSPECIFIED


def _card(zip_path) -> dict:
    with zipfile.ZipFile(zip_path) as z:
        return json.loads(z.read("model.json"))


def test_package_from_run_folder_writes_the_full_card(cli, run_dir, card_yaml, tmp_path):
    out = tmp_path / "abdomen-tiny.zip"
    code, stdout, err = cli("package", run_dir, "-o", out, "--card", card_yaml)
    assert code == 0, err
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["model.json", "weights.safetensors"]
        weights = z.read("weights.safetensors")
    card = _card(out)
    assert card["format"] == CARD_FORMAT
    assert card["name"] == "abdomen-tiny" and card["version"] == "1.2.0"
    assert card["license"] == "CC-BY-NC-4.0" and card["authors"] == ["Package Test Team"]
    assert card["intended_use"].startswith("research")
    assert card["not_intended_for"] == ["clinical diagnosis", "paediatric CT"]
    assert card["architecture"]["config"] == {"name": "tiny", "num_classes": 9, "img_size": 32,
                                              "overrides": {}}
    # training data counted from the run's split lists
    assert card["training_data"]["dataset"] == "phantom"
    assert card["training_data"]["cases"] == {"train": 3, "validation": 2}
    assert card["training_data"]["split"] == {"train": "train", "validation": "test_vol"}
    p = card["preprocessing"]
    assert p["hu_window"] == [-125.0, 275.0] and p["img_size"] == [32, 32]
    assert p["slice_axis"] == "axial" and p["orientation"] == "SPL"
    # labels: value, name, colour, SNOMED CT code
    assert [e["name"] for e in card["labels"]] == list(CLASSES)
    liver = card["labels"][CLASSES.index("liver")]
    assert liver["color"] == "#CC79A7"
    assert liver["snomed"]["type"] == {"code": "10200004", "scheme": "SCT", "meaning": "Liver"}
    assert liver["snomed"]["category"]["code"] == "91723000"  # CID 7150 Anatomical Structure
    # validation per organ, from the run's own validation
    v = card["validation"]
    assert v["per_organ"]["aorta"]["dice"] == pytest.approx(0.5)
    assert v["per_organ"]["stomach"]["dice"] == pytest.approx(0.85)
    # HD95 and its convention as the run's validation measured them; nan becomes null
    assert v["per_organ"]["aorta"]["hd95"] == 2.0 and v["per_organ"]["pancreas"]["hd95"] is None
    assert v["hd95_convention"].startswith("strict:") and "in mm" in v["hd95_convention"]
    assert v["mean_hd95"] == pytest.approx((2 + 3 + 4 + 5 + 6 + 8 + 9) / 7)
    assert card["eval_metrics"]["mean_hd95"] == v["mean_hd95"]
    assert "iteration 120" in v["source"]
    assert card["created"]["torch"] == str(torch.__version__)
    assert card["created"]["transunet_app"]
    import hashlib

    assert card["files"] == {"weights.safetensors": hashlib.sha256(weights).hexdigest()}
    assert any("TransUNet" in r for r in card["references"])
    # MONAI metadata.json field names
    for key in ("network_data_format", "intended_use", "pytorch_version", "monai_version",
                "task", "copyright", "eval_metrics"):
        assert key in card


def test_package_without_card_flags_unspecified(cli, tiny_ckpt, home, tmp_path):
    out = tmp_path / "bare.zip"
    code, stdout, _ = cli("package", tiny_ckpt, "-o", out)
    assert code == 0
    card = _card(out)
    assert card["name"] == "bare"
    assert card["license"] == UNSPECIFIED and card["intended_use"] == UNSPECIFIED
    assert "license" in stdout and "intended_use" in stdout
    assert cli("models", "install", out)[0] == 0
    code, stdout, err = cli("models", "show", "bare")
    assert code == 0
    assert "unspecified in the model card" in err and "license" in err and "authors" in err


def test_package_refuses_an_existing_output_and_a_bad_card(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "m.zip"
    out.write_bytes(b"keep me")
    code, _, err = cli("package", tiny_ckpt, "-o", out)
    assert code == 2 and "already exists" in err and out.read_bytes() == b"keep me"
    bad = tmp_path / "card.yaml"
    bad.write_text("licence_typo: MIT\n")
    code, _, err = cli("package", tiny_ckpt, "-o", tmp_path / "n.zip", "--card", bad)
    assert code == 2 and "unknown field" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.zip").exists()


def test_models_install_list_show_remove(cli, run_dir, card_yaml, home, tmp_path):
    pkg = tmp_path / "abdomen-tiny.zip"
    assert cli("package", run_dir, "-o", pkg, "--card", card_yaml)[0] == 0
    code, stdout, err = cli("models", "install", pkg)
    assert code == 0, err
    folder = home / "abdomen-tiny" / "1.2.0"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    assert not [p for p in (home / "abdomen-tiny").iterdir() if p.name.startswith(".")]
    # the same name and version again: refused without --force, accepted with it
    code, _, err = cli("models", "install", pkg)
    assert code == 2 and "already installed" in err and "--force" in err
    assert cli("models", "install", pkg, "--force")[0] == 0
    code, stdout, _ = cli("models", "list")
    assert code == 0 and "abdomen-tiny" in stdout and "1.2.0" in stdout and "CC-BY-NC-4.0" in stdout
    code, stdout, err = cli("models", "show", "abdomen-tiny")
    assert code == 0 and "research on abdominal CT" in stdout and "SCT 10200004" in stdout
    assert "unspecified" not in err
    aorta = next(ln for ln in stdout.splitlines() if " aorta " in ln)
    assert "Dice 0.500" in aorta and "HD95 2.00" in aorta
    assert "HD95 convention:  strict:" in stdout
    code, stdout, _ = cli("models", "show", "abdomen-tiny@1.2.0", "--json")
    assert json.loads(stdout)["version"] == "1.2.0"
    code, stdout, _ = cli("models", "remove", "abdomen-tiny")
    assert code == 0 and not (home / "abdomen-tiny").exists()
    code, _, err = cli("models", "show", "abdomen-tiny")
    assert code == 2 and "no installed model" in err
    code, _, err = cli("models", "remove", "abdomen-tiny")
    assert code == 2 and "not installed" in err


def test_default_home_is_dot_transunet_models(monkeypatch, tmp_path):
    from transunet_app.packages.store import models_home

    monkeypatch.delenv("TRANSUNET_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models_home() == tmp_path / ".transunet" / "models"


def test_package_weights_load_back_exactly(run_dir, tmp_path):
    from transunet_app.checkpoint import load_checkpoint
    from transunet_app.packages.build import build_package
    from transunet_app.packages.verify import read_package

    build_package(run_dir, tmp_path / "m.zip")
    pkg = read_package(tmp_path / "m.zip")
    ref = load_checkpoint(run_dir / "checkpoints" / "best.pt")["state_dict"]
    assert pkg.state_dict.keys() == ref.keys()
    for k, v in ref.items():
        assert pkg.state_dict[k].dtype == v.dtype and torch.equal(pkg.state_dict[k], v), k
