"""Record CvT golden fidelity files from a local checkout of the official microsoft/CvT code.

    python tools/golden/make_golden_cvt.py --official /path/to/microsoft+CvT [--only NAME]

The official model is built as its ``get_cls_model`` does (``QuickGELU``, LayerNorm eps 1e-5)
from ``MODEL.SPEC`` of the official experiment YAML, filled with
``golden.official_like_state`` (seed 0), run in float64 and eval mode, and the four outputs of
its stages are recorded: the token maps of stages 1, 2, 3 and the stage-3 class token.
``tests/fidelity/test_cvt_official.py`` checks our encoder against them.

Two stand-ins make the 2021 code import on this torch, neither changes the arithmetic:

* ``timm`` (not installable here) and ``torch._six`` are replaced by the in-memory modules of
  ``tools/golden/official_shims.py`` (``DropPath`` is only reached with rate 0 / eval mode);
* the official ``LayerNorm`` casts its input to float32 (an fp16 guard, the identity for
  float32 inputs); for the float64 recording it runs in the input dtype instead.

The official code is used only here, from the path given; it is never copied into this repo.
"""
from __future__ import annotations

import os
import sys
from functools import partial

import torch
import yaml
from golden_cli import recording_plan, write_case  # tools/golden, the script's folder
from official_shims import install_stand_ins
from torch import nn

from transunet_app.testing import golden

# name -> (official YAML, input shape). CvT has no position embeddings, so the small inputs are
# as valid a check as the training size; they keep the float64 tests fast (the official depthwise
# convolutions take PyTorch's slow per-channel path in float64).
CASES = {
    "cvt_13": ("cvt-13-224x224.yaml", (1, 3, 224, 224)),
    "cvt_13_small": ("cvt-13-224x224.yaml", (2, 3, 64, 96)),
    "cvt_21": ("cvt-21-224x224.yaml", (1, 3, 96, 96)),
    "cvt_w24": ("cvt-w24-384x384.yaml", (1, 3, 64, 64)),
}
INPUT_SEED = 11
OUTPUTS = ("stage1", "stage2", "stage3", "cls_token")


def build_official(repo: str, yaml_name: str):
    install_stand_ins()
    sys.path.insert(0, repo)
    from lib.models import cls_cvt

    # fp16 guard -> identity in the input dtype (see the module docstring).
    cls_cvt.LayerNorm.forward = nn.LayerNorm.forward
    with open(os.path.join(repo, "experiments", "imagenet", "cvt", yaml_name)) as f:
        spec = yaml.safe_load(f)["MODEL"]["SPEC"]
    return cls_cvt.ConvolutionalVisionTransformer(
        in_chans=3, num_classes=1000, act_layer=cls_cvt.QuickGELU,
        norm_layer=partial(cls_cvt.LayerNorm, eps=1e-5), init=spec.get("INIT", "trunc_norm"),
        spec=spec), spec


def stage_outputs(model, x):
    outs = {}
    for i in range(model.num_stages):
        x, cls = getattr(model, f"stage{i}")(x)
        outs[f"stage{i + 1}"] = x
    outs["cls_token"] = cls
    return outs


def main():
    args, cases = recording_plan(__doc__, "microsoft/CvT", CASES)
    for case, (yaml_name, shape) in cases:
        model, spec = build_official(args.official, yaml_name)
        schema = golden.schema_of(model.state_dict())
        model.load_state_dict(golden.official_like_state(schema, seed=0))
        model.eval()
        x = golden.make_input(shape, INPUT_SEED)
        with torch.no_grad():
            outs = stage_outputs(model, x)
        meta = {"official": "microsoft/CvT lib/models/cls_cvt.py", "yaml": yaml_name,
                "dims": spec["DIM_EMBED"], "depths": spec["DEPTH"]}
        write_case(args.out, case, schema, x, INPUT_SEED, outs, meta)
        del model


if __name__ == "__main__":
    main()
