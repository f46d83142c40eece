"""``transunet train --config FILE [--output DIR] [--resume] [key=value ...]``.

Single process: ``transunet train --config configs/tiny.yaml data.root=DIR``. Several devices:
``torchrun --nproc_per_node N -m transunet_app train --config ...`` (one process per device,
rank 0 writes). ``--resume`` continues the run in ``--output`` from its last checkpoint; the
config then defaults to the one saved in the run folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Train a segmentation model from a YAML config (AMP, multi-GPU via torchrun, exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML config (configs/*.yaml); optional with --resume (the run's config.yaml)")
    parser.add_argument("--output", metavar="DIR",
                        help="run folder (default runs/<config name>); must not hold another run unless --resume")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from checkpoints/last.pt")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.batch_size=8 data.root=/data/synapse")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import UserError

    if args.config is None:
        if not (args.resume and args.output):
            raise UserError("--config FILE is required (or --resume --output DIR to continue a run)")
        config_path = Path(args.output) / "config.yaml"
        if not config_path.exists():
            raise UserError(f"{args.output}: no config.yaml to resume from; give --config")
    else:
        config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    output = Path(args.output) if args.output else Path("runs") / config_path.stem
    from ..engine.trainer import train

    best = train(config, output, resume=args.resume)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    return 0
