"""The data :func:`ppvae.fit` trains on.

Its accepted forms, placement on the device, and the minibatches of each epoch:

* :func:`unpack_data` takes a tensor, a numpy array or a :class:`ppvae.data.Dataset` record
  (its train and valid splits, and dynamic binarization when the record asks for it) and refuses
  anything else, or data without rows, by name; :func:`check_valid` runs the contract check on
  the validation rows so that a failure says it is ``valid`` that does not fit.
* :class:`TrainData` holds the tensors on the device. Minibatches are taken by index from a
  permutation seeded per (seed, epoch) (:meth:`TrainData.epoch`): a fixed seed reproduces a run
  exactly and resuming needs no data state. Per-datapoint keyword tensors (labels of a
  conditional model) are indexed with the rows (:meth:`TrainData.kwargs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..core.contract import ContractError, check_pair

__all__ = ["TrainData", "as_rows", "check_valid", "unpack_data"]


def as_rows(t, what: str) -> torch.Tensor:
    """``t`` as a tensor ``[N, ...]`` with N >= 1 (a numpy array converted).

    Anything else is an error naming ``what``.
    """
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or array [N, ...] or a ppvae.data.Dataset, "
                        f"got {type(t).__name__}")
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(f"{what} has no rows (shape {tuple(t.shape)}): it must be [N, ...], "
                         "N >= 1")
    return t


def unpack_data(data, valid, transform):
    """Training and validation tensors (numpy arrays converted) and the transform."""
    if hasattr(data, "train") and hasattr(data, "valid"):  # a ppvae.data.Dataset record
        if transform is None and getattr(data, "binarization", None) == "dynamic":
            from ..data.binarize import dynamic_binarize
            transform = dynamic_binarize
        data, valid = data.train, data.valid if valid is None else valid
    x = as_rows(data, "data")
    valid = as_rows(valid, "valid") if valid is not None else None
    return x, valid, transform


def check_valid(model, guide, valid, fixed_kw, batch_kw, rows) -> None:
    """The contract check on the validation data's first ``rows``.

    A failure says it is ``valid`` that does not fit (its shape, dtype or values), not the
    training data.
    """
    try:
        check_pair(model, guide, valid[:rows], model_kwargs={
            **fixed_kw, **{k: v[:rows] for k, v in batch_kw.items()}})
    except ContractError as e:
        raise ContractError(f"valid (validation data): {e}") from e


@dataclass(frozen=True)
class TrainData:
    """Training (and validation) data on one device, with their keyword arguments."""

    x: torch.Tensor  # [N, ...] training rows
    valid: torch.Tensor | None  # [M, ...] validation rows
    transform: Callable | None  # (x, generator) -> x, once per epoch (e.g. binarization)
    batch_kw: dict[str, torch.Tensor]  # per-datapoint tensors [N, ...], minibatched with x
    valid_batch_kw: dict[str, torch.Tensor]  # the same for valid [M, ...]
    fixed_kw: dict  # passed unchanged
    device: torch.device  # where they are (and the permutations are drawn)

    @classmethod
    def on(cls, device, x, valid, transform, batch_kw: dict | None, valid_batch_kw: dict | None,
           fixed_kw: dict | None) -> TrainData:
        """The data moved to ``device`` (missing keyword dicts empty)."""
        return cls(x.to(device), valid.to(device) if valid is not None else None, transform,
                   {k: v.to(device) for k, v in (batch_kw or {}).items()},
                   {k: v.to(device) for k, v in (valid_batch_kw or {}).items()},
                   dict(fixed_kw or {}), device)

    @property
    def n(self) -> int:
        """The number of training rows."""
        return self.x.shape[0]

    def epoch(self, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's (transformed) rows and its row permutation ``[N]``.

        Both come from one generator seeded by (seed, epoch).
        """
        g = torch.Generator(device=self.device).manual_seed(seed * 100003 + epoch)
        xe = self.transform(self.x, g) if self.transform is not None else self.x
        return xe, torch.randperm(self.n, generator=g, device=self.device)

    def kwargs(self, rows) -> dict:
        """The model's and guide's keyword arguments for training ``rows`` (indices or slice)."""
        return {**self.fixed_kw, **{k: v[rows] for k, v in self.batch_kw.items()}}

    def valid_kwargs(self, rows) -> dict:
        """The keyword arguments for validation ``rows``."""
        return {**self.fixed_kw, **{k: v[rows] for k, v in self.valid_batch_kw.items()}}
