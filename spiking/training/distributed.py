"""Distributed data parallel helpers for ``torchrun --nproc_per_node=N -m spiking train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (plus ``MASTER_ADDR``/``PORT``);
:func:`setup` then joins the process group: NCCL when the run uses CUDA (one GPU per process,
``cuda:LOCAL_RANK``), gloo on CPU. Without those variables everything is a single process
(world size 1, rank 0). Only rank 0 logs, plots and writes checkpoints; :func:`all_sum` and
:func:`broadcast_object` keep metrics and decisions identical on every rank.

A worker that joined a gloo group must not go through Python's interpreter shutdown: torch's
``DistributedDataParallel`` keeps the process group alive past ``destroy_process_group`` (its
``pt_gloo_runloop`` threads are still running at exit, torch 2.11-2.14), and a runloop thread that
drops the last reference to a finished collective's tensors then needs the GIL of an interpreter
being torn down, and aborts the process ("terminate called without an active exception", or a
segfault), about one run in twenty on a loaded 2-core machine; the mechanism is the one described
in pytorch/pytorch pull request 179291. The ``spiking`` command therefore ends such a worker with
:func:`exit_worker` (``os._exit`` after flushing) once training has returned and every file is
written.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if launched by torchrun; return rank/world/device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        global _joined
        _joined = True
    return DistInfo(rank, world, local, dev)


_joined = False  # set once this process has joined a process group (see the module note)


def joined() -> bool:
    """Whether this process joined a torch.distributed process group through :func:`setup`."""
    return _joined


def exit_worker(code: int):
    """End this process now, skipping interpreter shutdown (see the module note): flush the
    standard streams, then ``os._exit(code)``. Call only when all output is written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written
            pass
    os._exit(code)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: list[float] | torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum over ranks (float64 on the run's device; identity for one process)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if not info.enabled:
        return t
    dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = t.to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
