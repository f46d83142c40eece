"""Loss equals the official TransUNet DiceLoss + CE; schedules; optimizer parameter groups."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transunet_app.engine.losses import DiceCELoss, soft_dice_loss
from transunet_app.engine.schedule import build_optimizer, build_scheduler, lr_factor


def official_dice_loss(inputs, target, n_classes):
    """utils.DiceLoss.forward(inputs, target, softmax=True) of the official TransUNet code."""
    inputs = torch.softmax(inputs, dim=1)
    target = torch.cat([(target == i).unsqueeze(1) for i in range(n_classes)], dim=1).float()
    loss = 0.0
    for i in range(n_classes):
        score, t = inputs[:, i], target[:, i]
        intersect = torch.sum(score * t)
        y_sum = torch.sum(t * t)
        z_sum = torch.sum(score * score)
        loss += 1 - (2 * intersect + 1e-5) / (z_sum + y_sum + 1e-5)
    return loss / n_classes


@pytest.mark.parametrize("k", [2, 9])
def test_loss_matches_official(k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(3, k, 20, 24, generator=g, dtype=torch.float64)
    target = torch.randint(0, k, (3, 20, 24), generator=g)
    target[0] = 0  # a sample without foreground
    ours = soft_dice_loss(logits.float(), target)
    ref = official_dice_loss(logits, target, k)
    assert abs(float(ours) - float(ref)) < 1e-6
    total, parts = DiceCELoss(0.5, 0.5)(logits.float(), target)
    expected = 0.5 * F.cross_entropy(logits, target) + 0.5 * ref
    assert abs(float(total) - float(expected)) < 1e-6
    assert set(parts) == {"ce", "dice"}


def test_loss_gradient_matches_official():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    DiceCELoss()(a, target)[0].backward()
    (0.5 * F.cross_entropy(b, target) + 0.5 * official_dice_loss(b, target, 4)).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_perfect_prediction_has_small_loss():
    target = torch.randint(0, 3, (2, 16, 16))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(DiceCELoss()(logits, target)[0]) < 1e-4


def test_poly_schedule_values():
    assert lr_factor(0, 100) == 1.0
    assert math.isclose(lr_factor(50, 100), 0.5 ** 0.9)
    assert lr_factor(100, 100) == 0.0
    # warm-up rises linearly, then the poly decay runs over the remaining iterations
    assert [round(lr_factor(i, 110, warmup=10), 12) for i in range(3)] == [0.1, 0.2, 0.3]
    assert lr_factor(10, 110, warmup=10) == 1.0
    assert math.isclose(lr_factor(110, 110, name="cosine", warmup=10, min_ratio=0.1), 0.1)
    assert lr_factor(7, 10, name="constant") == 1.0


def test_scheduler_state_roundtrip_is_weights_only_safe(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, "sgd", lr=0.01, weight_decay=1e-4)
    sched = build_scheduler(opt, total=10, name="poly", power=0.9, base_lr=0.01)
    for _ in range(4):
        opt.step()
        sched.step()
    torch.save({"s": sched.state_dict(), "o": opt.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = build_optimizer(model, "sgd", lr=0.01, weight_decay=1e-4)
    sched2 = build_scheduler(opt2, total=10, name="poly", power=0.9, base_lr=0.01)
    sched2.load_state_dict(state["s"])
    opt2.load_state_dict(state["o"])
    assert math.isclose(opt2.param_groups[0]["lr"], 0.01 * (1 - 4 / 10) ** 0.9)


def test_adamw_groups_skip_decay_on_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05, no_decay_norm_bias=True)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and len(decayed["params"]) == 1  # the conv weight
    assert free["weight_decay"] == 0.0 and len(free["params"]) == 3
