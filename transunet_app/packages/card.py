"""The model card (``model.json``): what a packaged model is, was trained on and is for.

Field names follow MONAI's bundle ``configs/metadata.json`` where it has one (``name``,
``version``, ``description``, ``authors``, ``copyright``, ``license``, ``intended_use``,
``task``, ``data_source``, ``data_type``, ``network_data_format``, ``eval_metrics``,
``references``, ``pytorch_version``, ``monai_version``); what MONAI has no field for is ours
(``format``, ``not_intended_for``, ``architecture``, ``training_data``, ``preprocessing``,
``labels``, ``validation``, ``created``, ``files``).

Values a run cannot know (licence, authors, intended use, ...) come from a user YAML
(``transunet package --card CARD.yaml``); the ones still missing are written as
:data:`UNSPECIFIED` and listed by :func:`unspecified_fields` (``transunet models show`` flags
them). :func:`validate_card` is the one check a card passes before a package is used.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError

#: Card format written by this version; a card with another format is refused.
CARD_FORMAT = "transunet_app.model_card/1"
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
UNSPECIFIED = "unspecified"

#: Fields the user supplies (``--card``); all of them are flagged when unspecified.
USER_FIELDS = ("name", "version", "description", "authors", "copyright", "license",
               "intended_use", "not_intended_for")
#: Keys a ``--card`` YAML may hold (everything descriptive; never weights, labels'
#: values or preprocessing, which come from the run).
CARD_YAML_KEYS = set(USER_FIELDS) | {"task", "data_source", "references", "training_data",
                                     "changelog"}

REFERENCES = [
    "Chen J. et al. TransUNet: Transformers Make Strong Encoders for Medical Image "
    "Segmentation. arXiv:2102.04306 (2021).",
    "Landman B. et al. MICCAI Multi-Atlas Labeling Beyond the Cranial Vault - Workshop and "
    "Challenge (Synapse / BTCV), 2015. doi:10.7303/syn3193805.",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")



class PackageError(UserError):
    """A model package or card that is refused (one line naming the file and the problem)."""


# --------------------------------------------------------------------------- building


def label_entries(classes: list[str]) -> list[dict]:
    """``[{"value", "name", "color", "snomed"}]`` for class names by label value (0 = background)."""
    from ..data.labels import read_snomed
    from ..report.colors import organ_color

    codes = read_snomed()
    out = []
    for value, name in enumerate(classes):
        entry: dict[str, Any] = {"value": value, "name": str(name)}
        if value == 0:
            entry.update(color=None, snomed=None)
        else:
            code = codes.get(str(name).strip().lower())
            entry.update(color=organ_color(str(name), value),
                         snomed=({"category": dict(code["category"]), "type": dict(code["type"])}
                                 if code else UNSPECIFIED))
        out.append(entry)
    return out


def _count_cases(root: str | None, split: str | None, slices: bool) -> int | None:
    """Cases listed in ``<root>/lists_Synapse/<split>.txt`` (slice lists: ``caseX_sliceY``)."""
    if not root or not split:
        return None
    f = Path(root) / "lists_Synapse" / f"{split}.txt"
    if not f.is_file():
        return None
    names = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
    if slices:
        names = [n.rsplit("_slice", 1)[0] for n in names]
    return len(set(names))


def _training_data(config: Mapping | None) -> dict:
    cfg = config or {}
    data, val, ds = cfg.get("data", {}) or {}, cfg.get("val", {}) or {}, cfg.get("dataset", {}) or {}
    root = data.get("root")
    train_split = data.get("train_split")
    val_split = val.get("split") if val.get("source", "none") != "none" else None
    train_n = _count_cases(root, train_split, slices=True)
    val_n = _count_cases(root, val_split, slices=False)
    return {
        "dataset": ds.get("name") or UNSPECIFIED,
        "synthetic": ds.get("synthetic") if "synthetic" in ds else UNSPECIFIED,
        "root": root or UNSPECIFIED,
        "split": {"train": train_split or UNSPECIFIED, "validation": val_split or "none"},
        "cases": {"train": train_n if train_n is not None else UNSPECIFIED,
                  "validation": val_n if val_n is not None else (0 if val_split is None else UNSPECIFIED)},
    }


def _finite(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None


def _validation(metrics: Mapping | None, classes: list[str], training_data: dict) -> dict:
    """Per-organ validation performance as the run measured it (never recomputed here)."""
    m = metrics or {}
    per = m.get("per_organ") or {}
    if not per:
        return {"source": "none (the run saved no validation metrics)", "per_organ": {},
                "mean_dice": None, "hd95_convention": None}
    return {
        "source": (f"the run's own validation ({m.get('validation', 'unknown')}, "
                   f"{training_data['cases']['validation']} cases) at iteration "
                   f"{m.get('iteration')}, epoch {m.get('epoch')}"),
        "mean_dice": _finite(m.get("mean_dice")),
        # HD95 as engine/validate.py measured it; null where the run did not (runs before HD95
        # was validated, val.hd95=false, organs never in both maps) rather than invented.
        "mean_hd95": _finite(m.get("mean_hd95")),
        "per_organ": {name: {"dice": _finite(per.get(name)), "hd95": _finite(m.get("hd95", {}).get(name))
                             if isinstance(m.get("hd95"), dict) else None}
                      for name in classes[1:]},
        "dice_convention": "per case 2|A&B|/(|A|+|B|) on the volume grid, organ absent from "
                           "both: left out of the mean",
        "hd95_convention": (m.get("hd95_convention") or
                            "not measured by the run's validation (HD95: transunet evaluate)"),
    }


def build_card(ckpt: dict, *, user: Mapping | None = None, source: str = "") -> dict:
    """The model card of a loaded checkpoint (``load_checkpoint``) with the user's fields.

    Args:
        ckpt: our checkpoint dict (model, classes, preprocessing, metrics, config, software).
        user: the ``--card`` YAML (keys in :data:`CARD_YAML_KEYS`).
        source: where the weights came from (recorded, for the provenance).
    """
    import torch

    from .. import __version__

    user = dict(user or {})
    unknown = sorted(set(user) - CARD_YAML_KEYS)
    if unknown:
        raise PackageError(f"--card: unknown field(s) {', '.join(unknown)} (known: "
                           f"{', '.join(sorted(CARD_YAML_KEYS))})")
    classes = [str(c) for c in ckpt["classes"]]
    prep = dict(ckpt["preprocessing"])
    training_data = _training_data(ckpt.get("config"))
    training_data.update(user.pop("training_data", None) or {})
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - monai is a runtime dependency
        monai_version = UNSPECIFIED
    size = prep.get("img_size", [224, 224])
    card = {
        "format": CARD_FORMAT,
        "name": UNSPECIFIED, "version": UNSPECIFIED, "description": UNSPECIFIED,
        "authors": UNSPECIFIED, "copyright": UNSPECIFIED, "license": UNSPECIFIED,
        "intended_use": UNSPECIFIED, "not_intended_for": UNSPECIFIED,
        "task": "segmentation of abdominal organs in CT (2D, axial slices)",
        "changelog": {},
        "data_source": UNSPECIFIED,
        "data_type": "nibabel / DICOM / ITK volumes, CT in Hounsfield units",
        "architecture": {"name": ckpt["model"]["name"], "config": dict(ckpt["model"]),
                         "run_config": ckpt.get("config")},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT",
                                 "num_channels": int(prep.get("in_channels", 1)),
                                 "spatial_shape": list(size), "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": False,
                                 "channel_def": {"0": "CT windowed to [0, 1]"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation",
                                 "num_channels": len(classes), "spatial_shape": list(size),
                                 "dtype": "float32", "value_range": [], "is_patch_data": False,
                                 "channel_def": {str(i): c for i, c in enumerate(classes)}}},
        },
        "training_data": training_data,
        "preprocessing": prep,
        "labels": label_entries(classes),
        "validation": _validation(ckpt.get("metrics"), classes, training_data),
        "created": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "transunet_app": __version__, "torch": str(torch.__version__),
                    "weights_source": source,
                    "trained_with": dict(ckpt.get("software") or {})},
        "pytorch_version": str(torch.__version__).split("+")[0],
        "monai_version": monai_version,
        "references": list(REFERENCES),
        "files": {},
    }
    card["eval_metrics"] = {"mean_dice": card["validation"]["mean_dice"]}
    if card["validation"].get("mean_hd95") is not None:
        card["eval_metrics"]["mean_hd95"] = card["validation"]["mean_hd95"]
    card.update(user)
    return card


# --------------------------------------------------------------------------- checking


def unspecified_fields(card: Mapping) -> list[str]:
    """User fields still :data:`UNSPECIFIED` (or empty), plus organs without a SNOMED code."""
    out = [k for k in USER_FIELDS if card.get(k) in (None, "", [], UNSPECIFIED)]
    out += [f"labels[{e['value']}].snomed" for e in card.get("labels", [])
            if e.get("value") and e.get("snomed") in (None, UNSPECIFIED)]
    return out


_REQUIRED = {"format": str, "name": str, "version": str, "architecture": dict,
             "preprocessing": dict, "labels": list, "files": dict, "created": dict}


def validate_card(card: Any, where: str) -> dict:
    """Check a parsed ``model.json``; returns it.

    Raises:
        PackageError: not a mapping, unknown ``format``, a required field missing or of the
            wrong type, labels not 0..K-1, or an unusable name/version.
    """
    if not isinstance(card, dict):
        raise PackageError(f"{where}: model card is not a JSON object")
    fmt = card.get("format")
    if fmt != CARD_FORMAT:
        raise PackageError(f"{where}: unknown model card format {fmt!r} (this version reads "
                           f"{CARD_FORMAT!r})")
    for key, typ in _REQUIRED.items():
        if not isinstance(card.get(key), typ):
            raise PackageError(f"{where}: model card field '{key}' is missing or not a "
                               f"{typ.__name__}")
    for key in ("name", "version"):
        if card[key] != UNSPECIFIED and not _NAME_RE.match(card[key]):
            raise PackageError(f"{where}: model card {key} {card[key]!r} must be letters, digits, "
                               f"'.', '_' or '-' (at most 64)")
    arch = card["architecture"]
    cfg = arch.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str) \
            or not isinstance(cfg.get("num_classes"), int):
        raise PackageError(f"{where}: model card architecture.config lacks name/num_classes")
    labels = card["labels"]
    values = [e.get("value") if isinstance(e, dict) else None for e in labels]
    if values != list(range(len(labels))) or not all(isinstance(e.get("name"), str) for e in labels):
        raise PackageError(f"{where}: model card labels must be entries with value 0, 1, ... "
                           f"and a name")
    if len(labels) != cfg["num_classes"]:
        raise PackageError(f"{where}: {len(labels)} labels but architecture.config.num_classes "
                           f"is {cfg['num_classes']}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in card["files"].items()):
        raise PackageError(f"{where}: model card 'files' must map member names to SHA-256 hex")
    return card


def card_as_checkpoint(card: Mapping, state_dict: dict) -> dict:
    """The checkpoint dict (``transunet_app/1``) a package stands for: what ``segment`` and
    ``model_from_checkpoint`` read."""
    from ..models.pretrained import OWN_FORMAT

    return {"format": OWN_FORMAT, "model": dict(card["architecture"]["config"]),
            "state_dict": state_dict, "classes": [e["name"] for e in card["labels"]],
            "preprocessing": dict(card["preprocessing"]), "training": None,
            "metrics": None, "config": card["architecture"].get("run_config"),
            "software": dict(card.get("created", {}).get("trained_with") or {})}


def model_label(card: Mapping) -> str:
    """``name version`` for messages and provenance."""
    return f"{card.get('name')} {card.get('version')}"
