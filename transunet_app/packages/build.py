"""``transunet package``: a trained run or checkpoint -> one shareable model package (.zip).

A package holds exactly two members:

* ``weights.safetensors``: the model tensors (safetensors stores tensors and a JSON header,
  nothing executable);
* ``model.json``: the model card (:mod:`.card`), whose ``files`` lists the SHA-256 of every
  other member (the card cannot list its own hash; a sidecar records it at use).

The zip is written to a temporary file and renamed; before that, the package is read back
through the same checks an install applies (:func:`.verify.verify_members`).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .card import CARD_NAME, UNSPECIFIED, WEIGHTS_NAME, PackageError, build_card
from .verify import Package, sha256_bytes, verify_members


def find_checkpoint(source) -> Path:
    """A run folder's ``checkpoints/best.pt`` (else ``last.pt``), or the checkpoint file itself."""
    src = Path(source)
    if src.is_dir():
        for name in ("best.pt", "last.pt"):
            if (src / "checkpoints" / name).is_file():
                return src / "checkpoints" / name
        raise PackageError(f"{src}: a run folder needs checkpoints/best.pt or checkpoints/last.pt")
    if not src.is_file():
        raise PackageError(f"{src}: no such run folder or checkpoint")
    return src


def read_card_yaml(path) -> dict:
    """The user's card fields (``--card CARD.yaml``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise PackageError(f"{p}: no such card file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PackageError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PackageError(f"{p}: a card file is a mapping of fields (name: ..., license: ...)")
    return data


def weights_bytes(state_dict: dict) -> bytes:
    """safetensors bytes of a state dict (each tensor contiguous, on the CPU, unshared)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()})


def package_members(card: dict, state_dict: dict) -> dict[str, bytes]:
    """Member name -> bytes, the card's ``files`` filled in with the weights' SHA-256."""
    weights = weights_bytes(state_dict)
    card = dict(card, files={WEIGHTS_NAME: sha256_bytes(weights)})
    text = json.dumps(card, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return {CARD_NAME: text.encode("utf-8"), WEIGHTS_NAME: weights}


def write_zip(path: Path, members: dict[str, bytes], overwrite: bool = False) -> Path:
    """Members into a zip, atomically (temporary file, then rename)."""
    from ..data.io import atomic_write

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as z:
            for name, data in members.items():
                # the card compresses well; float weights do not, and stored is faster to read
                z.writestr(name, data, compress_type=(zipfile.ZIP_DEFLATED if name.endswith(".json")
                                                      else zipfile.ZIP_STORED))

    return atomic_write(path, write, overwrite=overwrite)


def build_package(source, output, card_yaml=None, overwrite: bool = False) -> Package:
    """Write the package of a run folder or checkpoint; returns it as read back.

    The card's ``name`` defaults to the output file's stem (``NAME.zip``); everything else
    the run cannot know stays ``unspecified`` unless ``card_yaml`` gives it.

    Raises:
        PackageError / CheckpointError: bad source, card file or output.
    """
    from ..checkpoint import load_checkpoint

    ckpt_path = find_checkpoint(source)
    out = Path(output)
    if not out.name.lower().endswith(".zip"):
        raise PackageError(f"{out}: a model package name ends with .zip")
    ckpt = load_checkpoint(ckpt_path)
    user = read_card_yaml(card_yaml) if card_yaml else {}
    user.setdefault("name", out.name[:-len(".zip")])
    card = build_card(ckpt, user=user, source=str(ckpt_path.resolve()))
    members = package_members(card, ckpt["state_dict"])
    pkg = verify_members(members, out)  # the checks an install applies, before writing
    write_zip(out, members, overwrite=overwrite)
    return pkg


__all__ = ["build_package", "find_checkpoint", "package_members", "read_card_yaml", "UNSPECIFIED"]
