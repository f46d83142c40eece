"""Checks shared by the encoder-family tests (test_cvt.py, test_ceit.py): the same behaviour
asked of every encoder, with one family's small configuration."""
from __future__ import annotations

import torch


def parameters_without_gradient(encoder: torch.nn.Module, size=(64, 64)) -> list[str]:
    """Names of parameters left without a (non-zero) gradient by a loss on the bottleneck and
    every skip, for a (2, 3, H, W) random input in training mode."""
    encoder.train()
    out = encoder(torch.randn(2, 3, *size))
    loss = out.bottleneck.square().mean()
    loss = loss + sum(s.square().mean() for s in out.skips if s is not None)
    loss.backward()
    return [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum()]


def check_full_model_bf16(model: torch.nn.Module, used_skips: tuple, num_classes: int = 9,
                          size=(160, 192)) -> None:
    """The segmentation model uses the expected skips, keeps the input size, and bf16 autocast
    gives finite logits within 10 % (+0.1) of fp32 on a (1, 1, H, W) input."""
    model.eval()
    assert model.decoder.used_skip_channels == used_skips
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        y = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(x)
    assert y.shape == (1, num_classes, *size) and torch.isfinite(yb).all()
    assert (yb.float() - y).abs().max() < 0.1 * y.abs().max() + 0.1
