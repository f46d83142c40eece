"""MONAI bundle export: a folder ``monai.bundle run``, MONAI Label and MONAI Deploy can run.

Layout (MONAI bundle specification)::

    OUT/configs/metadata.json    the model card in MONAI's metadata fields
    OUT/configs/inference.json   LoadImaged -> EnsureChannelFirstd -> Orientationd -> ScaleIntensityRanged,
                                 SliceInferer over axial slices, AsDiscreted(argmax) -> Invertd -> SaveImaged
    OUT/models/model.ts          TorchScript: (B, 1, H, W) windowed slices at any H, W -> (B, K, H, W) logits
    OUT/docs/README.md           the card in words, how to run the bundle

Run it (input and output overridable on the command line, as MONAI bundles do)::

    python -m monai.bundle run --config_file OUT/configs/inference.json \\
        --meta_file OUT/configs/metadata.json --input_image ct.nii.gz --output_dir labels/

It computes what ``segment`` computes: volumes are put in the "PLS" orientation, whose axial
slices (X, Y) are ``segment``'s canonical (H, W) = (posterior, left) slices; HU clipped to
the model's window and scaled to [0, 1]; each slice resized bilinearly (corners aligned) to
the model's img_size, its logits resized back the same way and the argmax taken (the resizes
are inside ``model.ts``, so the network sees slices exactly as in training); ``Invertd`` undoes
the orientation, so the label map has the input's shape and affine. ``bundle_root`` is the
folder's absolute path at export; a moved bundle takes ``--bundle_root NEW_PATH``.
"""

# no "from __future__ import annotations": torch.jit.script reads SliceModel's annotations
import json
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from ...data.files import atomic_folder
from ...errors import UserError

#: MONAI axis codes whose axial slices (X, Y) are segment's canonical (H, W) = (P, L) slices
#: (canonical (D, H, W) = SPL; the bundle slices along its third axis, S).
BUNDLE_AXCODES = "PLS"
SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
          "meta_schema_20220324.json")


class SliceModel(torch.nn.Module):
    """A 2D network at a fixed size as a network for slices of any size.

    (B, C, H, W) windowed slices in [0, 1] -> bilinear resize (corners aligned) to
    ``img_size`` -> ``net`` -> logits resized back to (H, W) the same way: (B, K, H, W).
    ``segment``'s predictor does the same around the network.
    """

    img_size: List[int]

    def __init__(self, net: torch.nn.Module, img_size: List[int]):
        super().__init__()
        self.net = net
        self.img_size = [int(img_size[0]), int(img_size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if [h, w] != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=True)
        y = self.net(x)
        if [int(y.shape[-2]), int(y.shape[-1])] != [h, w]:
            y = F.interpolate(y, size=[h, w], mode="bilinear", align_corners=True)
        return y


def slice_model(source) -> torch.jit.ScriptModule:
    """``SliceModel`` around the traced plain network, scripted (runs without transunet_app)."""
    from .torchscript import trace

    traced = trace(source.model, source.example(batch=2))
    return torch.jit.script(SliceModel(traced, list(source.img_size)))


def inference_config(source, bundle_root: Path) -> dict:
    lo, hi = (float(v) for v in source.checkpoint["preprocessing"].get("hu_window", (-125.0, 275.0)))
    return {
        "imports": ["$import torch", "$import numpy"],
        "bundle_root": str(bundle_root),
        "input_image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "network": "$@network_def.eval()",
        "datalist": "$[{'image': i} for i in ([@input_image] if isinstance(@input_image, str) else @input_image)]",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": BUNDLE_AXCODES,
             "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},  # nibabel's RAS axis codes
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1,
                       "shuffle": False, "num_workers": 0},
        # one window per axial slice (roi -1 = the whole slice); model.ts resizes to img_size
        "inferer": {"_target_": "SliceInferer", "spatial_dim": 2, "roi_size": [-1, -1],
                    "sw_batch_size": 8, "progress": False},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
             "orig_keys": "image", "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_postfix": "@output_postfix", "output_dtype": "$numpy.uint8",
             "resample": False, "separate_folder": False, "squeeze_end_dims": True},
        ]},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing", "amp": False},
        "run": ["$@evaluator.run()"],
    }


def metadata(source) -> dict:
    """MONAI ``metadata.json`` from the model card (same field names where MONAI has them)."""
    import monai
    import numpy as np

    card = source.card
    classes = [e["name"] for e in card["labels"]]
    try:
        from importlib.metadata import version

        ignite = version("pytorch-ignite")
    except Exception:  # noqa: BLE001 - only recorded
        ignite = "unknown"
    keep = ("name", "description", "authors", "copyright", "license", "intended_use",
            "not_intended_for", "task", "data_source", "data_type", "references",
            "network_data_format", "eval_metrics", "labels", "preprocessing", "training_data",
            "validation", "architecture", "created")
    meta = {"schema": SCHEMA, "version": card.get("version"), "changelog": card.get("changelog") or {},
            "monai_version": monai.__version__, "pytorch_version": str(torch.__version__).split("+")[0],
            "numpy_version": np.__version__,
            "optional_packages_version": {"nibabel": _version("nibabel"), "pytorch-ignite": ignite},
            **{k: card.get(k) for k in keep if k in card},
            "image_classes": "single channel CT in HU, windowed to [0, 1] by the bundle",
            "label_classes": {str(i): c for i, c in enumerate(classes)},
            "pred_classes": {str(i): c for i, c in enumerate(classes)}}
    return meta


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


def readme(source, out: Path) -> str:
    c = source.card
    v = c.get("validation", {})
    rows = "\n".join(f"| {e['value']} | {e['name']} | {e.get('color') or ''} | "
                     f"{e['snomed']['type']['code'] if isinstance(e.get('snomed'), dict) else ''} | "
                     f"{_dice(v, e['name']) if e['value'] else ''} |" for e in c["labels"])
    p = source.checkpoint["preprocessing"]
    return f"""# {c.get('name')} {c.get('version')} (MONAI bundle)

{c.get('description')}

- Intended use: {c.get('intended_use')}
- Not intended for: {c.get('not_intended_for')}
- Licence: {c.get('license')}; authors: {c.get('authors')}
- Architecture: {c['architecture']['name']}; exported by transunet-app {c['created'].get('transunet_app')}
- Preprocessing: HU window {p.get('hu_window')} scaled to [0, 1], axial slices
  ({BUNDLE_AXCODES} orientation), each resized to {p.get('img_size')} inside `models/model.ts`
- Validation: {v.get('source')}

| value | label | colour | SNOMED CT | validation Dice |
|---:|---|---|---|---:|
{rows}

## Run

    python -m monai.bundle run --config_file {out}/configs/inference.json \\
        --meta_file {out}/configs/metadata.json --input_image ct.nii.gz --output_dir labels/

Writes `labels/ct_seg.nii.gz` (uint8 labels on the input's grid and affine). Needs monai,
nibabel and pytorch-ignite. If this folder moves, add `--bundle_root NEW_PATH`.
This is not a diagnosis.
"""


def _dice(v, name):
    d = v.get("per_organ", {}).get(name, {}).get("dice")
    return f"{d:.3f}" if isinstance(d, float) else ""


def export_monai_bundle(source, out: Path, overwrite: bool = False) -> Path:
    """Write the bundle folder ``out`` (built in a temporary folder, then renamed)."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    scripted = slice_model(source)
    x = source.example(batch=3, seed=1)
    with torch.no_grad():
        from . import relative_error

        err = relative_error(scripted(x), source.model(x))
    if not err <= 1e-5:
        raise UserError(f"{out}: the bundle's model.ts differs from eager by {err:.2e}: not written")

    def build(tmp: Path) -> None:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        torch.jit.save(scripted, str(tmp / "models" / "model.ts"))
        (tmp / "configs" / "inference.json").write_text(
            json.dumps(inference_config(source, out), indent=2) + "\n", encoding="utf-8")
        (tmp / "configs" / "metadata.json").write_text(
            json.dumps(metadata(source), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / "docs" / "README.md").write_text(readme(source, out), encoding="utf-8")

    return atomic_folder(out, build)
