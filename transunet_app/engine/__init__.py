"""Training engine: loop (AMP, DDP, exact resume), losses, schedules, validation, run logs.

Entry point: :func:`transunet_app.engine.trainer.train` (``train(config, output_dir,
resume=False) -> best checkpoint path``), re-exported here lazily so that importing the package
stays cheap.
"""
from __future__ import annotations


def train(config, output_dir, resume: bool = False, overrides=()):
    """See :func:`transunet_app.engine.trainer.train`."""
    from .trainer import train as _train

    return _train(config, output_dir, resume=resume, overrides=overrides)


__all__ = ["train"]
