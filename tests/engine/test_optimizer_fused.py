"""The engine's optimizers use torch's fused kernels and compute what the default ones do."""
from __future__ import annotations

import pytest
import torch

from transunet_app.engine.schedule import build_optimizer


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_optimizer_steps_like_the_default_one(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, name, 0.01, 1e-4, 0.9)
    assert opt.defaults["fused"] is True
    ref = (torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) if name == "sgd"
           else torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=1e-4))
    for _step in range(3):
        x = torch.randn(8, 16)
        for net, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # The state a checkpoint stores has the default optimizer's layout (exact resume).
    assert set(opt.state_dict()["state"][0]) == set(ref.state_dict()["state"][0])
