"""Optimizers and learning-rate schedules built from config values.

Schedules are pure functions of the iteration (``lr_factor``), wrapped in a ``LambdaLR`` whose
state (just the step count) is saved with the run. The official TransUNet poly schedule is
``base_lr * (1 - t / T) ** 0.9`` over all T iterations (the official loop applies it one
iteration late; here iteration t uses the value for t).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(iteration: int, total: int, name: str = "poly", power: float = 0.9, warmup: int = 0,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``iteration`` (0-based) of ``total``.

    Args:
        name: ``poly`` ((1 - t/T)^power), ``cosine`` (half cosine from 1 to min_ratio) or
            ``constant``.
        warmup: linear warm-up iterations (from 1/warmup to 1) before the schedule.
        min_ratio: end value of the cosine schedule as a fraction of the base lr.
    """
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    if name == "constant":
        return 1.0
    span = max(total - warmup, 1)
    t = min(max(iteration - warmup, 0) / span, 1.0)
    if name == "poly":
        return (1.0 - t) ** power
    if name == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {name!r}")


class _Factor:
    # A picklable callable (LambdaLR.state_dict stores callable objects' __dict__: plain values).
    def __init__(self, total: int, name: str, power: float, warmup: int, min_ratio: float):
        self.total, self.name, self.power, self.warmup, self.min_ratio = total, name, power, warmup, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.name, self.power, self.warmup, self.min_ratio)


def build_scheduler(optimizer, total: int, name: str = "poly", power: float = 0.9, warmup: int = 0,
                    min_lr: float = 0.0, base_lr: float = 1.0):
    """``LambdaLR`` stepping once per iteration over ``total`` iterations."""
    factor = _Factor(int(total), name, float(power), int(warmup), float(min_lr) / float(base_lr))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _is_no_decay(name: str, param: torch.Tensor) -> bool:
    # Biases and the scale/shift of norm layers are 1-D; position embeddings and tokens are not
    # decayed in the DeiT/CvT recipes either.
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "position_embeddings" in name \
        or "cls_token" in name


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    nesterov: bool = False, betas=(0.9, 0.999), eps: float = 1e-8, no_decay_norm_bias: bool = False):
    """SGD (official TransUNet) or AdamW (CvT/CeiT/Conformer recipes)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if no_decay_norm_bias:
        groups = [{"params": [p for n, p in params if not _is_no_decay(n, p)], "weight_decay": weight_decay},
                  {"params": [p for n, p in params if _is_no_decay(n, p)], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    # The fused kernels update each tensor in one pass (a third of the foreach default's
    # time per step, same values: BENCHMARKS.md, training); they need float tensors on
    # CPU/CUDA, so anything else keeps the default implementation.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for _, p in params) or None
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")
