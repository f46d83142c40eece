"""Tensor augmentation (official RandomGenerator draws), resumable sampling, RNG state."""
from __future__ import annotations

import random

import numpy as np
import torch

from transunet_app.data.transforms import SliceAugment, resample, resize_batch, sample_generator
from transunet_app.engine import rng
from transunet_app.engine.data import ResumableSampler


def _coded(h=24, w=24):
    """An image that encodes the label: image = label / 10, so alignment can be checked."""
    label = torch.zeros(h, w, dtype=torch.int64)
    label[h // 8: h // 2, w // 8: w // 2] = 1
    label[h // 2 + 2: h - 2, 2: w // 3] = 2
    label[h // 2: h - 3, w // 2: w - 2] = 3
    return label.float() / 10, label


def test_same_seed_epoch_index_same_augmentation_and_different_otherwise():
    aug = SliceAugment(16)
    image, label = _coded()
    a = aug(image, label, sample_generator(1, 2, 3))
    b = aug(image, label, sample_generator(1, 2, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    draws = {str(aug.draw(sample_generator(1, e, i))) for e in range(4) for i in range(8)}
    assert len(draws) > 8


def test_branch_frequencies_follow_the_official_generator():
    aug = SliceAugment(16)
    n = 4000
    kinds = {"rot_flip": 0, "rotate": 0, "none": 0}
    angles = []
    for i in range(n):
        p = aug.draw(sample_generator(0, 0, i))
        if p["flip"] is not None:
            kinds["rot_flip"] += 1
        elif p["angle"]:
            kinds["rotate"] += 1
            angles.append(p["angle"])
        else:
            kinds["none"] += 1
    assert abs(kinds["rot_flip"] / n - 0.5) < 0.03
    assert abs(kinds["rotate"] / n - 0.25) < 0.03
    assert min(angles) >= -20 and max(angles) <= 20 and min(angles) < -15 and max(angles) > 15


def test_output_shapes_types_and_label_alignment():
    image, label = _coded(60, 48)
    aug = SliceAugment(32, interpolation="bicubic")
    for i in range(20):
        img, lab = aug(image, label, sample_generator(5, 0, i))
        assert img.shape == (1, 32, 32) and img.dtype == torch.float32
        assert lab.shape == (32, 32) and lab.dtype == torch.int64
        assert set(lab.unique().tolist()) <= {0, 1, 2, 3}
        assert 0.0 <= float(img.min()) and float(img.max()) <= 0.3 + 1e-6
        # image and labels were moved together: labelled interiors carry their own intensity
        for k in (1, 2, 3):
            inside = lab == k
            assert inside.sum() > 20
            assert float((img[0][inside] - k / 10).abs().median()) < 0.01


def test_rotation_by_90_degrees_matches_rot90():
    image, label = _coded(25, 25)
    img, lab = resample(image, label, 25, angle_deg=90.0)
    turned = torch.rot90(label, 1, dims=(0, 1))
    turned_back = torch.rot90(label, -1, dims=(0, 1))
    assert torch.equal(lab, turned) or torch.equal(lab, turned_back)
    assert torch.allclose(img[0], lab.float() / 10, atol=1e-5)


def test_resize_without_rotation_matches_interpolate_and_is_identity_at_size():
    x = torch.rand(2, 1, 20, 28)
    assert resize_batch(x, (20, 28)) is x
    img, lab = resample(x[0, 0], None, 12)
    ref = torch.nn.functional.interpolate(x[:1], size=(12, 12), mode="bilinear", align_corners=True)[0]
    assert lab is None and torch.allclose(img, ref, atol=1e-5)


def test_sampler_resumes_mid_epoch_and_shards_ranks():
    full = list(ResumableSampler(10, seed=7).__iter__())
    s = ResumableSampler(10, seed=7)
    s.set_position(0, 4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_position(1)
    assert [i for _, i in s] != [i for _, i in full] and all(e == 1 for e, _ in s)
    r0, r1 = ResumableSampler(10, 2, 0, seed=7), ResumableSampler(10, 2, 1, seed=7)
    got = sorted(i for _, i in [*r0, *r1])
    assert got == list(range(10)) and r0.per_epoch == 5


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = rng.capture()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(7), random.random()
    rng.restore(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_resampled_labels_stay_valid_classes():
    # A label map survives resampling as integers with no new classes, even for odd sizes.
    _, label = _coded(17, 13)
    _, lab = resample(label.float(), label, 9, angle_deg=13.0)
    assert set(lab.unique().tolist()) <= {0, 1, 2, 3}
