"""Every kind of bad package is refused: one line, exit 2, nothing installed."""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest
import torch

from transunet_app.packages.build import package_members
from transunet_app.packages.card import build_card
from transunet_app.packages.verify import sha256_bytes

from .conftest import tiny_checkpoint


def _members():
    ck = tiny_checkpoint()
    card = build_card(ck, user={"name": "bad", "version": "1"})
    return package_members(card, ck["state_dict"])


def _with_member(members, name, data):
    """Add ``name`` and list it in the card with its true hash (only the content is bad)."""
    card = json.loads(members["model.json"])
    card["files"][name] = sha256_bytes(data)
    return {**members, "model.json": json.dumps(card).encode(), name: data}


def _edit_card(members, edit):
    card = json.loads(members["model.json"])
    edit(card)
    return {**members, "model.json": json.dumps(card).encode()}


def _hash_mismatch(m):
    w = bytearray(m["weights.safetensors"])
    w[-3] ^= 0x55  # one weight byte changed after the card was written
    return {**m, "weights.safetensors": bytes(w)}


def _torch_pickle():
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


def _fewer_labels(card):
    card["labels"] = card["labels"][:-1]
    card["architecture"]["config"]["num_classes"] -= 1


BAD = {
    "hash-mismatch": (_hash_mismatch, "does not match"),
    "dotdot-path": (lambda m: _with_member(m, "../evil.txt", b"x"), "escapes the package folder"),
    "nested-dotdot": (lambda m: _with_member(m, "docs/../../evil.txt", b"x"), "escapes"),
    "absolute-path": (lambda m: _with_member(m, "/tmp/evil.txt", b"x"), "escapes"),
    "torch-pickle": (lambda m: _with_member(m, "extra.pt", _torch_pickle()), "pickled Python"),
    "pickle-in-disguise": (lambda m: _with_member(m, "notes.dat", pickle.dumps({"a": 1})),
                           "pickled Python"),
    "pickled-weights": (lambda m: {**m, "weights.safetensors": pickle.dumps({"w": 1})},
                        "pickled Python"),
    "malformed-card": (lambda m: {**m, "model.json": b"{not json"}, "malformed"),
    "card-not-object": (lambda m: {**m, "model.json": b"[1, 2]"}, "not a JSON object"),
    "unknown-format": (lambda m: _edit_card(m, lambda c: c.update(format="transunet_app.model_card/99")),
                       "unknown model card format"),
    "missing-field": (lambda m: _edit_card(m, lambda c: c.pop("preprocessing")), "'preprocessing'"),
    "labels-vs-weights": (lambda m: _edit_card(m, _fewer_labels), "weights predict 9 classes"),
    "unlisted-member": (lambda m: {**m, "README.md": b"hello"}, "not listed"),
    "no-card": (lambda m: {"weights.safetensors": m["weights.safetensors"]}, "no model.json"),
}


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as given
    with zipfile.ZipFile(path) as z:
        assert set(z.namelist()) == set(members)
    return path


def test_a_good_package_installs(cli, home, tmp_path):
    pkg = _write_zip(tmp_path / "good.zip", _members())
    code, _, err = cli("models", "install", pkg)
    assert code == 0, err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_package_refused(case, cli, home, tmp_path, ct_file):
    make, message = BAD[case]
    pkg = _write_zip(tmp_path / f"{case}.zip", make(_members()))
    code, out, err = cli("models", "install", pkg)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(pkg) in lines[0], err
    assert not home.exists() or not any(home.rglob("*")), list(home.rglob("*"))
    assert not (tmp_path / "evil.txt").exists()
    # segment --model refuses it the same way, writing nothing
    code, _, err = cli("segment", ct_file, "-o", tmp_path / "out.nii.gz", "--model", pkg, "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.nii.gz").exists()


def test_not_a_zip_refused(cli, home, tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"not a zip at all")
    code, _, err = cli("models", "install", p)
    assert code == 2 and "not a readable zip" in err


def test_interrupted_install_leaves_nothing(home, tmp_path, monkeypatch):
    """A failure after unpacking (here: the final rename) removes the temporary folder."""
    import os

    from transunet_app.packages import store

    pkg = _write_zip(tmp_path / "good.zip", _members())

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError):
        store.install(pkg)
    monkeypatch.setattr(store.os, "replace", os.replace)
    assert not [p for p in home.rglob("*") if p.is_file()]
    assert store.installed() == []
