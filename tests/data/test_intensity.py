"""The one HU window: numpy (training preparation) and torch (inference) give identical values."""
import numpy as np
import pytest
import torch

from transunet_app.data.intensity import HU_WINDOW, window_to_unit
from transunet_app.errors import UserError

WINDOWS = [HU_WINDOW, (-160.0, 240.0), (-1000.0, 1000.0), (-125.3, 275.7), (0.0, 3.0)]


def _hu_values(window, dtype):
    lo, hi = window
    rng = np.random.default_rng(0)
    edges = [lo, hi, np.nextafter(np.float32(lo), -np.inf), np.nextafter(np.float32(lo), np.inf),
             np.nextafter(np.float32(hi), -np.inf), np.nextafter(np.float32(hi), np.inf),
             -3024, -1024, 0, 3071, lo - 1, hi + 1, (lo + hi) / 2]
    values = np.concatenate([edges, rng.uniform(lo - 50, hi + 50, 20000), np.arange(-1100, 1500)])
    return values.astype(dtype)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32])
def test_numpy_and_torch_give_identical_values(window, dtype):
    hu = _hu_values(window, dtype)
    a = window_to_unit(hu, window)
    b = window_to_unit(torch.from_numpy(hu), window)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float32
    np.testing.assert_array_equal(a, b.numpy())  # bit-identical, not just close
    assert a.min() == 0.0 and a.max() == 1.0
    lo, hi = window
    expected = (np.clip(hu.astype(np.float64), lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(a, expected, rtol=0, atol=1e-6)


def test_the_inference_arithmetic_is_unchanged():
    """The predictor's former inline window, kept bit for bit (labels on real CT depend on it)."""
    lo, hi = HU_WINDOW
    hu = torch.from_numpy(_hu_values(HU_WINDOW, np.float32))
    before = hu.clamp(lo, hi).sub_(lo).mul_(1.0 / (hi - lo))
    assert torch.equal(window_to_unit(hu, HU_WINDOW), before)


def test_inputs_are_never_modified_and_shape_is_kept():
    hu = np.array([[-2000.0, 0.0], [100.0, 5000.0]], dtype=np.float32)
    t = torch.from_numpy(hu)  # shares memory with hu, as the predictor's slabs do
    keep = hu.copy()
    window_to_unit(hu)
    window_to_unit(t)
    np.testing.assert_array_equal(hu, keep)
    assert window_to_unit(hu).shape == (2, 2) and window_to_unit(t).shape == (2, 2)
    assert window_to_unit([-125, 275]).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("window", [(275.0, -125.0), (10.0, 10.0), ("a", 1), (1.0,)])
def test_bad_windows_are_user_errors(window):
    with pytest.raises(UserError, match="HU window"):
        window_to_unit(np.zeros(3), window)
