"""Slice-wise prediction: HU slabs in, per-class scores at the slices' own size out.

The pipeline per batch of axial slices (all on tensors, no per-slice Python loops):

1. HU -> clip to the checkpoint's window -> scale to [0, 1] (``window_to_unit``, as training),
2. resize (B, 1, H, W) -> (B, 1, h, w) = ``img_size`` with bilinear interpolation,
3. model forward in the chosen precision, channels_last,
4. logits (not labels) resized back to (H, W) bilinearly, so class boundaries are placed at
   the original resolution instead of being blown up from the model grid,
5. argmax per batch -> uint8 labels. When only labels are wanted, 4 and 5 are one step that
   interpolates only around boundaries (:func:`.upsampled_argmax.upsampled_argmax`: the same
   labels without the full-size float map).

With TTA, the softmax probabilities of the flipped variants are averaged on the model grid and
the average is resized back instead of the logits.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.intensity import HU_WINDOW, window_to_unit
from ..errors import CheckpointError
from .optimize import prepare_for_inference
from .precision import torch_dtype
from .streams import default_streams, run_in_waves
from .upsampled_argmax import upsampled_argmax

#: Resize geometry: pixel corners aligned, the grid scipy's ``zoom`` (used by the official
#: TransUNet ``test_single_volume``) maps between, so a checkpoint sees slices as in training.
ALIGN_CORNERS = True
#: Flip variants for test-time augmentation: identity, left-right (W), anterior-posterior (H).
#: A left-right flip mirrors the patient, so the probabilities of paired classes ("left
#: kidney" / "right kidney") are swapped back after it (see :func:`lateral_swap`).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))
#: Normalisations this predictor implements (checkpoint ``preprocessing["normalization"]``).
NORMALIZATIONS = ("window_to_unit",)


def lateral_swap(class_names) -> list[int]:
    """Channel order that undoes a left-right mirror: "left X" <-> "right X", others unchanged."""
    names = [str(n).lower() for n in class_names]
    order = list(range(len(names)))
    for i, n in enumerate(names):
        for a, b in (("left", "right"), ("right", "left")):
            if a in n.split():
                twin = " ".join(b if w == a else w for w in n.split())
                if twin in names:
                    order[i] = names.index(twin)
    return order


@dataclass
class ConfidenceAccumulator:
    """Running per-class sums for the confidence of a whole volume.

    Attributes:
        prob_sum: (K,) sum over voxels labelled k of the probability of class k (output grid).
        voxels: (K,) voxels labelled k (output grid).
        agree_sum: (K,) with TTA: model-grid pixels labelled k on which every flip variant
            chose k as well.
        agree_count: (K,) with TTA: model-grid pixels labelled k.
    """

    num_classes: int
    prob_sum: np.ndarray = field(init=False)
    voxels: np.ndarray = field(init=False)
    agree_sum: np.ndarray = field(init=False)
    agree_count: np.ndarray = field(init=False)

    def __post_init__(self):
        self._lock = threading.Lock()
        k = self.num_classes
        self.prob_sum = np.zeros(k, np.float64)
        self.voxels = np.zeros(k, np.int64)
        self.agree_sum = np.zeros(k, np.int64)
        self.agree_count = np.zeros(k, np.int64)

    def add(self, labels: torch.Tensor, prob_of_label: torch.Tensor) -> None:
        """labels (B, H, W) int64; prob_of_label (B, H, W) float: probability of that label."""
        k = self.num_classes
        flat = labels.reshape(-1)
        voxels = torch.bincount(flat, minlength=k).numpy()[:k]
        prob_sum = torch.bincount(flat, weights=prob_of_label.reshape(-1).double(),
                                  minlength=k).numpy()[:k]
        with self._lock:  # batches finish on several streams at once
            self.voxels += voxels
            self.prob_sum += prob_sum

    def add_agreement(self, mean_labels: torch.Tensor, all_agree: torch.Tensor) -> None:
        k = self.num_classes
        flat = mean_labels.reshape(-1)
        count = torch.bincount(flat, minlength=k).numpy()[:k]
        agree = torch.bincount(flat[all_agree.reshape(-1)], minlength=k).numpy()[:k]
        with self._lock:
            self.agree_count += count
            self.agree_sum += agree

    def summary(self, class_names: Sequence[str], tta: bool) -> dict[str, dict]:
        """Per-class ``{"confidence", "confidence_source", "tta_agreement"}`` (None if absent)."""
        out = {}
        for k, name in enumerate(class_names):
            if k == 0:
                continue
            n = int(self.voxels[k])
            out[name] = {
                "confidence": float(self.prob_sum[k] / n) if n else None,
                "confidence_source": ("mean TTA-averaged softmax probability of the label"
                                      if tta else "mean softmax probability of the label"),
                "tta_agreement": (float(self.agree_sum[k] / self.agree_count[k])
                                  if tta and self.agree_count[k] else None),
            }
        return out


@dataclass
class BatchResult:
    """One batch of slices at their original in-plane size.

    Attributes:
        labels: (B, H, W) uint8 class ids.
        probabilities: (B, H, W, K) uint8 probabilities x 255, or None.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None


class SlicePredictor:
    """Run a checkpoint's model on batches of axial slices in the canonical frame.

    Args:
        model: the trained model (from ``model_from_checkpoint``); prepared here (folded,
            channels_last, cast) on a copy only if ``copy_model``.
        preprocessing: the checkpoint's ``preprocessing`` dict (``hu_window``, ``img_size``,
            ``normalization``).
        device: torch device.
        precision: resolved "fp32", "bf16" or "fp16".
        batch_size: slices per forward pass.
        streams: batches computed side by side (:mod:`.streams`); None: 2 on a CPU with at
            least 2 threads (each with half of torch's threads), else 1.
        tta: average the flip variants of :data:`TTA_FLIPS`.
        class_names: names by class id; lets TTA swap left/right organs after a mirror flip.
        source: checkpoint path for error messages.

    Raises:
        CheckpointError: preprocessing the predictor does not implement.
    """

    def __init__(self, model, preprocessing: dict, device: torch.device, precision: str,
                 batch_size: int = 8, tta: bool = False, source: str = "checkpoint",
                 copy_model: bool = False, class_names=None, streams: int | None = None):
        norm = preprocessing.get("normalization", "window_to_unit")
        if norm not in NORMALIZATIONS:
            raise CheckpointError(f"{source}: preprocessing normalization {norm!r} is not "
                                  f"supported (known: {', '.join(NORMALIZATIONS)})")
        lo, hi = (float(v) for v in preprocessing.get("hu_window", HU_WINDOW))
        if not hi > lo:
            raise CheckpointError(f"{source}: empty HU window [{lo}, {hi}]")
        size = preprocessing.get("img_size", 224)
        size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        self.hu_window = (lo, hi)
        self.img_size = size
        self.device = device
        self.precision = precision
        self.dtype = torch_dtype(precision)
        self.batch_size = max(1, int(batch_size))
        self.streams = None if streams is None else max(1, int(streams))
        self.tta = bool(tta)
        self.model = prepare_for_inference(model, device, precision, copy_model=copy_model)
        if device.type == "cpu":
            from ..kernels.upsampled_argmax import kernel_available

            kernel_available()  # its one-time compile while the model loads, not mid-run
        # float32 when the model's stem runs in float32 (bf16 would round the [0, 1] input)
        self.input_dtype = getattr(self.model, "input_dtype", self.dtype)
        self.num_classes = int(self.model.num_classes)
        self.lr_swap = (lateral_swap(class_names) if class_names is not None
                        else list(range(self.num_classes)))

    # ------------------------------------------------------------------ one batch

    def normalize(self, slab: np.ndarray) -> torch.Tensor:
        """(B, H, W) HU (any real dtype) -> (B, 1, h, w) model input on the device: the HU
        window of training (:func:`~transunet_app.data.intensity.window_to_unit`), resized."""
        x = torch.from_numpy(np.ascontiguousarray(slab)).to(self.device, torch.float32)
        x = window_to_unit(x, self.hu_window).unsqueeze(1)
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=ALIGN_CORNERS)
        return x.to(self.input_dtype).contiguous(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()

    @torch.inference_mode()
    def scores(self, slab: np.ndarray, agreement: ConfidenceAccumulator | None = None) -> tuple[torch.Tensor, bool]:
        """Class scores at the slices' own size.

        Args:
            slab: (B, H, W) HU.
            agreement: with TTA, receives the flip agreement on the model grid.

        Returns:
            ``(scores, are_probabilities)``: (B, K, H, W) float32 logits (no TTA) or averaged
            softmax probabilities (TTA).
        """
        s, is_prob = self.model_grid_scores(slab, agreement)
        out_size = tuple(slab.shape[-2:])
        if tuple(s.shape[-2:]) != out_size:
            s = F.interpolate(s, size=out_size, mode="bilinear", align_corners=ALIGN_CORNERS)
        return s, is_prob

    @torch.inference_mode()
    def model_grid_scores(self, slab: np.ndarray,
                          agreement: ConfidenceAccumulator | None = None) -> tuple[torch.Tensor, bool]:
        """Like :meth:`scores`, on the model's grid: (B, K, h, w) = ``img_size``."""
        x = self.normalize(slab)
        if not self.tta:
            s = self._forward(x)
            is_prob = False
        else:
            s = None
            votes = []
            for dims in TTA_FLIPS:
                xi = torch.flip(x, dims) if dims else x
                p = self._forward(xi).softmax(dim=1)
                p = torch.flip(p, dims) if dims else p
                if 3 in dims and self.lr_swap != list(range(self.num_classes)):
                    p = p[:, self.lr_swap]
                votes.append(p.argmax(dim=1))
                s = p if s is None else s.add_(p)
            s.mul_(1.0 / len(TTA_FLIPS))
            if agreement is not None:
                mean_lab = s.argmax(dim=1)
                agree = torch.stack([v == mean_lab for v in votes]).all(dim=0)
                agreement.add_agreement(mean_lab.cpu(), agree.cpu())
            is_prob = True
        return s, is_prob

    @torch.inference_mode()
    def predict(self, slab: np.ndarray, confidence: ConfidenceAccumulator | None = None,
                probabilities: bool = False) -> BatchResult:
        """Labels (and optionally probabilities) for a batch of slices.

        Args:
            slab: (B, H, W) HU in the canonical frame.
            confidence: accumulates per-class confidence when given.
            probabilities: also return (B, H, W, K) uint8 probabilities x 255.
        """
        if confidence is None and not probabilities:
            # labels only: boundaries interpolated, the rest copied (same labels, no 512x512
            # float map; see upsampled_argmax)
            s, _ = self.model_grid_scores(slab)
            labels = upsampled_argmax(s, tuple(slab.shape[-2:]))
            return BatchResult(labels.cpu().numpy(), None)
        s, is_prob = self.scores(slab, confidence if self.tta else None)
        best, labels = s.max(dim=1)
        probs = None
        if confidence is not None or probabilities:
            if is_prob:
                p_best = best
                p = s if probabilities else None
            else:
                # softmax only where needed: p(best) = 1 / sum exp(l - l_best).
                p = torch.softmax(s, dim=1) if probabilities else None
                p_best = (p.gather(1, labels.unsqueeze(1)).squeeze(1) if p is not None
                          else torch.exp(s - best.unsqueeze(1)).sum(dim=1).reciprocal_())
            if confidence is not None:
                confidence.add(labels.cpu(), p_best.cpu())
            if probabilities:
                probs = (p.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
                         .permute(0, 2, 3, 1).cpu().numpy())
        return BatchResult(labels.to(torch.uint8).cpu().numpy(), probs)

    # ------------------------------------------------------------------ a whole volume

    def segment_canonical(self, volume: np.ndarray, probabilities: bool = False,
                          confidence: ConfidenceAccumulator | None = None,
                          progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Label every axial slice of a canonical (D, H, W) HU volume.

        Memory stays bounded: only ``streams x batch_size`` slices of float scores exist at a
        time; results go straight into a uint8 label volume (and, if asked, a uint8
        probability volume (D, H, W, K)).

        Args:
            volume: (D, H, W) HU in the canonical frame.
            probabilities: also fill a (D, H, W, K) uint8 probability volume (x 255).
            confidence: accumulates per-class confidence when given.
            progress: called with the number of slices done after each batch.

        Returns:
            ``(labels, probabilities_or_None)``.
        """
        labels = np.empty(volume.shape, dtype=np.uint8)
        probs = (np.empty(volume.shape + (self.num_classes,), dtype=np.uint8)
                 if probabilities else None)

        def batch(d0: int, d1: int) -> None:
            res = self.predict(volume[d0:d1], confidence, probabilities)
            labels[d0:d1] = res.labels
            if probs is not None:
                probs[d0:d1] = res.probabilities

        def done(rng, _) -> None:
            if progress is not None:
                progress(rng[1] - rng[0])

        streams = self.streams or default_streams(self.device)
        run_in_waves(batch, volume.shape[0], self.batch_size, streams, done)
        return labels, probs
