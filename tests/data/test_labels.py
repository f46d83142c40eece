"""Label maps and splits are data (YAML) and say exactly what issue 4 specifies."""
import numpy as np
import pytest

from transunet_app.data import labels
from transunet_app.errors import UserError


def test_synapse_yaml_matches_issue():
    spec = labels.load_label_spec(labels.synapse_labels_path())
    assert spec["classes"] == ["background", "aorta", "gallbladder", "left kidney", "right kidney",
                               "liver", "pancreas", "spleen", "stomach"]
    # BTCV label 8->1, 4->2, 3->3, 2->4, 6->5, 11->6, 1->7, 7->8, everything else background.
    assert spec["label_map"] == {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
    assert spec["source_labels"][8] == "aorta" and spec["source_labels"][1] == "spleen"


def test_official_split():
    splits = labels.load_splits(labels.synapse_splits_path())
    assert splits["test"] == [1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38]
    assert splits["train"] == [5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40]


def test_map_labels_btcv_to_synapse():
    spec = labels.load_label_spec()
    raw = np.arange(14, dtype=np.uint8)
    mapped = labels.map_labels(raw, spec["label_map"], len(spec["classes"]))
    assert mapped.dtype == np.uint8
    assert mapped.tolist() == [0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0]
    # float storage of whole numbers is fine, fractions are not
    assert labels.map_labels(raw.astype(np.float32), spec["label_map"], 9).tolist() == mapped.tolist()
    with pytest.raises(UserError, match="whole numbers"):
        labels.map_labels(np.array([0.5, 1.0]), spec["label_map"], 9, where="x.nii.gz")


def test_identity_map_rejects_unknown_ids():
    assert labels.map_labels(np.array([0, 2, 1]), None, 3).tolist() == [0, 2, 1]
    with pytest.raises(UserError, match="label value 5"):
        labels.map_labels(np.array([0, 5]), None, 3, where="lab.nii.gz")
    with pytest.raises(UserError, match="negative"):
        labels.map_labels(np.array([0, -1]), None, 3)


def test_spec_validation(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: {0: background, 2: liver}\n")
    with pytest.raises(UserError, match="without gaps"):
        labels.load_label_spec(bad)
    bad.write_text("classes: [background, liver]\nlabel_map: {3: 4}\n")
    with pytest.raises(UserError, match="not a class id"):
        labels.load_label_spec(bad)
    bad.write_text("classes: [background, liver\n")
    with pytest.raises(UserError, match="not valid YAML"):
        labels.load_label_spec(bad)
    good = tmp_path / "good.yaml"
    good.write_text("classes: [background, liver, tumour]\n")
    spec = labels.load_label_spec(good)
    assert spec["classes"] == ["background", "liver", "tumour"] and spec["label_map"] is None
    both = tmp_path / "splits.yaml"
    both.write_text("train: [a, b]\ntest: [b]\n")
    with pytest.raises(UserError, match="both"):
        labels.load_splits(both)


def test_dataset_yaml_files_ship_inside_the_package():
    """Label names come only from datasets/*.yaml, so a wheel must carry them: the package sees
    the folder as transunet_app/datasets and pyproject's package-data takes every YAML there."""
    import os
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2]
    if "TRANSUNET_DATASETS" not in os.environ:
        assert labels.DATASETS_DIR.resolve() == (root / "datasets").resolve()
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["transunet_app"]
    shipped = [p.relative_to(root / "transunet_app").as_posix()
               for p in (root / "transunet_app" / "datasets").rglob("*.yaml")]
    assert "datasets/synapse/labels.yaml" in shipped
    packaged = {p.relative_to(root / "transunet_app").as_posix()
                for pat in patterns for p in (root / "transunet_app").glob(pat)}
    assert sorted(set(shipped) - packaged) == []
