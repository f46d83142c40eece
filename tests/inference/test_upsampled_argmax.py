"""Labels of upsampled scores without the full-size map: equal to interpolate + argmax."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transunet_app.inference import upsampled_argmax as module
from transunet_app.inference.upsampled_argmax import upsampled_argmax


@pytest.fixture(params=["C kernel", "torch, exact path everywhere", "torch, default"])
def exact_path(request, monkeypatch):
    """Run a test with the C kernel, and with the torch implementation with the plain-path
    fallback for noisy scores off (every disagreeing cell interpolated, however many) and
    with its default threshold."""
    if request.param == "C kernel":
        if not module.native.kernel_available():
            pytest.skip(f"kernel unavailable: {module.native.unavailable_reason()}")
    else:
        monkeypatch.setattr(module.native, "kernel_takes", lambda *a: False)
    if request.param == "torch, exact path everywhere":
        monkeypatch.setattr(module, "MAX_UNSURE", 1.0)
    return request.param


@pytest.fixture
def torch_only(monkeypatch):
    monkeypatch.setattr(module.native, "kernel_takes", lambda *a: False)


def _plain(scores, size):
    up = F.interpolate(scores, size=size, mode="bilinear", align_corners=True)
    return up, up.argmax(1).to(torch.uint8)


def _smooth_scores(b, k, h, w, seed=0, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(b, k, max(2, h // 6), max(2, w // 6), generator=g) * scale
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def _assert_equal_but_near_ties(scores, size, tol=1e-5):
    up, ref = _plain(scores, size)
    ours = upsampled_argmax(scores, size)
    assert ours.shape == ref.shape and ours.dtype == torch.uint8
    differ = ours != ref
    if differ.any():
        # only where the two labels' interpolated scores tie to float rounding
        v = up.permute(0, 2, 3, 1)[differ]
        a = v.gather(1, ref[differ].long()[:, None]).squeeze(1)
        b = v.gather(1, ours[differ].long()[:, None]).squeeze(1)
        assert torch.all((a - b).abs() <= tol * a.abs().clamp_min(1)), (a - b).abs().max()
    assert differ.float().mean() < 1e-4
    return ours


@pytest.mark.parametrize("shape,size", [
    ((2, 9, 32, 32), (75, 75)), ((1, 4, 20, 28), (61, 47)), ((3, 5, 17, 17), (17, 40)),
    ((1, 3, 16, 16), (16, 16)), ((1, 2, 1, 12), (1, 30)), ((1, 6, 9, 1), (25, 1)),
    ((2, 9, 224, 224), (512, 512))])
def test_equal_to_interpolate_then_argmax(shape, size, exact_path):
    scores = _smooth_scores(*shape)
    _assert_equal_but_near_ties(scores, size)
    _assert_equal_but_near_ties(scores.contiguous(memory_format=torch.channels_last), size)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_noisy_scores_of_an_untrained_model(exact_path, layout):
    """Labels that change from pixel to pixel: most output pixels are interpolated."""
    scores = torch.randn(2, 9, 56, 56, generator=torch.Generator().manual_seed(3))
    if layout == "channels_last":
        scores = scores.contiguous(memory_format=torch.channels_last)
    _assert_equal_but_near_ties(scores, (128, 128))


def test_kernel_is_deterministic_across_threads():
    if not module.native.kernel_available():
        pytest.skip(f"kernel unavailable: {module.native.unavailable_reason()}")
    scores = _smooth_scores(4, 9, 64, 64).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = upsampled_argmax(scores, (150, 150))
        torch.set_num_threads(2)
        two = upsampled_argmax(scores, (150, 150))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_every_cell_disagreeing(exact_path):
    # a checkerboard of winners: no 2x2 cell agrees, every output pixel is interpolated
    b, k, h, w = 1, 3, 12, 10
    scores = torch.zeros(b, k, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    scores[0, 0] = ((yy + xx) % 2) * 5.0
    scores[0, 1] = ((yy + xx + 1) % 2) * 5.0
    scores[0, 2] = 2.4 + 0.01 * xx
    _assert_equal_but_near_ties(scores, (37, 29))


def test_ties_go_to_the_lowest_class_as_argmax(exact_path):
    scores = torch.zeros(1, 4, 6, 6)
    scores[:, 1:3] = 1.0          # classes 1 and 2 tie everywhere
    out = upsampled_argmax(scores, (15, 13))
    assert torch.all(out == 1)


def test_noisy_scores_take_the_plain_path(monkeypatch, torch_only):
    smooth = F.interpolate(torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0)),
                           size=(96, 96), mode="bilinear", align_corners=False)  # large regions
    noisy = torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(0))
    calls = []
    real = F.interpolate
    monkeypatch.setattr(module.F, "interpolate", lambda *a, **k: calls.append(1) or real(*a, **k))
    _assert_equal_but_near_ties(smooth, (200, 190))
    assert len(calls) == 1                    # the reference only: smooth scores skip it
    _assert_equal_but_near_ties(noisy, (100, 90))
    assert len(calls) == 3                    # reference + fallback


def test_downsampling_and_many_classes_take_the_plain_path(exact_path):
    scores = _smooth_scores(1, 5, 40, 40)
    torch.testing.assert_close(upsampled_argmax(scores, (20, 50)), _plain(scores, (20, 50))[1])
    many = _smooth_scores(1, 140, 8, 8)
    torch.testing.assert_close(upsampled_argmax(many, (20, 20)), _plain(many, (20, 20))[1])


def test_predictor_labels_equal_the_full_map_path():
    from transunet_app.checkpoint import model_from_checkpoint
    from transunet_app.inference.predictor import SlicePredictor

    from .conftest import tiny_checkpoint_dict

    ckpt = tiny_checkpoint_dict()
    pred = SlicePredictor(model_from_checkpoint(ckpt), ckpt["preprocessing"],
                          torch.device("cpu"), "fp32", batch_size=4)
    slab = np.random.default_rng(1).normal(40, 150, (3, 70, 58)).astype(np.float32)
    fast = pred.predict(slab).labels                           # labels only: the new path
    scores, _ = pred.scores(slab)
    full = scores.argmax(1).to(torch.uint8).numpy()
    assert fast.shape == full.shape == (3, 70, 58)
    assert (fast != full).mean() < 1e-4
    # with probabilities the full map is still computed, with the same labels
    np.testing.assert_array_equal(pred.predict(slab, probabilities=True).labels, full)
