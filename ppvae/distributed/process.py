"""The torch.distributed environment of a ppvae run, and the few collectives training needs.

ppvae scales out on PyTorch's own engine, launched with ``torchrun``: every process (rank) runs
the same script, and :func:`init_from_env` joins them into one process group from the variables
torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with
NCCL when CUDA is available (each rank on GPU ``LOCAL_RANK``) and gloo on the CPU. Outside
torchrun every function here answers for a single process (rank 0 of 1) and does nothing.

Training (:func:`ppvae.fit`) is data parallel in the manner of PyTorch's
DistributedDataParallel (Li et al. 2020, "PyTorch Distributed: experiences on accelerating data
parallel training", VLDB): all ranks start from rank 0's parameters (:func:`broadcast_tensors`),
each evaluates the objective on its own shard of the minibatch, and the gradients are summed
across ranks with weights shard rows / minibatch rows (:func:`allreduce_gradients`, one
collective per dtype over a flat buffer), so every rank takes the same optimizer step, the one a
single process would take on the whole minibatch. Evaluation shards datapoints by contiguous
ranges (:func:`shard_bounds`) and gathers per-datapoint rows (:func:`gather_rows`); see
:mod:`ppvae.sharded`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, cast

import torch
import torch.distributed as dist

from ..core.device import resolve_device

__all__ = [
    "all_sum",
    "allreduce_gradients",
    "barrier",
    "broadcast_int",
    "broadcast_tensors",
    "default_device",
    "gather_objects",
    "gather_rows",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "shard_bounds",
    "shutdown",
    "world_size",
]


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one that writes checkpoints, logs and reports."""
    return rank() == 0


def local_rank() -> int:
    """The rank within this node (torchrun's ``LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None, *, timeout_s: float | None = None) -> bool:
    """Join the process group torchrun describes in the environment.

    Returns :func:`is_distributed`. Does nothing when the group already exists or when
    ``RANK`` / ``WORLD_SIZE`` are not set or ``WORLD_SIZE`` is 1. ``backend`` defaults to
    ``"nccl"`` when CUDA is available (and then selects GPU ``LOCAL_RANK`` as this process's
    device) and ``"gloo"`` otherwise.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return is_distributed()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"RANK and WORLD_SIZE are set but {var} is not: launch with "
                               "torchrun (or set MASTER_ADDR and MASTER_PORT yourself)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        if local_rank() >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} "
                               "GPU(s) on this node: use --nproc_per_node <= the GPU count")
        torch.cuda.set_device(local_rank())
    kw: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)} if timeout_s is not None else {}
    dist.init_process_group(backend, init_method="env://", **kw)
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (the end of a torchrun script); a no-op outside one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def default_device() -> torch.device:
    """This rank's device.

    GPU ``LOCAL_RANK`` under NCCL, else :func:`ppvae.core.device.resolve_device`.
    """
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return resolve_device(None)


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, part: int | None = None, parts: int | None = None) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that rank ``part`` of ``parts`` owns.

    The default is this rank of the world. The ranges are contiguous and their sizes differ by
    at most one.
    """
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    return part * n // parts, (part + 1) * n // parts


def _groups(tensors: Sequence[torch.Tensor]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return groups


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (one collective per dtype)."""
    if not is_distributed():
        return
    tensors = list(tensors)
    with torch.no_grad():
        for idx in _groups(tensors).values():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])  # [P]
            dist.broadcast(flat, src=src)
            for i, piece in zip(idx, flat.split([tensors[i].numel() for i in idx]), strict=True):
                tensors[i].copy_(piece.view_as(tensors[i]))


def allreduce_gradients(params: Sequence[torch.Tensor], weight: float,
                        failed: bool | None = None) -> bool:
    """Replace every ``p.grad`` by ``sum_ranks weight_r * grad_r``.

    A missing grad counts as zero; every parameter has a grad afterwards. ``weight`` is this
    rank's share of the minibatch (shard rows / minibatch rows), so a rank with an empty shard
    passes 0.

    ``failed``: this rank's step failed (its grads are then ignored); the return value says
    whether any rank failed. That needs one host sync, so pass None (the default) to skip it.
    """
    if not is_distributed():
        return bool(failed)
    params = list(params)
    groups = list(_groups(params).values())
    for g, idx in enumerate(groups):
        parts = [(cast(torch.Tensor, params[i].grad) if params[i].grad is not None and not failed
                  else torch.zeros_like(params[i])).reshape(-1) * weight for i in idx]
        flag = None
        if g == 0 and failed is not None:
            flag = params[idx[0]].new_full((1,), float(failed))
            parts.append(flag)
        flat = torch.cat(parts)  # [P (+1)]
        dist.all_reduce(flat)
        sizes = [params[i].numel() for i in idx]
        pieces = flat[:sum(sizes)].split(sizes)
        for i, piece in zip(idx, pieces, strict=True):
            params[i].grad = piece.view_as(params[i])
        if flag is not None:
            failed = bool(flat[-1] > 0)
    return bool(failed)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (a new tensor; ``t`` itself in a single process)."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def file_everywhere(path, device=None) -> bool:
    """Does ``path`` (None: no file) exist?

    Every rank must agree: a checkpoint that only some ranks can read is an error naming the
    file.
    """
    found = path is not None and os.path.exists(path)
    if is_distributed():
        seen = int(all_sum(torch.tensor([int(found)], device=device or default_device())))
        if seen not in (0, world_size()):
            raise RuntimeError(f"resume checkpoint {path} exists on {seen} of {world_size()} "
                               "ranks: put it on a file system every rank can read")
    return found


def broadcast_int(value: int, src: int = 0, device=None) -> int:
    """Rank ``src``'s integer on every rank."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device or default_device())
    dist.broadcast(t, src=src)
    return int(t)


def gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(t: torch.Tensor | None, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's ``t`` along ``dim`` in rank order.

    Sizes along ``dim`` may differ between ranks (all other dimensions must agree); a rank with
    nothing to give passes None and still receives the result.
    """
    if not is_distributed():
        if t is None:
            raise ValueError("gather_rows: no tensor to gather")
        return t
    metas = gather_objects(None if t is None else (tuple(t.shape), t.dtype))
    known = [m for m in metas if m is not None]
    if not known:
        raise ValueError("gather_rows: no rank has a tensor to gather")
    shape, dtype = known[0]
    dim = dim % len(shape)
    if t is None:
        t = torch.empty((*shape[:dim], 0, *shape[dim + 1:]), dtype=dtype,
                        device=default_device())
    if t.dtype == torch.bool:  # not every backend gathers bools: send bytes
        t = t.to(torch.uint8)
    counts = [m[0][dim] if m is not None else 0 for m in metas]
    pad_shape = list(t.shape)
    pad_shape[dim] = max(counts) - t.shape[dim]
    padded = torch.cat([t, t.new_zeros(pad_shape)], dim).contiguous()  # [..., max, ...]
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded)
    rows = torch.cat([o.narrow(dim, 0, c) for o, c in zip(out, counts, strict=True)], dim)
    return rows.bool() if dtype == torch.bool else rows
