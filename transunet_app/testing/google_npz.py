"""Google ImageNet-21k ViT / R50+ViT ``.npz`` files in the exact official key schema.

Tests write these files themselves (no downloads): key names and layouts as the official
TransUNet ``load_from`` reads them (Flax HWIO kernels, (hidden, heads, head_dim) attention
kernels, 'scale'/'bias' norms), values from :func:`golden.official_like_state`.
"""
from __future__ import annotations

import numpy as np
import torch

from . import golden


def npz_schema(hybrid: bool, hs=768, layers=12, heads=12, mlp=3072, grid=14):
    """Key schema of Google's ImageNet-21k ViT-B_16 / R50+ViT-B_16 .npz files."""
    s = [("embedding/kernel", (1, 1, 1024, hs) if hybrid else (16, 16, 3, hs)),
         ("embedding/bias", (hs,)), ("cls", (1, 1, hs)),
         ("head/kernel", (hs, 21843)), ("head/bias", (21843,)),
         ("Transformer/posembed_input/pos_embedding", (1, grid * grid + 1, hs)),
         ("Transformer/encoder_norm/scale", (hs,)), ("Transformer/encoder_norm/bias", (hs,))]
    hd = hs // heads
    for i in range(layers):
        r = f"Transformer/encoderblock_{i}/"
        a = r + "MultiHeadDotProductAttention_1/"
        for n in ("query", "key", "value"):
            s += [(a + n + "/kernel", (hs, heads, hd)), (a + n + "/bias", (heads, hd))]
        s += [(a + "out/kernel", (heads, hd, hs)), (a + "out/bias", (hs,)),
              (r + "MlpBlock_3/Dense_0/kernel", (hs, mlp)), (r + "MlpBlock_3/Dense_0/bias", (mlp,)),
              (r + "MlpBlock_3/Dense_1/kernel", (mlp, hs)), (r + "MlpBlock_3/Dense_1/bias", (hs,))]
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            s += [(r + ln + "/scale", (hs,)), (r + ln + "/bias", (hs,))]
    if hybrid:
        s += [("conv_root/kernel", (7, 7, 3, 64)), ("gn_root/scale", (64,)), ("gn_root/bias", (64,))]
        cin = 64
        for b, (units, mult) in enumerate(zip((3, 4, 9), (4, 8, 16)), 1):
            cout = 64 * mult
            cmid = cout // 4
            for u in range(1, units + 1):
                p = f"block{b}/unit{u}/"
                ci = cin if u == 1 else cout
                s += [(p + "conv1/kernel", (1, 1, ci, cmid)), (p + "conv2/kernel", (3, 3, cmid, cmid)),
                      (p + "conv3/kernel", (1, 1, cmid, cout))]
                for g, c in (("gn1", cmid), ("gn2", cmid), ("gn3", cout)):
                    s += [(p + g + "/scale", (c,)), (p + g + "/bias", (c,))]
                if u == 1:
                    s += [(p + "conv_proj/kernel", (1, 1, ci, cout)), (p + "gn_proj/scale", (cout,)),
                          (p + "gn_proj/bias", (cout,))]
            cin = cout
    return [(k, shape, "float32") for k, shape in s]


def npz_arrays(schema, seed=1):
    """The npz contents for a schema: float32, as Google's files (scales as 1-D rules)."""
    fixed = []
    for k, shape, dt in schema:
        leaf = k.rsplit("/", 1)[-1]
        # Flax names: 'scale' are norm weights (~1), 'bias' small, 'kernel' fan-in scaled.
        torch_like = k + (".bias" if leaf == "bias" else ".weight")
        fixed.append((torch_like, shape if leaf != "scale" else (int(np.prod(shape)),), dt))
    state = golden.official_like_state(fixed, seed, dtype=torch.float32)
    return {k: state[t].numpy().reshape(shape) for (k, shape, _), t in zip(schema, state)}


def write_npz(path, hybrid: bool, seed: int = 1, **sizes) -> None:
    np.savez(path, **npz_arrays(npz_schema(hybrid, **sizes), seed))
