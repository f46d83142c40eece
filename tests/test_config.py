"""Run configs: every shipped YAML loads, overrides are typed, mistakes name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from transunet_app.config import Config, config_from_dict, diff, dump_yaml, load_config, to_dict
from transunet_app.errors import UserError
from transunet_app.models import list_models

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _model_name(path: Path) -> str:
    import yaml

    return yaml.safe_load(path.read_text())["model"]["name"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    if _model_name(path).lower() not in {n.lower() for n in list_models()}:
        pytest.skip(f"{_model_name(path)} is not registered in this checkout")
    cfg = load_config(path)
    assert cfg.model.name and cfg.data.root and cfg.data.img_size % 16 == 0
    assert cfg.train.batch_size >= 1 and cfg.train.seed is not None
    again = tmp_path / "resolved.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(again) == cfg


def test_every_registered_model_has_a_config():
    named = {_model_name(p).lower() for p in CONFIGS}
    missing = [n for n in list_models() if n.lower() not in named]
    assert not missing, f"no configs/*.yaml for {missing}"


def test_official_recipe():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "synapse_r50_vit_b16.yaml")
    assert (cfg.model.name, cfg.data.img_size, cfg.train.batch_size, cfg.train.max_epochs) == ("R50-ViT-B_16", 224, 24, 150)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert (cfg.schedule.name, cfg.schedule.power) == ("poly", 0.9)
    assert (cfg.loss.ce_weight, cfg.loss.dice_weight) == (0.5, 0.5)
    assert (cfg.augment.p_rot_flip, cfg.augment.p_rotate, cfg.augment.max_angle) == (0.5, 0.5, 20.0)
    assert cfg.model.pretrained.endswith("R50+ViT-B_16.npz")


BASE = {"model": {"name": "tiny"}, "data": {"root": "somewhere"}}


def test_overrides_are_parsed_and_type_checked():
    cfg = config_from_dict(BASE, ["train.batch_size=8", "optim.lr=1e-3", "train.amp=off", "train.deterministic=true",
                                  "optim.betas=[0.8, 0.99]", "model.overrides.num_layers=1", "model.pretrained=null"])
    assert cfg.train.batch_size == 8 and cfg.optim.lr == 1e-3 and cfg.train.amp == "off"
    assert cfg.train.deterministic is True and cfg.optim.betas == (0.8, 0.99)
    assert cfg.model.overrides == {"num_layers": 1} and cfg.model.pretrained is None
    assert cfg.optim.weight_decay == Config().optim.weight_decay  # untouched defaults
    assert set(diff(config_from_dict(BASE), cfg)) == {"model.overrides", "train.batch_size", "train.deterministic",
                                                      "train.amp", "optim.lr", "optim.betas"}


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=eight", "train.batch_size must be an integer"),
    ("train.batchsize=8", "unknown key 'train.batchsize'; valid in train: batch_size"),
    ("trian.seed=1", "unknown key 'trian'"),
    ("train=3", "is a section"),
    ("train.amp=fp8", "train.amp must be one of auto, bf16, fp16, off"),
    ("data.img_size=100", "multiple of 16"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("model.name=ResNet-9000", "valid: R50-ViT-B_16"),
    ("train.deterministic=maybe", "must be true or false"),
    ("nonsense", "expected key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError) as err:
        config_from_dict(BASE, [override])
    assert message in str(err.value)


def test_unknown_keys_in_files_list_the_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: tiny\ndata:\n  root: x\n  imgsize: 64\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "data.imgsize" in text and "img_size" in text
    path.write_text("model: [1, 2]\n")
    with pytest.raises(UserError, match="'model' must be a mapping"):
        load_config(path)
    path.write_text("model:\n  name: tiny\n")
    with pytest.raises(UserError, match="data.root is required"):
        load_config(path)
    path.write_text("model: {name: tiny\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_configs_are_frozen_and_plain():
    cfg = config_from_dict(BASE)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.batch_size = 3  # type: ignore[misc]
    plain = to_dict(cfg)
    assert plain["optim"]["betas"] == [0.9, 0.999] and isinstance(plain["model"]["overrides"], dict)
