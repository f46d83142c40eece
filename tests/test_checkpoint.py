"""Checkpoints are written with the one atomic write: never over an existing file by surprise."""
import pytest
import torch

from transunet_app.checkpoint import save_checkpoint
from transunet_app.errors import UserError


def test_save_checkpoint_refuses_an_existing_file_unless_told(tmp_path):
    path = tmp_path / "runs" / "best.pt"  # the folder is created
    save_checkpoint(path, {"w": torch.ones(2)})
    with pytest.raises(UserError, match="already exists"):
        save_checkpoint(path, {"w": torch.zeros(2)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    save_checkpoint(path, {"w": torch.zeros(2)}, overwrite=True)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]
