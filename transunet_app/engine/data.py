"""Training and validation data for the trainer: resumable sampling and augmented slices.

The sampler yields ``(epoch, index)`` pairs, so each sample's augmentation is drawn from a
generator seeded by (seed, epoch, index) (see :func:`transunet_app.data.transforms.sample_generator`),
and the order of an epoch is ``DistributedSampler``'s permutation seeded by (seed, epoch). A run
resumed in the middle of an epoch skips the batches already done and sees exactly the batches
an uninterrupted run would have seen.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from ..data.transforms import SliceAugment, sample_generator


class AugmentedSlices(Dataset):
    """Wrap a slice dataset; items are addressed as ``(epoch, index)``.

    Returns dicts ``{"image": (1, S, S) float32, "label": (S, S) int64, "index": int}``.
    """

    def __init__(self, slices: Dataset, augment: SliceAugment, seed: int):
        self.slices = slices
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, key) -> dict:
        epoch, index = key
        sample = self.slices[index]
        with _one_thread():
            image, label = self.augment(sample["image"], sample["label"], sample_generator(self.seed, epoch, index))
        return {"image": image, "label": label, "index": index}


@contextmanager
def _one_thread():
    # Per-sample resampling is far too small to split over OpenMP threads: in the main process
    # (num_workers=0) two threads made it ~10x slower on a busy CPU. Workers already run with 1.
    n = torch.get_num_threads()
    if n == 1 or get_worker_info() is not None:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class ResumableSampler(Sampler):
    """``DistributedSampler`` order for one rank, as ``(epoch, index)``, from any position.

    Args:
        length: number of samples.
        num_replicas, rank: DDP world size and this process's rank (1, 0 in a single process).
        seed: shuffling seed; epoch ``e`` uses ``DistributedSampler``'s permutation of (seed, e).
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self._inner = DistributedSampler(range(length), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                         seed=seed, drop_last=False)
        self.epoch = 0
        self.skip = 0

    @property
    def per_epoch(self) -> int:
        """Samples this rank sees per epoch (padded to equal counts over ranks)."""
        return len(self._inner)

    def set_position(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip = int(skip_samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self._inner.set_epoch(self.epoch)
        for i, index in enumerate(self._inner):
            if i >= self.skip:
                yield (self.epoch, int(index))

    def __len__(self) -> int:
        return max(self.per_epoch - self.skip, 0)


def make_loader(dataset: AugmentedSlices, sampler: ResumableSampler, batch_size: int, num_workers: int,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader that never touches the global RNG.

    DataLoader iterators draw a worker base seed from their ``generator`` (the global torch RNG
    when none is given); a private generator keeps that draw from shifting dropout's random
    stream, which would break exact resume.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, generator=torch.Generator(),
                      persistent_workers=False)


def slice_volumes(slices) -> list[dict]:
    """Stack the training slices of a :class:`~transunet_app.data.datasets.SynapseSlices` per case.

    Returns a list of ``{"case", "image" (D, H, W) float32, "label" (D, H, W) int64}`` with the
    slices of each case in slice-index order (cases with slices of different sizes are
    skipped: they cannot form a volume). When the dataset recorded the case's spacing and the
    slices are consecutive (so the recorded slice distance holds between them), the dict also
    has ``spacing`` (3,) mm and ``spacing_known`` True (validation's HD95 is then in mm).
    """
    recorded = (getattr(slices, "info", None) or {}).get("cases") or {}
    by_case: dict[str, list[int]] = {}
    for i, case in enumerate(slices.cases):
        by_case.setdefault(case, []).append(i)
    out = []
    for case, idx in by_case.items():
        idx.sort(key=lambda i: slices.slice_index[i])
        items = [slices[i] for i in idx]
        shapes = {tuple(it["image"].shape) for it in items}
        if len(shapes) != 1:
            continue
        vol = {"case": case, "image": torch.stack([it["image"] for it in items]),
               "label": torch.stack([it["label"] for it in items])}
        index = [slices.slice_index[i] for i in idx]
        spacing = (recorded.get(case) or {}).get("spacing")
        if spacing is not None and index == list(range(index[0], index[0] + len(index))):
            vol.update(spacing=torch.tensor([float(v) for v in spacing], dtype=torch.float64), spacing_known=True)
        out.append(vol)
    return out
