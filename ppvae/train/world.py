"""Where one process and data-parallel ranks differ in :func:`ppvae.fit`.

This is the one place that asks how many ranks there are.

:func:`join_world` joins the process group torchrun describes (:mod:`ppvae.distributed`) and
returns a :class:`SingleProcess` or a :class:`DataParallel`; the loop then calls the same methods
on either. In a single process they do nothing (or hand their argument back), so the loop's
step costs what it did without them. Under ``torchrun`` (Li et al. 2020, PyTorch's
DistributedDataParallel scheme): every rank starts from rank 0's parameters and buffers and uses
rank 0's seed, takes its contiguous share of each minibatch of ``batch_size * ranks`` rows and
draws from its own per-(rank, epoch) seed, gradients are summed across ranks weighted by shard
size (the step one process takes on the whole minibatch), the loss windows and the validation
ELBO are summed over ranks, rank 0 writes checkpoints and the others wait for the file, and
Ctrl-C is left alone (ranks stopping at different steps would wait on each other forever).
"""

from __future__ import annotations

import pyro
import torch

from ..distributed import process as ddp
from .data import Source
from .evaluate import heldout_elbo

__all__ = ["VALID_CHUNK", "DataParallel", "SingleProcess", "join_world", "rank_seed"]

VALID_CHUNK = 1000  # validation rows scored at a time


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for one rank's draws in one epoch (distinct across ranks and epochs).

    It is below 2**32 as ``pyro.set_rng_seed`` needs (NumPy's legacy seeding refuses larger
    ones).
    """
    return (seed * 1_000_003 + epoch * 8191 + rank * 131_071 + 1) % 2**32


class SingleProcess:
    """One process: the whole minibatch here, no collectives."""

    size = 1  # ranks
    is_main = True  # writes checkpoints, shows the progress bar
    interruptible = True  # Ctrl-C acts at the next step boundary (ppvae.train.interrupt)

    def config(self) -> dict:
        """What the run's checkpoint configuration records about the ranks."""
        return {}

    def shared_seed(self, seed: int, device) -> int:
        """The seed of the minibatch permutations, the same on every rank."""
        return seed

    def start_together(self, tensors: list[torch.Tensor]) -> None:
        """Give every rank the same parameters and buffers before the first step."""

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Seed this rank's draws for ``epoch``."""

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share of a minibatch's row indices."""
        return rows

    def reduce_gradients(self, params: list[torch.Tensor], shard: torch.Tensor | None,
                         rows: torch.Tensor | None, failed: bool, validate: bool) -> bool:
        """Make the gradients those of the whole minibatch; did the step fail (on any rank)?"""
        return failed

    def window_totals(self, losses: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
        """A window's per-minibatch losses ``[W]`` and row count, over all ranks."""
        return losses, rows

    def valid_elbo(self, model, guide, valid: Source, info, samples: int,
                   fixed_kw: dict) -> float:
        """The mean validation ELBO (one host sync)."""
        total, rows = heldout_elbo(model, guide, valid.chunks(VALID_CHUNK), info,
                                   num_samples=samples, fixed_kw=fixed_kw)
        return float(total) / rows if total is not None else float("nan")

    def after_checkpoint(self) -> None:
        """Called on every rank once the checkpoint is written."""


class DataParallel(SingleProcess):
    """One of ``size`` ranks under torchrun, each on its shard of every minibatch."""

    interruptible = False

    def __init__(self, size: int) -> None:
        self.size = size
        self.is_main = ddp.is_main()

    def config(self) -> dict:
        """The world size, for the run's checkpoint configuration."""
        return {"world_size": self.size}

    def shared_seed(self, seed: int, device) -> int:
        """Rank 0's seed, broadcast to every rank."""
        return ddp.broadcast_int(seed, device=device)  # the same permutations everywhere

    def start_together(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite the tensors with rank 0's values."""
        ddp.broadcast_tensors(tensors)  # rank 0's parameters and buffers

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Seed Pyro's RNGs from (seed, epoch, this rank)."""
        pyro.set_rng_seed(rank_seed(seed, epoch, ddp.rank()))

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of the minibatch's row indices."""
        return rows[slice(*ddp.shard_bounds(len(rows)))]

    def reduce_gradients(self, params, shard, rows, failed, validate):
        """Sum the gradients over ranks by shard weight; did a rank fail (under validation)?"""
        # the failure flag costs a host sync, so it is shared only under validation (where a
        # rank's step can fail on its own); a rank with an empty shard has weight 0
        assert shard is not None and rows is not None  # streamed data train in one process
        return ddp.allreduce_gradients(params, len(shard) / len(rows),
                                       failed if validate else None)

    def window_totals(self, losses, rows):
        """The window's per-minibatch losses and its row count, summed over ranks."""
        summed = ddp.all_sum(torch.cat([losses.double(), losses.new_tensor(
            [rows], dtype=torch.float64)]))  # [W + 1]: the minibatches' totals, the rows
        return summed[:-1], int(summed[-1])

    def valid_elbo(self, model, guide, valid, info, samples, fixed_kw):
        """The mean validation ELBO, each rank scoring its share of the rows."""
        n = int(valid.n)
        start, stop = ddp.shard_bounds(n)  # each rank scores its share
        total = torch.zeros((), dtype=torch.float64, device=valid.device)
        if stop > start:
            part, _ = heldout_elbo(model, guide, valid.chunks(VALID_CHUNK, start, stop), info,
                                   num_samples=samples, fixed_kw=fixed_kw)
            total = part if part is not None else total
        return float(ddp.all_sum(total)) / n

    def after_checkpoint(self) -> None:
        """Wait for every rank, so that the checkpoint file is complete before any goes on."""
        ddp.barrier()  # the file is complete before any rank goes on


def join_world() -> SingleProcess:
    """Join torchrun's process group when the environment describes one of several ranks."""
    return DataParallel(ddp.world_size()) if ddp.init_from_env() else SingleProcess()
