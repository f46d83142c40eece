"""Record CeiT golden fidelity files from a local checkout of the official coeusguo/ceit code.

    python tools/golden/make_golden_ceit.py --official /path/to/coeusguo+ceit [--only NAME]

The official model (``ceit_{tiny,small,base}_patch16_224`` of ``ceit_model.py``, optionally at
another ``img_size``) is filled with ``golden.official_like_state`` (seed 0), run in float64
and eval mode, and these outputs are recorded:

* ``tokens``: the output of the last block, (B, 1 + N, C), class token first;
* ``stem_quarter`` / ``stem_half``: the I2T output (1/4) and its conv + BN map before the
  max-pool (1/2), our skips (224 cases only, to keep the files small);
* ``class_embedding``: ``forward_features`` (LCA over the per-layer class tokens + norm).

For the ``*_resize`` case the state is the 224 one and the official model is built at the
other size; its position embeddings are resized by the rule of the official fine-tuning code
(``main.py --finetune``: class token kept, grid bicubic without corner alignment), which is
what our loader must reproduce from the 224 checkpoint.

``timm`` (not installable here) is replaced by the in-memory stand-ins of
``tools/golden/official_shims.py`` (``DropPath`` is only reached with rate 0). The official code is used
only here, from the path given; it is never copied into this repo.
"""
from __future__ import annotations

import sys

import torch
from golden_cli import recording_plan, write_case  # tools/golden, the script's folder
from official_shims import install_stand_ins

from transunet_app.testing import golden

# name -> (official factory, img_size the official model is built at, input shape)
CASES = {
    "ceit_t": ("ceit_tiny_patch16_224", 224, (1, 3, 224, 224)),
    "ceit_t_resize": ("ceit_tiny_patch16_224", 256, (1, 3, 256, 256)),
    "ceit_s": ("ceit_small_patch16_224", 224, (1, 3, 224, 224)),
    "ceit_b": ("ceit_base_patch16_224", 224, (1, 3, 224, 224)),
}
INPUT_SEED = 13


def official_pos_resize(pos: torch.Tensor, new_size: int) -> torch.Tensor:
    """The position-embedding rule of the official ``main.py --finetune`` (one extra token)."""
    extra, grid = pos[:, :1], pos[:, 1:]
    c = pos.shape[-1]
    orig = int(grid.shape[1] ** 0.5)
    grid = grid.reshape(-1, orig, orig, c).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(new_size, new_size), mode="bicubic",
                                           align_corners=False)
    return torch.cat((extra, grid.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def build_official(repo: str, factory: str, img_size: int):
    install_stand_ins()
    sys.path.insert(0, repo)
    import ceit_model

    return getattr(ceit_model, factory)(img_size=img_size)


def record(model, x):
    outs = {}
    hooks = [
        model.blocks[-1].register_forward_hook(lambda m, i, o: outs.__setitem__("tokens", o[0])),
        model.i2t.backbone.bn.register_forward_hook(
            lambda m, i, o: outs.__setitem__("stem_half", o)),
        model.i2t.backbone.register_forward_hook(
            lambda m, i, o: outs.__setitem__("stem_quarter", o)),
    ]
    outs["class_embedding"] = model.forward_features(x)
    for h in hooks:
        h.remove()
    return outs


def main():
    args, cases = recording_plan(__doc__, "coeusguo/ceit", CASES)
    for case, (factory, img, shape) in cases:
        model = build_official(args.official, factory, 224)
        schema = golden.schema_of(model.state_dict())  # the 224 release schema
        state = golden.official_like_state(schema, seed=0)
        if img != 224:
            model = build_official(args.official, factory, img)
            state["pos_embed"] = official_pos_resize(state["pos_embed"], img // 16)
        model.load_state_dict(state)
        model.eval()
        x = golden.make_input(shape, INPUT_SEED)
        with torch.no_grad():
            outs = record(model, x)
        if img != 224:  # the stem does not depend on the size of the position grid
            del outs["stem_half"], outs["stem_quarter"]
        meta = {"official": f"coeusguo/ceit ceit_model.py {factory}", "img_size": img}
        write_case(args.out, case, schema, x, INPUT_SEED, outs, meta)
        del model


if __name__ == "__main__":
    main()
