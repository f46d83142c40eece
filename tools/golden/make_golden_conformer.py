"""Record golden fidelity files from a local checkout of the official Conformer code.

    python tools/golden/make_golden_conformer.py --official /path/to/pengzhiliang/Conformer [--only NAME]

The official code is used only here, at development time, from the path given; it is never
copied into this repository. Its variants come from its own ``models.py``
(``Conformer_{tiny,small,base}_patch16``) and, for the reduced case, its ``Conformer`` class.
It imports ``timm`` (and ``models.py`` a ViT module needing torchvision); neither may be
installed here, so this tool registers the in-memory stand-ins of ``tools/golden/official_shims.py``
(``DropPath`` and ``trunc_normal_`` only matter for training and initialisation,
``register_model`` is the identity) before importing it.

Each case fills the official model with ``golden.official_like_state`` (seed 0), runs it in
float64, eval mode, on ``golden.make_input`` and records, through forward hooks on the official
modules (its own ``forward`` runs unchanged):

* ``stem``: the stem ReLU output at 1/2 (before the max-pool);
* ``cnn_<k>`` / ``tokens_<k>``: CNN map and tokens (class token first) at the end of stage k
  for k in the last stage of each resolution group (4, 8, 12 for depth 12), plus k = 1;
* ``normed``: ``trans_norm`` output (final tokens).

``tests/fidelity/test_conformer_official.py`` checks our encoder against these files.
"""
from __future__ import annotations

import sys

import torch
from golden_cli import recording_plan, write_case  # tools/golden, the script's folder
from official_shims import install_stand_ins
from torch import nn

from transunet_app.testing import golden

# name -> (official builder, official kwargs, input shape, record the stem?)
# (The official conv head assumes base_channel 64, so the reduced case narrows by the ratio.)
# Input sizes keep each file small (< ~150 KB): the strided samples grow with the map sizes.
REDUCED = dict(patch_size=16, base_channel=64, channel_ratio=0.25, embed_dim=48, depth=3,
               num_heads=3, mlp_ratio=4, qkv_bias=True)
CASES = {
    "conformer_ti": ("Conformer_tiny_patch16", {}, (1, 3, 224, 224), False),
    "conformer_s": ("Conformer_small_patch16", {}, (1, 3, 144, 112), True),
    "conformer_b": ("Conformer_base_patch16", {}, (1, 3, 128, 128), True),
    "conformer_reduced": ("Conformer", REDUCED, (2, 3, 64, 96), True),
}
INPUT_SEED = 11


def build_official(repo: str, builder: str, kwargs: dict) -> nn.Module:
    install_stand_ins(deit_module=True)  # models.py imports the repo's DeiT file
    sys.path.insert(0, repo)
    import conformer
    import models

    if builder == "Conformer":
        return conformer.Conformer(**kwargs)
    return getattr(models, builder)(**kwargs)


def record(model: nn.Module, x: torch.Tensor, with_stem: bool) -> dict:
    """Run the official forward once, capturing the stage outputs with forward hooks."""
    depth = len([n for n, _ in model.named_children() if n.startswith("conv_trans_")]) + 1
    ends = sorted({1, depth // 3, 2 * depth // 3, depth})
    outs, hooks = {}, []

    def keep(name, fn):
        hooks.append(getattr(model, name).register_forward_hook(
            lambda mod, inp, out: outs.update(fn(out))))

    if with_stem:
        keep("act1", lambda o: {"stem": o.clone()})
    keep("trans_norm", lambda o: {"normed": o.clone()})
    for k in ends:
        if k == 1:
            keep("conv_1", lambda o: {"cnn_1": o.clone()})
            keep("trans_1", lambda o: {"tokens_1": o.clone()})
        else:
            keep(f"conv_trans_{k}", lambda o, k=k: {f"cnn_{k}": o[0].clone(),
                                                    f"tokens_{k}": o[1].clone()})
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return outs


def main():
    args, cases = recording_plan(__doc__, "pengzhiliang/Conformer", CASES)
    for case, (builder, kwargs, shape, with_stem) in cases:
        model = build_official(args.official, builder, kwargs)
        schema = golden.schema_of(model.state_dict())
        model.load_state_dict(golden.official_like_state(schema, seed=0))
        model.eval()
        x = golden.make_input(shape, INPUT_SEED)
        outs = record(model, x, with_stem)
        meta = {"official": builder, "kwargs": kwargs, "input": shape,
                "recorded": sorted(outs)}
        write_case(args.out, case, schema, x, INPUT_SEED, outs, meta)


if __name__ == "__main__":
    main()
