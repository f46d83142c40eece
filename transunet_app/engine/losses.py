"""Segmentation losses: cross-entropy + soft Dice, as the official TransUNet trainer.

The official ``DiceLoss`` (``utils.py``) applies softmax, then per class k over the whole batch
``1 - (2 sum(p_k t_k) + 1e-5) / (sum(p_k^2) + sum(t_k^2) + 1e-5)`` and averages over all K
classes, background included; the total is ``0.5 * CE + 0.5 * Dice``. This version computes the
K sums in one pass (no Python loop, no K one-hot copies) and always in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH = 1e-5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Official per-class soft Dice loss, mean over classes.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, H, W) int64 class ids in [0, K).

    Returns:
        Scalar float32 tensor.
    """
    probs = logits.float().softmax(dim=1)
    k = probs.shape[1]
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    z_sum = (probs * probs).sum(dims)
    y_sum = onehot.sum(dims)  # t^2 == t for one-hot
    dice = (2.0 * intersect + smooth) / (z_sum + y_sum + smooth)
    return (1.0 - dice).mean()


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice`` (official: 0.5 / 0.5).

    Forward ``(logits (B, K, H, W), target (B, H, W) int64)`` returns
    ``(total, {"ce": ce, "dice": dice})`` (scalars, float32; the parts detached).
    """

    def __init__(self, ce_weight: float = 0.5, dice_weight: float = 0.5):
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got {ce_weight}, {dice_weight}")
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor):
        logits = logits.float()
        ce = F.cross_entropy(logits, target)
        dice = soft_dice_loss(logits, target)
        total = self.ce_weight * ce + self.dice_weight * dice
        return total, {"ce": ce.detach(), "dice": dice.detach()}
