"""``transunet info``: versions, this machine's precision support, and the model registry."""
from __future__ import annotations

HELP = "show versions, CPU/GPU precision support and the registered models"


def add_arguments(parser) -> None:
    parser.add_argument("--params", action="store_true",
                        help="also build each model once to count its parameters (slower)")


def run(args) -> int:
    import platform

    import torch

    from .. import __version__
    from ..models import build_model, count_parameters, list_models
    from ..models.registry import get_spec

    print(f"transunet-app {__version__}  torch {torch.__version__}  python {platform.python_version()}")
    cap = torch.backends.cpu.get_cpu_capability()
    from ..inference.precision import bf16_hardware

    print(f"CPU: {torch.get_num_threads()} threads, {cap}, bf16 hardware: {bf16_hardware()}; "
          f"CUDA: {'yes, ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    from ..kernels import attention

    print(f"bf16 attention: {attention.describe()}")
    print("\nmodels:")
    for name in list_models():
        spec = get_spec(name)
        extra = ""
        if args.params:
            extra = f"  {count_parameters(build_model(name, 9)) / 1e6:7.2f}M params"
        print(f"  {name:<14}{extra}  {spec.description}")
    return 0
