"""Record golden fidelity files from a local checkout of the official TransUNet code.

    python tools/golden/make_golden.py --official /path/to/TransUNet [--only NAME]

The official code is used only here, at development time, from the path given; it is never
copied into this repository. The recorded files (``tests/fidelity/golden/*.npz``) hold the official
state-dict schema, the input seed and float64 output summaries (see transunet_app/testing/golden.py);
``tests/fidelity/test_transunet_official.py`` checks our model against them.
Requires ``ml_collections`` (the official configs use it).
"""
from __future__ import annotations

import copy
import sys

import torch
from golden_cli import recording_plan, write_case  # tools/golden, the script's folder

from transunet_app.testing import golden
from transunet_app.testing.google_npz import npz_arrays, npz_schema

# name -> (official config, img_size, n_skip, weights source)
CASES = {
    "transunet_r50_vit_b16_pth": ("R50-ViT-B_16", 224, 3, "pth"),
    "transunet_vit_b16_pth": ("ViT-B_16", 224, 0, "pth"),
    "transunet_r50_vit_b16_npz": ("R50-ViT-B_16", 224, 3, "npz"),
    "transunet_r50_vit_b16_npz_resize": ("R50-ViT-B_16", 256, 3, "npz"),
    "transunet_vit_b16_npz_resize": ("ViT-B_16", 288, 0, "npz"),
}
NUM_CLASSES = 9
INPUT_SEED = 7


def build_official(repo, name, img, n_skip):
    sys.path.insert(0, repo)
    from networks.vit_seg_modeling import CONFIGS, VisionTransformer

    cfg = copy.deepcopy(CONFIGS[name])
    cfg.n_classes = NUM_CLASSES
    cfg.n_skip = n_skip
    if name.startswith("R50"):
        cfg.patches.grid = (img // 16, img // 16)
    return VisionTransformer(cfg, img_size=img, num_classes=NUM_CLASSES)


def main():
    args, cases = recording_plan(__doc__, "Beckschen/TransUNet", CASES)
    for case, (name, img, n_skip, source) in cases:
        model = build_official(args.official, name, img, n_skip)
        schema = golden.schema_of(model.state_dict())
        model.load_state_dict(golden.official_like_state(schema, seed=0))
        extra = {}
        if source == "npz":
            nschema = npz_schema(hybrid=name.startswith("R50"))
            model.load_from(npz_arrays(nschema))
            extra["npz_schema"] = nschema
        model.eval()
        x = golden.make_input((1, 1, img, img), INPUT_SEED)
        with torch.no_grad():
            y = model(x)
        meta = {"official": name, "img_size": img, "n_skip": n_skip, "num_classes": NUM_CLASSES,
                "source": source}
        write_case(args.out, case, schema, x, INPUT_SEED, {"logits": y}, meta)


if __name__ == "__main__":
    main()
