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


@pytest.mark.parametrize("hard_links", [True, False])
def test_keep_previous_never_leaves_the_run_without_last(tmp_path, monkeypatch, hard_links):
    """A crash between keeping last.pt as previous.pt and renaming the new file in (a node
    SIGKILLed there under load) left no last.pt; with hard links last.pt now stays whole."""
    import os

    last, previous = tmp_path / "last.pt", tmp_path / "previous.pt"
    save_checkpoint(last, {"iteration": 1}, overwrite=True, keep_previous=previous)
    save_checkpoint(last, {"iteration": 2}, overwrite=True, keep_previous=previous)
    assert torch.load(previous)["iteration"] == 1 and torch.load(last)["iteration"] == 2

    real_replace = os.replace

    def crash_on_the_final_rename(src, dst):
        if os.fspath(dst) == os.fspath(last):
            raise KeyboardInterrupt  # the process dies here
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_final_rename)
    if not hard_links:  # a file system without them: the fallback moves last.pt
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(1, "not supported")))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, {"iteration": 3}, overwrite=True, keep_previous=previous)
    monkeypatch.undo()
    assert torch.load(previous)["iteration"] == 2
    if hard_links:
        assert torch.load(last)["iteration"] == 2
    else:
        assert not last.exists()  # resume falls back to previous.pt (tests/faults)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["previous.pt"] + (["last.pt"] if hard_links else []))  # no temporary or link left
