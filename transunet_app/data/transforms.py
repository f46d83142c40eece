"""Tensor augmentation and resizing of 2D training slices.

The official TransUNet ``RandomGenerator`` draws, per slice: with p = 0.5 a random rot90 and a
flip, else with p = 0.5 a rotation by an angle in [-20, 20) degrees (scipy, nearest
neighbour), then resizes to the network size with a cubic scipy ``zoom``. Here the same draws
run on tensors: rot90/flip are exact index operations; rotation and resize are ONE resampling
with ``grid_sample`` (image bilinear or bicubic, labels nearest, zeros outside, corners aligned
as scipy's ``zoom``), so a rotated slice is interpolated once, not twice. Angles are uniform
in [-max_angle, max_angle] (continuous, symmetric).

Randomness comes only from the ``torch.Generator`` passed in; :func:`sample_generator` derives
it from (seed, epoch, sample index), so a sample's augmentation does not depend on worker
count, on the order samples are loaded, or on whether the run was resumed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) through NumPy's SeedSequence hashing."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    value = (int(words[0]) << 31) ^ int(words[1])
    return torch.Generator().manual_seed(value)


def _theta(angle_deg: float, in_hw: tuple[int, int]) -> torch.Tensor:
    """Affine (1, 2, 3) for ``affine_grid`` (align_corners=True): output -> input coords.

    Rotation is about the image centre in pixel units (so non-square slices are not sheared);
    the scaling from the output grid to the input grid is implicit in normalised coordinates.
    """
    h, w = in_hw
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)
    sx, sy = max(w - 1, 1) / 2.0, max(h - 1, 1) / 2.0
    # normalised -> pixel offsets (diag(sx, sy)), rotate, pixel -> normalised (diag(1/sx, 1/sy))
    theta = torch.tensor([[cos, -sin * sy / sx, 0.0],
                          [sin * sx / sy, cos, 0.0]], dtype=torch.float32)
    return theta.unsqueeze(0)


def resample(image: torch.Tensor, label: torch.Tensor | None, size: int | tuple[int, int], angle_deg: float = 0.0,
             mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate about the centre and resize in one interpolation.

    Args:
        image: (H, W) float.
        label: (H, W) int64 class ids, or None.
        size: output (h, w) or an int for a square.
        angle_deg: rotation in degrees (positive = counter-clockwise as displayed).
        mode: image interpolation, ``bilinear`` or ``bicubic`` (bicubic is clamped to the input
            range, as overshoot would leave the [0, 1] intensity range).

    Returns:
        image (1, h, w) float32, label (h, w) int64 (or None). Pixels rotated in from outside
        are 0 (background for labels).
    """
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    in_hw = tuple(image.shape[-2:])
    img = image.reshape(1, 1, *in_hw).float()
    if angle_deg == 0.0 and in_hw == out_hw:
        return img[0], (label.clone() if label is not None else None)
    grid = F.affine_grid(_theta(angle_deg, in_hw), [1, 1, *out_hw], align_corners=True)
    out = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=True)
    if mode == "bicubic":
        out = out.clamp(float(img.min()), float(img.max()))
    lab = None
    if label is not None:
        lab = F.grid_sample(label.reshape(1, 1, *in_hw).float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=True)[0, 0].round().long()
    return out[0], lab


class SliceAugment:
    """The official random rot90/flip/rotation followed by a resize, on tensors.

    Args:
        img_size: output size (square), pixels.
        enabled: False = resize only (validation, or no augmentation).
        p_rot_flip: probability of rot90 (k uniform in 0..3) + flip (axis uniform in {0, 1}).
        p_rotate: probability of a rotation when no rot90/flip was drawn.
        max_angle: rotation angles uniform in [-max_angle, max_angle] degrees.
        interpolation: image interpolation for resampling (``bilinear`` / ``bicubic``).

    Call with ``(image (H, W) float, label (H, W) int64, generator)`` ->
    ``(image (1, S, S) float32, label (S, S) int64)``.
    """

    def __init__(self, img_size: int, enabled: bool = True, p_rot_flip: float = 0.5, p_rotate: float = 0.5,
                 max_angle: float = 20.0, interpolation: str = "bilinear"):
        self.img_size = int(img_size)
        self.enabled = bool(enabled)
        self.p_rot_flip = float(p_rot_flip)
        self.p_rotate = float(p_rotate)
        self.max_angle = float(max_angle)
        self.interpolation = interpolation

    def draw(self, generator: torch.Generator) -> dict:
        """The random parameters of one sample: ``{"rot90": k, "flip": axis or None, "angle": deg}``."""
        # Always draw the same number of values so that one decision does not shift the others.
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        params = {"rot90": 0, "flip": None, "angle": 0.0}
        if not self.enabled:
            return params
        if u[0] < self.p_rot_flip:
            params["rot90"] = min(int(u[1] * 4), 3)
            params["flip"] = 0 if u[2] < 0.5 else 1
        elif u[1] < self.p_rotate:
            params["angle"] = (2.0 * u[3] - 1.0) * self.max_angle
        return params

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        params = self.draw(generator)
        if params["rot90"]:
            image = torch.rot90(image, params["rot90"], dims=(0, 1))
            label = torch.rot90(label, params["rot90"], dims=(0, 1))
        if params["flip"] is not None:
            image = torch.flip(image, dims=(params["flip"],))
            label = torch.flip(label, dims=(params["flip"],))
        return resample(image.contiguous(), label.contiguous(), self.img_size, params["angle"], self.interpolation)


def resize_batch(images: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, C, H, W) images (corners aligned, like scipy ``zoom``); no-op at equal size."""
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == out_hw:
        return images
    out = F.interpolate(images, size=out_hw, mode=mode, align_corners=True)
    if mode == "bicubic":
        out = out.clamp(float(images.min()), float(images.max()))
    return out
