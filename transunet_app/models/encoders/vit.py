"""Vision Transformer encoders of TransUNet: pure ViT (B/16, B/32, L/16) and the R50 hybrid.

Numerically the official TransUNet ``Transformer``: (optional ResNetV2 stem) -> patch
embedding conv -> + learned position embeddings -> dropout -> pre-norm blocks (LayerNorm eps
1e-6, erf GELU) -> final LayerNorm. There is no class token ('seg' classifier). The tokens are
returned as a feature map at 1/``patch`` resolution for the cascaded decoder.

Differences from the official code, all numerically neutral: q/k/v are one fused linear
(the loader concatenates the official weights), attention runs through
``scaled_dot_product_attention``, and the token grid may be non-square (224x256 works).

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ..layers import TransformerBlock, resample_abs_pos_embed
from .base import Encoder, EncoderOutput
from .resnet_v2 import ResNetV2


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


class VisionTransformerEncoder(Encoder):
    """ViT encoder, optionally with a ResNetV2 hybrid stem.

    Args:
        img_size: (H, W) or int; sets the size of the stored position-embedding grid. Other
            sizes divisible by ``size_divisor`` run too (embeddings interpolated on the fly).
        patch_size: patch size in pixels of the input (16 or 32); the hybrid uses 16 (a 1x1
            patch on the ResNet's 1/16 map, as the official code does at its grid setting).
        hidden_size, num_layers, num_heads, mlp_dim: transformer size (B: 768/12/12/3072).
        resnet_units: ResNetV2 units per stage for the hybrid stem, or None for a pure ViT.
        resnet_width: ResNetV2 width factor.
        in_channels: input channels (3 for ImageNet weights).
        dropout: dropout after the embeddings and inside MLPs (official: 0.1).
        attention_dropout: dropout on attention probabilities (official: 0.0).
        drop_path: stochastic-depth rate, linearly increasing over blocks (official: 0).

    Forward: (B, in_channels, H, W) -> EncoderOutput with bottleneck (B, hidden, H/p, W/p).
    """

    weight_family = "vit"

    def __init__(self, img_size=224, patch_size: int = 16, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 resnet_units: Optional[Sequence[int]] = None, resnet_width: float = 1,
                 in_channels: int = 3, dropout: float = 0.1, attention_dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        img_size = _pair(img_size)
        if patch_size not in (8, 16, 32):
            raise ValueError(f"patch_size must be 8, 16 or 32, got {patch_size}")
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        if resnet_units is not None:
            self.hybrid = ResNetV2(tuple(resnet_units), resnet_width, in_channels)
            self.stem = "hybrid." + self.hybrid.stem
            embed_in, embed_patch = self.hybrid.out_channels, 1
            self.patch_size = 16
            self.skip_channels = self.hybrid.skip_channels
        else:
            self.hybrid = None
            self.stem = "patch_embed"
            embed_in, embed_patch = in_channels, patch_size
            self.patch_size = patch_size
            self.skip_channels = (0, 0, 0)
        self.bottleneck_stride = self.patch_size
        self.size_divisor = max(16, self.patch_size)
        self.bottleneck_channels = hidden_size
        for s in img_size:
            if s % self.size_divisor:
                raise ValueError(f"img_size {img_size} is not divisible by {self.size_divisor}")
        self.grid = (img_size[0] // self.patch_size, img_size[1] // self.patch_size)
        self.patch_embed = nn.Conv2d(embed_in, hidden_size, kernel_size=embed_patch,
                                     stride=embed_patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden_size))
        self.pos_drop = nn.Dropout(dropout)
        rates = [drop_path * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_dim, drop=dropout,
                             attn_drop=attention_dropout, proj_drop=attention_dropout,
                             drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official Mlp: xavier-uniform weights, tiny normal biases.
        for block in self.blocks:
            for fc in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> EncoderOutput:
        self.check_input(x)
        if self.hybrid is not None:
            x, skips = self.hybrid(x)
        else:
            skips = [None, None, None]
        x = self.patch_embed(x)  # (B, hidden, h, w)
        h, w = x.shape[-2:]
        tokens = rearrange(x, "b c h w -> b (h w) c")  # (B, h*w, hidden)
        pos = self.pos_embed
        if (h, w) != self.grid:
            pos = resample_abs_pos_embed(pos, (h, w), self.grid)
        tokens = self.pos_drop(tokens + pos)
        attentions = [] if return_attention else None
        for block in self.blocks:
            tokens, weights = block(tokens, return_attention)
            if return_attention:
                attentions.append(weights)
        tokens = self.norm(tokens)
        # (B, h*w, C) -> (B, C, h, w) as a channels_last view: no copy for the decoder's convs.
        bottleneck = rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)
        return EncoderOutput(bottleneck, tuple(skips), attentions)


# ---------------------------------------------------------------------------------------------
# Registered variants: the official TransUNet configurations (vit_seg_configs.py) plus "tiny".

_B = dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
_L = dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
_R50 = dict(resnet_units=(3, 4, 9), resnet_width=1)


def _register() -> None:
    from ..registry import register_encoder

    build = VisionTransformerEncoder
    register_encoder("R50-ViT-B_16", build, **_B, **_R50, patch_size=16,
                     model_defaults=dict(n_skip=3),
                     description="TransUNet: ResNet-50 (3 stages) + ViT-B/16, 3 skips")
    register_encoder("R50-ViT-L_16", build, **_L, **_R50, patch_size=16,
                     model_defaults=dict(n_skip=3),
                     description="ResNet-50 (3 stages) + ViT-L/16, 3 skips")
    register_encoder("ViT-B_16", build, **_B, patch_size=16, model_defaults=dict(n_skip=0),
                     description="pure ViT-B/16, no skips")
    register_encoder("ViT-B_32", build, **_B, patch_size=32, model_defaults=dict(n_skip=0),
                     description="pure ViT-B/32, no skips (tokens at 1/32, head upsamples x2)")
    register_encoder("ViT-L_16", build, **_L, patch_size=16, model_defaults=dict(n_skip=0),
                     description="pure ViT-L/16, no skips")
    register_encoder("tiny", build, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128,
                     resnet_units=(1, 1, 1), resnet_width=0.5, patch_size=16,
                     model_defaults=dict(n_skip=3, decoder_channels=(32, 16, 16, 8),
                                         head_channels=64),
                     description="tiny R50-ViT-like hybrid for tests and the demo")


_register()


# ---------------------------------------------------------------------------------------------
# Official weight formats of this family (pure converters; loaded by models.pretrained).

def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a)) if not torch.is_tensor(a) else a


def _hwio(a) -> torch.Tensor:
    """Flax conv kernel (H, W, I, O) -> torch (O, I, H, W)."""
    return _t(a).permute(3, 2, 0, 1)


def _npz_pos_embed(posemb: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Official TransUNet ``load_from`` position-embedding logic: same size -> as is; one extra
    (class) token -> dropped; otherwise drop the class token and resize the square grid
    bilinearly with aligned corners (the official ``scipy.ndimage.zoom(order=1)``: computed in
    float64 and rounded to the file's dtype, as zoom does). A non-square target grid is
    resized per axis."""
    n_new = grid[0] * grid[1]
    if posemb.shape[1] == n_new:
        return _t(posemb)
    if posemb.shape[1] - 1 == n_new:
        return _t(posemb[:, 1:])
    pos = _t(posemb)
    return resample_abs_pos_embed(pos[:, 1:].double(), tuple(grid)).to(pos.dtype)


def convert_google_npz(npz: Mapping, encoder: "VisionTransformerEncoder"):
    """Google ViT / R50+ViT ImageNet ``.npz`` -> encoder state dict (our names).

    Keys as the official ``VisionTransformer.load_from`` reads them; ``cls``, ``head/*`` and
    ``pre_logits/*`` are skipped (the 'seg' classifier has no class token or head).
    """
    hs = encoder.hidden_size
    out, skipped = {}, {}
    out["patch_embed.weight"] = _hwio(npz["embedding/kernel"])
    out["patch_embed.bias"] = _t(npz["embedding/bias"])
    src_pos = np.asarray(npz["Transformer/posembed_input/pos_embedding"])
    out["pos_embed"] = _npz_pos_embed(src_pos, encoder.grid)
    resized = {}
    if src_pos.shape[1] - 1 != out["pos_embed"].shape[1] and src_pos.shape[1] != out["pos_embed"].shape[1]:
        resized["pos_embed"] = (tuple(src_pos.shape), tuple(out["pos_embed"].shape))
    out["norm.weight"] = _t(npz["Transformer/encoder_norm/scale"])
    out["norm.bias"] = _t(npz["Transformer/encoder_norm/bias"])
    for i in range(len(encoder.blocks)):
        r = f"Transformer/encoderblock_{i}/"
        a = r + "MultiHeadDotProductAttention_1/"
        p = f"blocks.{i}."
        out[p + "attn.qkv.weight"] = torch.cat(
            [_t(npz[a + f"{n}/kernel"]).reshape(hs, hs).t() for n in ("query", "key", "value")])
        out[p + "attn.qkv.bias"] = torch.cat(
            [_t(npz[a + f"{n}/bias"]).reshape(-1) for n in ("query", "key", "value")])
        out[p + "attn.proj.weight"] = _t(npz[a + "out/kernel"]).reshape(hs, hs).t()
        out[p + "attn.proj.bias"] = _t(npz[a + "out/bias"]).reshape(-1)
        for j, fc in ((0, "fc1"), (1, "fc2")):
            out[p + f"mlp.{fc}.weight"] = _t(npz[r + f"MlpBlock_3/Dense_{j}/kernel"]).t()
            out[p + f"mlp.{fc}.bias"] = _t(npz[r + f"MlpBlock_3/Dense_{j}/bias"])
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[p + f"{norm}.weight"] = _t(npz[r + f"{ln}/scale"])
            out[p + f"{norm}.bias"] = _t(npz[r + f"{ln}/bias"])
    if encoder.hybrid is not None:
        out["hybrid.root.conv.weight"] = _hwio(npz["conv_root/kernel"])
        out["hybrid.root.gn.weight"] = _t(npz["gn_root/scale"]).reshape(-1)
        out["hybrid.root.gn.bias"] = _t(npz["gn_root/bias"]).reshape(-1)
        for bname, block in encoder.hybrid.body.named_children():
            for uname, unit in block.named_children():
                src, dst = f"{bname}/{uname}/", f"hybrid.body.{bname}.{uname}."
                for n in ("conv1", "conv2", "conv3"):
                    out[dst + f"{n}.weight"] = _hwio(npz[src + f"{n}/kernel"])
                for n in ("gn1", "gn2", "gn3") + (("gn_proj",) if unit.downsample is not None else ()):
                    out[dst + f"{n}.weight"] = _t(npz[src + f"{n}/scale"]).reshape(-1)
                    out[dst + f"{n}.bias"] = _t(npz[src + f"{n}/bias"]).reshape(-1)
                if unit.downsample is not None:
                    out[dst + "downsample.weight"] = _hwio(npz[src + "conv_proj/kernel"])
    used_prefixes = ("embedding/", "Transformer/", "conv_root/", "gn_root/", "block")
    for k in npz:
        if not k.startswith(used_prefixes):
            skipped[k] = "classifier/pre-logits (not used for segmentation)"
        elif k.startswith(("conv_root/", "gn_root/", "block")) and encoder.hybrid is None:
            skipped[k] = "ResNet stem weights (this model has no hybrid stem)"
    return out, skipped, resized


_OFFICIAL_RULES = (
    ("transformer.embeddings.hybrid_model.", "encoder.hybrid."),
    ("transformer.embeddings.patch_embeddings.", "encoder.patch_embed."),
    ("transformer.embeddings.position_embeddings", "encoder.pos_embed"),
    ("transformer.encoder.encoder_norm.", "encoder.norm."),
    ("segmentation_head.0.", "segmentation_head."),
    ("decoder.", "decoder."),
)
_OFFICIAL_BLOCK = {"attention_norm": "norm1", "ffn_norm": "norm2", "ffn.fc1": "mlp.fc1",
                   "ffn.fc2": "mlp.fc2", "attn.out": "attn.proj"}


def convert_official_transunet(state: Mapping, model):
    """Official TransUNet ``state_dict`` (``vit_seg_modeling.VisionTransformer``) -> ours.

    Renames by ordered prefix rules; the separate query/key/value linears are concatenated
    into our fused ``qkv``.
    """
    out, skipped = {}, {}
    qkv: dict = {}
    for key, value in state.items():
        if key.startswith("transformer.encoder.layer."):
            _, _, _, idx, rest = key.split(".", 4)
            name, kind = rest.rsplit(".", 1)
            if name in ("attn.query", "attn.key", "attn.value"):
                qkv.setdefault((idx, kind), {})[name[5:]] = value
                continue
            out[f"encoder.blocks.{idx}.{_OFFICIAL_BLOCK.get(name, name)}.{kind}"] = value
            continue
        for src, dst in _OFFICIAL_RULES:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            skipped[key] = "not part of the official TransUNet model"
    for (idx, kind), parts in qkv.items():
        out[f"encoder.blocks.{idx}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]])
    return out, skipped


def convert_timm_vit(state: Mapping, encoder: "VisionTransformerEncoder"):
    """DeiT / timm ``VisionTransformer`` state dict -> encoder state dict.

    Block names already match ours; ``patch_embed.proj`` becomes ``patch_embed``, the class
    (and distillation) token is dropped from ``pos_embed`` and heads are skipped.
    """
    out, skipped = {}, {}
    n_grid = encoder.grid[0] * encoder.grid[1]
    for key, value in state.items():
        if key.startswith("patch_embed.proj."):
            out["patch_embed." + key.split(".")[-1]] = value
        elif key == "pos_embed":
            n_extra = value.shape[1] - int(round((value.shape[1]) ** 0.5)) ** 2
            if value.shape[1] != n_grid and n_extra in (1, 2):
                value = value[:, n_extra:]
            out["pos_embed"] = value
        elif key.startswith(("blocks.", "norm.")):
            out[key] = value
        else:
            skipped[key] = "class token / classifier head (not used for segmentation)"
    return out, skipped


def _is_timm_vit(keys: set) -> bool:
    # CeiT and Conformer releases share some timm names; their own telltales exclude them.
    others = ("i2t.", "conv_1.", "trans_patch_conv.", "conv_trans_", "stage0.")
    return ("patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys
            and not any(k.startswith(others) for k in keys))


def _register_formats() -> None:
    from ..pretrained import WeightFormat, register_weight_format

    register_weight_format(WeightFormat(
        name="Google ViT .npz", family="vit", scope="encoder",
        detect=lambda keys: "Transformer/encoder_norm/scale" in keys,
        convert=convert_google_npz))
    register_weight_format(WeightFormat(
        name="official TransUNet", family="vit", scope="model",
        detect=lambda keys: any(k.startswith("transformer.embeddings.") for k in keys),
        convert=convert_official_transunet))
    register_weight_format(WeightFormat(
        name="DeiT/timm ViT", family="vit", scope="encoder",
        detect=_is_timm_vit,
        convert=convert_timm_vit))


_register_formats()
