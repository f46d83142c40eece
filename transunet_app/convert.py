"""Turn an official TransUNet checkpoint into a self-describing transunet_app checkpoint.

    python tools/convert_official.py epoch_149.pth -o transunet_synapse.pt \
        [--model R50-ViT-B_16] [--img-size 224] [--labels datasets/synapse/labels.yaml]

The official trainer saves a bare ``state_dict`` (``torch.save(model.state_dict())``), which
says nothing about classes or preprocessing. This tool loads it with ``load_pretrained``
(safe, ``weights_only``; every tensor must fit), and writes our checkpoint with the class names
of the labels YAML and the official Synapse preprocessing (HU window [-125, 275] scaled to
[0, 1], 1-channel 224x224 axial slices in the canonical frame of ``prepare synapse``), so that
``segment`` needs nothing but the file.
"""
from __future__ import annotations

import argparse
import sys

from transunet_app.checkpoint import make_checkpoint, save_checkpoint
from transunet_app.data.labels import load_label_spec
from transunet_app.errors import UserError
from transunet_app.models import build_model, load_pretrained


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", help="official TransUNet .pth (state dict, DataParallel ok)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--model", default="R50-ViT-B_16")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--n-skip", type=int, default=None)
    ap.add_argument("--labels", default=None, help="labels YAML (default: Synapse 8 organs)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        import os

        if os.path.exists(args.output) and not args.overwrite:
            raise UserError(f"{args.output}: exists (use --overwrite)")
        classes = load_label_spec(args.labels)["classes"]
        names = [classes[i] for i in range(len(classes))]
        overrides = {} if args.n_skip is None else {"n_skip": args.n_skip}
        model = build_model(args.model, len(names), img_size=args.img_size, **overrides)
        report = load_pretrained(model, args.official)
        if report.format != "official TransUNet":
            raise UserError(f"{args.official}: this is a {report.format} file, not an official "
                            f"TransUNet training checkpoint")
        ckpt = make_checkpoint(model, names, preprocessing={
            "img_size": [args.img_size, args.img_size], "source": "official TransUNet checkpoint"})
        save_checkpoint(args.output, ckpt)
    except UserError as exc:
        print(f"convert_official: error: {exc}", file=sys.stderr)
        return 2
    print(f"{report.summary()}\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
