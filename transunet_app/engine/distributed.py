"""Process-group setup for torchrun/DistributedDataParallel, and small collective helpers.

``torchrun --nproc_per_node N`` starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; :func:`setup` reads them and
joins the group (NCCL on CUDA, gloo on CPU). Without them the run is a single process.

Several machines (``torchrun --nnodes N --node_rank R --master_addr HOST --master_port PORT``,
or the elastic ``--rdzv_backend c10d --rdzv_endpoint HOST:PORT``) work the same way. Every
collective has a timeout, ``TRANSUNET_DIST_TIMEOUT`` seconds (default 300): when a node is lost,
the others stop within that bound (at once when gloo sees the closed connection of a killed
node) with one line (:class:`~transunet_app.errors.DistributedError`, exit code 4), and
``--resume`` with all nodes continues from the last checkpoint. Training itself never touches
the rendezvous store after setup, so a hung store host cannot hold it; torchrun's c10d agent
does poll that store and can wait forever on a hung host (README "Several machines").
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``; rank 0 writes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA device ``local_rank`` when available, else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ..errors import UserError

            raise UserError("train.device=cuda but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group if the environment describes one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=collective_timeout())
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device, owns_group=owns)


#: seconds a collective may wait for the other processes before the run stops
TIMEOUT_ENV = "TRANSUNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


def collective_timeout():
    """``TRANSUNET_DIST_TIMEOUT`` (seconds, default 300) as the process group's timeout."""
    import datetime

    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        from ..errors import UserError

        raise UserError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if seconds <= 0:
        from ..errors import UserError

        raise UserError(f"{TIMEOUT_ENV}={raw!r}: must be positive")
    return datetime.timedelta(seconds=seconds)


def is_peer_failure(exc: BaseException) -> bool:
    """True for a collective that failed because another process is gone or timed out."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(key in text for key in (
        "gloo", "connection closed", "connection reset", "timed out", "timeout", "broken pipe",
        "nccl", "peer", "socket"))


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_across(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a small float tensor over all ranks (identity in a single process)."""
    if not ctx.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def gather_objects(ctx: DistContext, obj):
    """List of ``obj`` from every rank, in rank order."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step the ranks'
    running statistics differ by their own last batch; this makes saved and validated models
    identical on every rank.
    """
    if not ctx.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def replica_spread(ctx: DistContext, module: torch.nn.Module) -> float:
    """Largest difference between ranks of per-tensor float64 checksums (0.0 = in sync)."""
    sums = torch.tensor([float(p.detach().double().sum()) for p in module.state_dict().values()
                         if p.is_floating_point()], dtype=torch.float64)
    every = gather_objects(ctx, sums)
    return float(max((s - every[0]).abs().max() if s.numel() else 0.0 for s in every))
