"""Train a tiny TransUNet on phantom slices in seconds: a *trained* model for inference tests.

Inference tests need a model whose labels mean something (orientation handling can only be
checked when the model has learnt where the liver is) and the benchmark needs one to compare
bf16 with fp32 predictions. This is a deliberately minimal loop (cross-entropy + soft Dice,
Adam), not the project's training engine.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from transunet_app.checkpoint import make_checkpoint
from transunet_app.data.geometry import to_canonical
from transunet_app.data.phantom import CLASSES, make_phantom
from transunet_app.inference.predictor import ALIGN_CORNERS
from transunet_app.models import build_model

HU_WINDOW = (-125.0, 275.0)


def phantom_slices(seeds, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical axial slices of phantom cases, windowed and resized like inference does.

    Returns:
        images (N, 1, S, S) float32 in [0, 1]; labels (N, S, S) int64 (nearest resize).
    """
    xs, ys = [], []
    lo, hi = HU_WINDOW
    for seed in seeds:
        ph = make_phantom(seed)
        img, _ = to_canonical(ph.image, ph.affine)
        lab, _ = to_canonical(ph.labels, ph.affine)
        x = torch.from_numpy(img.astype(np.float32)).clamp(lo, hi).sub(lo).div(hi - lo).unsqueeze(1)
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=ALIGN_CORNERS)
        y = torch.from_numpy(lab.astype(np.int64)).unsqueeze(1).float()
        y = F.interpolate(y, size=(img_size, img_size), mode="nearest").squeeze(1).long()
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def train_tiny(seeds=(11, 12, 13, 14), img_size: int = 64, steps: int = 300, batch: int = 16,
               lr: float = 3e-3, seed: int = 0, name: str = "tiny", overrides: dict | None = None):
    """Train ``name`` on phantom slices; returns ``(model, checkpoint_dict)``."""
    torch.manual_seed(seed)
    x, y = phantom_slices(seeds, img_size)
    model = build_model(name, len(CLASSES), img_size=img_size, **(overrides or {}))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    k = len(CLASSES)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        ce = F.cross_entropy(logits, yb)
        p = logits.softmax(1)
        oh = F.one_hot(yb, k).permute(0, 3, 1, 2).float()
        inter = (p * oh).sum((0, 2, 3))
        dice = 1 - ((2 * inter + 1) / (p.sum((0, 2, 3)) + oh.sum((0, 2, 3)) + 1))[1:].mean()
        loss = ce + dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    ckpt = make_checkpoint(model, list(CLASSES), {"img_size": [img_size, img_size],
                                                  "hu_window": list(HU_WINDOW)})
    return model, ckpt
