"""Safety checks of a model package, before anything in it is used or installed.

A package (a ``.zip`` or an installed folder) is refused, with one line naming it and the
problem, when:

* a member path escapes the folder (absolute, ``..``, a drive letter, backslashes) or is a
  symbolic link;
* a member is pickled Python (pickle protocol 2-5 header, a ``torch.save`` zip holding
  ``*.pkl``, or a pickle/torch file suffix): a pickle can run code when read;
* ``model.json`` is missing, not JSON, or fails :func:`~.card.validate_card` (unknown format
  version, missing fields, labels not 0..K-1);
* a member is not listed in the card's ``files``, a listed one is missing, or its SHA-256
  differs;
* the weights are not a readable safetensors file or do not fit the card: the segmentation
  head predicts another number of classes than the card's labels.
"""
from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .card import CARD_NAME, WEIGHTS_NAME, PackageError, validate_card

_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")
#: the tensor whose first dimension is the number of classes (TransUNet's head, every encoder)
HEAD_KEY = "segmentation_head.weight"


@dataclass
class Package:
    """A verified model package.

    Attributes:
        card: the parsed, validated ``model.json``.
        state_dict: name -> tensor, read from ``weights.safetensors`` (no code can run).
        source: the ``.zip`` or installed folder it was read from.
        weights_sha256: SHA-256 of ``weights.safetensors`` (as recorded in the card).
        card_sha256: SHA-256 of ``model.json`` as stored.
        members: member name -> bytes (kept for installing).
    """

    card: dict
    state_dict: dict
    source: Path
    weights_sha256: str
    card_sha256: str
    members: dict

    def checkpoint(self) -> dict:
        """The checkpoint dict this package stands for (what ``segment`` reads)."""
        from .card import card_as_checkpoint

        return card_as_checkpoint(self.card, self.state_dict)

    def provenance(self) -> dict:
        """What a segmentation records about the model it came from."""
        c = self.card
        return {"name": c.get("name"), "version": c.get("version"),
                "weights_sha256": self.weights_sha256, "card_sha256": self.card_sha256,
                "package": str(self.source), "license": c.get("license"),
                "intended_use": c.get("intended_use"),
                "not_intended_for": c.get("not_intended_for"),
                "validation": validation_summary(c)}


def validation_summary(card: dict) -> str:
    """One line of how the model did on its run's own validation, for reports; "not measured"
    when the run saved no validation metrics."""
    v = card.get("validation") or {}
    dice, hd = v.get("mean_dice"), v.get("mean_hd95")
    if not isinstance(dice, (int, float)):
        return "not measured"
    unit = "voxels" if "in voxels" in str(v.get("hd95_convention") or "") else "mm"
    cases = ((card.get("training_data") or {}).get("cases") or {}).get("validation")
    dataset = (card.get("training_data") or {}).get("dataset")
    parts = [f"mean Dice {dice:.3f}"] + ([f"mean HD95 {hd:.1f} {unit}"] if isinstance(hd, (int, float)) else [])
    where = ", ".join(str(x) for x in (f"{cases} cases" if isinstance(cases, int) else None,
                                       dataset if dataset and dataset != "unspecified" else None) if x)
    return ", ".join(parts) + (f" on the run's own validation ({where})" if where else " on the run's own validation")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, where: str) -> None:
    """Refuse a member path that could land outside the package folder."""
    if (not name or name.startswith(("/", "\\")) or _DRIVE.match(name) or "\\" in name
            or "\x00" in name or any(part == ".." for part in PurePosixPath(name).parts)):
        raise PackageError(f"{where}: member {name!r} escapes the package folder; refused")


def is_pickle(name: str, data: bytes) -> bool:
    """True for pickled Python: a pickle protocol 2-5 stream, a torch.save zip, or a pickle
    file suffix."""
    if name.lower().endswith(_PICKLE_SUFFIXES):
        return True
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        import io

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return any(n.endswith(".pkl") for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def read_zip_members(path: Path) -> dict[str, bytes]:
    """Member name -> bytes of a package zip, names checked before anything is read."""
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{where}: not a model package (not a readable zip: {exc})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            check_member_name(info.filename, where)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackageError(f"{where}: member {info.filename!r} is a symbolic link; refused")
        members = {}
        for info in infos:
            if info.is_dir():
                continue
            if info.filename in members:
                raise PackageError(f"{where}: member {info.filename!r} appears twice; refused")
            try:
                members[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise PackageError(f"{where}: member {info.filename!r} cannot be read ({exc})") from None
    return members


def read_folder_members(folder: Path) -> dict[str, bytes]:
    """Member name -> bytes of an installed package folder (symbolic links refused)."""
    members = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            raise PackageError(f"{folder}: member {rel!r} is a symbolic link; refused")
        if p.is_file():
            members[rel] = p.read_bytes()
    return members


def verify_members(members: dict[str, bytes], source: Path) -> Package:
    """Check the members of a package (see the module docstring); returns the package.

    Raises:
        PackageError: the first problem found.
    """
    where = str(source)
    for name, data in members.items():
        check_member_name(name, where)
        if is_pickle(name, data):
            raise PackageError(f"{where}: member {name!r} is pickled Python (could run code "
                               f"when read); refused")
    if CARD_NAME not in members:
        raise PackageError(f"{where}: no {CARD_NAME} (not a transunet model package)")
    try:
        card = json.loads(members[CARD_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{where}: {CARD_NAME} is malformed ({exc})") from None
    card = validate_card(card, f"{where}: {CARD_NAME}")
    listed = card["files"]
    for name in sorted(set(members) - {CARD_NAME}):
        if name not in listed:
            raise PackageError(f"{where}: member {name!r} is not listed in {CARD_NAME} 'files'; refused")
    for name, digest in sorted(listed.items()):
        if name not in members:
            raise PackageError(f"{where}: member {name!r} listed in {CARD_NAME} is missing")
        actual = sha256_bytes(members[name])
        if actual != digest.lower():
            raise PackageError(f"{where}: member {name!r} SHA-256 {actual[:12]}... does not match "
                               f"the card's {digest[:12]}... (corrupt or altered)")
    if WEIGHTS_NAME not in members:
        raise PackageError(f"{where}: no {WEIGHTS_NAME} in the package")
    state = load_weights(members[WEIGHTS_NAME], where)
    head = state.get(HEAD_KEY)
    if head is None or head.ndim != 4:
        raise PackageError(f"{where}: {WEIGHTS_NAME} has no {HEAD_KEY} (not TransUNet weights)")
    n_labels = len(card["labels"])
    if int(head.shape[0]) != n_labels:
        raise PackageError(f"{where}: the card lists {n_labels} labels but the weights predict "
                           f"{int(head.shape[0])} classes")
    return Package(card=card, state_dict=state, source=Path(source),
                   weights_sha256=listed[WEIGHTS_NAME].lower(),
                   card_sha256=sha256_bytes(members[CARD_NAME]), members=members)


def load_weights(data: bytes, where: str) -> dict:
    """Tensors of a safetensors file (a format that stores tensors and JSON only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise PackageError(f"{where}: {WEIGHTS_NAME} is not a readable safetensors file "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def read_package(path) -> Package:
    """Read and verify a package zip or an installed package folder."""
    path = Path(path)
    if path.is_dir():
        return verify_members(read_folder_members(path), path)
    if not path.is_file():
        raise PackageError(f"{path}: no such model package")
    return verify_members(read_zip_members(path), path)
