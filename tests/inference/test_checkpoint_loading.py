"""Light checkpoint loading for ``segment``: a model built on ``meta`` takes the stored tensors.

The safety of loading is unchanged: pickled code is refused, a corrupt file is one line.
"""
from __future__ import annotations

import os

import pytest
import torch

from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from transunet_app.errors import CheckpointError
from transunet_app.models import build_model

from .conftest import tiny_checkpoint_dict


@pytest.fixture(scope="module")
def ckpt_dict():
    return tiny_checkpoint_dict()


def test_pickled_code_is_refused_and_not_run(tmp_path, ckpt_dict):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "pickled.pt"
    torch.save({"format": ckpt_dict["format"], "payload": Evil()}, p)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(p)
    msg = str(err.value)
    assert str(p) in msg and "refusing to load" in msg and "\n" not in msg
    assert not marker.exists()


def test_corrupt_and_truncated_files_are_one_line_errors(tmp_path, ckpt_dict):
    good = tmp_path / "good.pt"
    save_checkpoint(good, ckpt_dict)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for p in (corrupt, truncated):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(p)
        msg = str(err.value)
        assert str(p) in msg and "\n" not in msg
        assert "not a readable PyTorch checkpoint" in msg or "refusing to load" in msg, msg
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_model_takes_the_checkpoint_tensors_without_a_second_copy(ckpt_dict):
    model = model_from_checkpoint(ckpt_dict)
    state = ckpt_dict["state_dict"]
    params = dict(model.named_parameters())
    assert params and all(p.data_ptr() == state[k].data_ptr() for k, p in params.items())
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert all(p.requires_grad for p in model.parameters())
    # the same model as a conventional build + copy
    ref = build_model(ckpt_dict["model"]["name"], ckpt_dict["model"]["num_classes"],
                      img_size=ckpt_dict["model"]["img_size"])
    ref.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=0, atol=0)


def test_a_checkpoint_saved_in_half_precision_gives_a_float32_model(ckpt_dict):
    half = dict(ckpt_dict)
    half["state_dict"] = {k: (v.half() if v.is_floating_point() else v)
                          for k, v in ckpt_dict["state_dict"].items()}
    model = model_from_checkpoint(half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_weights_that_do_not_fit_are_a_checkpoint_error(ckpt_dict):
    bad = dict(ckpt_dict)
    bad["state_dict"] = {k: v for k, v in ckpt_dict["state_dict"].items()
                         if "segmentation_head" not in k}
    with pytest.raises(CheckpointError, match="weights do not fit"):
        model_from_checkpoint(bad, "bad.pt")


def test_initialisers_are_skipped_on_meta_tensors_only():
    from torch import nn

    from transunet_app.checkpoint import _SkipInPlaceOnMeta

    with torch.device("meta"), _SkipInPlaceOnMeta():
        meta = torch.empty(5)
        assert nn.init.trunc_normal_(meta, std=0.02) is meta   # keyword tensor (torch.nn.init)
        assert meta.normal_() is meta and meta.clamp_(-1, 1) is meta
        assert (meta + 1).is_meta                              # other ops run as usual
    with _SkipInPlaceOnMeta():
        real = torch.zeros(1000)
        nn.init.normal_(real, std=1.0)                         # real tensors are initialised
        assert real.std() > 0.5
