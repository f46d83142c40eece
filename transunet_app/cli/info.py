"""``transunet info``: versions, this machine's precision support, and the model registry."""
from __future__ import annotations

HELP = "show versions, CPU/GPU precision support and the registered models"


def add_arguments(parser) -> None:
    parser.add_argument("--params", action="store_true",
                        help="also build each model once to count its parameters (slower)")


def run(args) -> int:
    import platform

    import torch

    from .. import __version__, capabilities
    from ..kernels import attention
    from ..models import build_model, count_parameters, list_models
    from ..models.registry import get_spec

    print(f"transunet-app {__version__}  torch {torch.__version__}  python {platform.python_version()}")
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"CPU: {capabilities.cpu_model()}; class {capabilities.cpu_class()}; "
          f"{torch.get_num_threads()} threads; torch kernels {cap}; "
          f"bf16 hardware: {capabilities.bf16_hardware()}")
    print("fast paths (what this CPU and this torch build support):")
    for decision in capabilities.decisions():
        print(f"  {decision.line()}")
    from ..inference.optimize import fuse_on_this_cpu
    from ..inference.pipeline import resolve_device
    from ..inference.precision import resolve_precision

    cpu = resolve_device("cpu")
    print(f"  precision auto on CPU: {resolve_precision('auto', cpu)}; oneDNN pass for fp32: "
          f"{'yes' if fuse_on_this_cpu('fp32') else 'no'}, for bf16: "
          f"{'yes' if fuse_on_this_cpu('bf16') else 'no'}")
    print(f"  bf16 attention: {attention.describe()}")
    print("\nmodels:")
    for name in list_models():
        spec = get_spec(name)
        extra = ""
        if args.params:
            extra = f"  {count_parameters(build_model(name, 9)) / 1e6:7.2f}M params"
        print(f"  {name:<14}{extra}  {spec.description}")
    return 0
