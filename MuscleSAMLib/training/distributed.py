"""torch.distributed helpers: the same command runs alone or under ``torchrun --nproc_per_node N``
(gloo on CPU, nccl on CUDA). Gradients are averaged by hand after backward (works with the SAM
optimiser's two backward passes and with the custom batched decoder forward)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's rank and the world size (1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed() -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size())


def average_gradients(params, ctx: DistContext) -> None:
    """All-reduce (mean) the gradients of ``params`` across ranks."""
    if not ctx.active:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= ctx.world


def broadcast_floats(values: list[float], ctx: DistContext) -> list[float]:
    """Rank 0's ``values`` on every rank."""
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, 0)
    return [float(v) for v in t]


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()
