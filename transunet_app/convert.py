"""Official TransUNet training checkpoints -> self-describing transunet_app checkpoints.

The official trainer saves a bare ``state_dict`` (``torch.save(model.state_dict())``), which
says nothing about classes or preprocessing. :func:`convert_official` loads it with
``load_pretrained`` (safe, ``weights_only``; every tensor must fit) and writes our checkpoint
with the class names of a labels YAML and the official Synapse preprocessing (HU window
[-125, 275] scaled to [0, 1], 1-channel axial slices of ``img_size`` x ``img_size`` in the
canonical frame of ``prepare synapse``), so that ``segment`` needs nothing but the file.
``transunet convert`` is its command line.
"""
from __future__ import annotations

from pathlib import Path


def convert_official(official: str | Path, output: str | Path, model_name: str = "R50-ViT-B_16",
                     img_size: int = 224, n_skip: int | None = None, labels: str | Path | None = None,
                     overwrite: bool = False):
    """Convert one official TransUNet ``.pth`` (plain or ``nn.DataParallel`` state dict).

    Args:
        official: the official checkpoint, e.g. ``epoch_149.pth``.
        output: the checkpoint to write (atomically; never replaced without ``overwrite``).
        model_name: registered model the official weights belong to.
        img_size: training slice size in pixels (square).
        n_skip: skip connections used (default: the model's own default).
        labels: labels YAML giving the class names (default: the Synapse 8 organs).
        overwrite: replace an existing ``output``.

    Returns:
        The :class:`~transunet_app.models.pretrained.LoadReport` of the loaded weights.

    Raises:
        UserError: ``output`` exists, the file is not an official TransUNet checkpoint, or its
            tensors do not fit the model.
    """
    from .checkpoint import make_checkpoint, save_checkpoint
    from .data.labels import load_label_spec
    from .errors import UserError
    from .models import build_model, load_pretrained

    if Path(output).exists() and not overwrite:
        raise UserError(f"{output}: exists (use --overwrite)")
    classes = load_label_spec(labels)["classes"]
    names = [classes[i] for i in range(len(classes))]
    overrides = {} if n_skip is None else {"n_skip": n_skip}
    model = build_model(model_name, len(names), img_size=img_size, **overrides)
    report = load_pretrained(model, official)
    if report.format != "official TransUNet":
        raise UserError(f"{official}: this is a {report.format} file, not an official "
                        f"TransUNet training checkpoint")
    ckpt = make_checkpoint(model, names, preprocessing={
        "img_size": [img_size, img_size], "source": "official TransUNet checkpoint"})
    save_checkpoint(output, ckpt, overwrite=overwrite)
    return report
