"""``transunet export MODEL -o OUT --format onnx|torchscript|monai-bundle``."""
from __future__ import annotations

HELP = "export a model (installed name, package or checkpoint) as ONNX, TorchScript or a MONAI bundle"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="an installed model name, a package (.zip) or a checkpoint (.pt)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="file (.onnx, .ts/.pt) or, for monai-bundle, a new folder")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript", "monai-bundle"),
                        help="onnx: opset 17, dynamic batch (needs the [export] extra); "
                             "torchscript: torch.jit.load-able; monai-bundle: a MONAI bundle folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args) -> int:
    from ..packages.export import export

    path = export(args.model, args.output, args.format, overwrite=args.overwrite)
    print(f"{args.model} -> {path} ({args.format})")
    return 0
