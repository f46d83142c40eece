"""``transunet package RUN_DIR|CKPT -o NAME.zip [--card CARD.yaml]``: a shareable model package."""
from __future__ import annotations

HELP = "package a trained model with its model card (safetensors + model.json in a .zip)"


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="RUN_DIR|CKPT",
                        help="a training run folder (uses checkpoints/best.pt) or a checkpoint")
    parser.add_argument("-o", "--output", required=True, metavar="NAME.zip",
                        help="package file to write; NAME is the model's name unless the card says")
    parser.add_argument("--card", metavar="CARD.yaml",
                        help="model card fields the run cannot know: name, version, description, "
                             "authors, copyright, license, intended_use, not_intended_for, "
                             "data_source, references, training_data")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package file")


def run(args) -> int:
    from ..packages.build import build_package
    from ..packages.card import unspecified_fields

    pkg = build_package(args.source, args.output, card_yaml=args.card, overwrite=args.overwrite)
    card = pkg.card
    print(f"{args.output}: {card['name']} {card['version']} ({card['architecture']['name']}, "
          f"{len(card['labels'])} classes, weights SHA-256 {pkg.weights_sha256[:16]}...)")
    missing = unspecified_fields(card)
    if missing:
        print(f"unspecified in the card (give them with --card): {', '.join(missing)}")
    return 0
