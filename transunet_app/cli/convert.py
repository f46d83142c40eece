"""``transunet convert``: an official TransUNet checkpoint becomes one ``segment`` can use."""
from __future__ import annotations

HELP = "convert an official TransUNet training checkpoint (.pth) into a self-describing checkpoint"


def add_arguments(parser) -> None:
    parser.add_argument("official", help="official TransUNet .pth (state dict, DataParallel ok)")
    parser.add_argument("-o", "--output", required=True, metavar="model.pt",
                        help="checkpoint to write")
    parser.add_argument("--model", default="R50-ViT-B_16",
                        help="registered model the weights belong to (default R50-ViT-B_16)")
    parser.add_argument("--img-size", type=int, default=224, metavar="PX",
                        help="training slice size in pixels (default 224)")
    parser.add_argument("--n-skip", type=int, default=None, metavar="N",
                        help="skip connections used in training (default: the model's)")
    parser.add_argument("--labels", metavar="YAML", default=None,
                        help="labels YAML with the class names (default: Synapse 8 organs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args) -> int:
    from ..convert import convert_official

    report = convert_official(args.official, args.output, args.model, args.img_size, args.n_skip,
                              args.labels, args.overwrite)
    print(f"{report.summary()}\nwrote {args.output}")
    return 0
