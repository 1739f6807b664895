"""How far a :func:`ppvae.fit` run has come, as typed records.

The state a checkpoint carries between calls, the running sums of one epoch, and the result fit
returns:

* :class:`TrainState`: epochs and optimizer steps completed, rollbacks taken, the best epoch so
  far (:class:`Best`, for early stopping and ``restore_best``) and the per-epoch
  :class:`History`. :meth:`TrainState.to_checkpoint` / :meth:`TrainState.from_checkpoint`
  convert it to and from the JSON ``state`` of a checkpoint (:mod:`ppvae.train.checkpoint`;
  the keys are those ppvae has always written, so older checkpoints resume).
* :class:`EpochTally`: an epoch's per-minibatch losses since the last finiteness check (the
  window, device tensors: no host sync per step) and the sums of the windows found finite.
* :class:`FitResult` (what fit returns), built from a state by :func:`fit_result`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..core.records import frame
from .checkpoint import CheckpointMeta

__all__ = ["Best", "EpochTally", "FitResult", "History", "TrainState", "fit_result"]


class Best(NamedTuple):
    """The best epoch so far by validation ELBO (by training objective without validation)."""

    value: float = -math.inf
    epoch: int = -1  # 0-based; -1 before the first epoch
    bad_epochs: int = 0  # epochs since it without improvement


@dataclass
class History:
    """Per-epoch values, over all epochs including those before a resume."""

    train: list[float] = field(default_factory=list)  # mean per-datapoint training objective
    valid: list[float] = field(default_factory=list)  # mean validation ELBO (empty: no valid)
    lr: list[float] = field(default_factory=list)  # learning rate used


@dataclass
class TrainState:
    """What a run has done so far; saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed (including failed, rolled-back ones)
    rollbacks: int = 0  # non-finite steps rolled back
    best: Best = field(default_factory=Best)
    history: History = field(default_factory=History)

    def to_checkpoint(self) -> dict:
        """The checkpoint's ``state`` (JSON types)."""
        h, b = self.history, self.best
        return {"train": h.train, "valid": h.valid, "lr": h.lr, "best_epoch": b.epoch,
                "best": b.value, "bad_epochs": b.bad_epochs, "rollbacks": self.rollbacks,
                "step": self.step}

    @classmethod
    def from_checkpoint(cls, meta: CheckpointMeta) -> TrainState:
        """The state a checkpoint was written in (absent entries take their defaults)."""
        s, fresh = meta.state, cls()
        return cls(epoch=meta.epoch, step=s.get("step", fresh.step),
                   rollbacks=s.get("rollbacks", fresh.rollbacks),
                   best=Best(s.get("best", fresh.best.value), s.get("best_epoch", fresh.best.epoch),
                             s.get("bad_epochs", fresh.best.bad_epochs)),
                   history=History(list(s.get("train", [])), list(s.get("valid", [])),
                                   list(s.get("lr", []))))


@dataclass
class EpochTally:
    """One epoch's losses: the window since the last check, and the finite windows' sums."""

    window: list[torch.Tensor] = field(default_factory=list)  # minus objective per minibatch
    window_rows: int = 0
    batches: list = field(default_factory=list)  # the window's minibatches, for a diagnosis
    kept: list[torch.Tensor] = field(default_factory=list)  # a sum per finite window
    rows: int = 0  # rows in the kept windows

    def add(self, loss: torch.Tensor, rows: int, batch=None) -> None:
        """Add one minibatch's total loss, row count and the minibatch to the open window."""
        self.window.append(loss)
        self.window_rows += rows
        self.batches.append(batch)

    def keep(self, total: torch.Tensor, rows: int) -> None:
        """Count a checked window (its loss total and rows, over all ranks); start a new one."""
        self.kept.append(total)
        self.rows += rows
        self.drop_window()

    def drop_window(self) -> None:
        """Forget the open window (after a check, or a rollback)."""
        self.window, self.window_rows, self.batches = [], 0, []

    def train_value(self) -> float:
        """The epoch's mean per-datapoint objective over the kept rows (NaN: none kept)."""
        return -float(torch.stack(self.kept).sum()) / self.rows if self.rows else float("nan")


class FitResult(NamedTuple):
    """What :func:`fit` did. Lists run over all epochs, including those before a resume."""

    train_objective: list[float]  # per epoch: mean per-datapoint objective (ELBO by default)
    valid_elbo: list[float]  # per epoch: mean per-datapoint validation ELBO (empty: no valid)
    lr: list[float]  # per epoch: learning rate used
    # epoch (0-based) with the best validation (else training) value; with valid and restore_best
    # the parameters fit leaves are this epoch's, unless the message says they were not available
    best_epoch: int
    epochs: int  # epochs completed
    steps: int  # optimizer steps completed
    wall_time: float  # seconds in this call
    steps_per_second: float  # optimizer steps per second of training time in this call
    stopped: str  # "completed", "early_stopping" or "non_finite"
    # why it stopped; for non-finite: the step and the offending site, or the epoch whose every
    # window was rolled back
    message: str
    rollbacks: int  # non-finite steps rolled back
    objective: str = ""  # what trained, e.g. "elbo" or "TraceEnum_ELBO(num_particles=1)"

    @property
    def best_value(self) -> float:
        """The validation ELBO (else training objective) of the best epoch; NaN without epochs."""
        values = self.valid_elbo or self.train_objective
        return values[self.best_epoch] if values else float("nan")

    def to_dataframe(self):
        """A pandas DataFrame with one row per epoch (all epochs, also those before a resume).

        Columns ``epoch`` (0-based, as :attr:`best_epoch`), ``train`` (mean per-datapoint
        training objective, nats), ``valid`` (mean validation ELBO, nats; NaN without
        validation) and ``lr``.
        """
        e = len(self.train_objective)
        valid = self.valid_elbo if len(self.valid_elbo) == e else [math.nan] * e
        df = frame({"epoch": np.arange(e), "train": np.asarray(self.train_objective, float),
                    "valid": np.asarray(valid, float), "lr": np.asarray(self.lr, float)})
        df.index.name = None
        return df

    def __repr__(self) -> str:
        what = self.objective or "objective"
        last = "no epoch"
        if self.train_objective:
            last = (f"last epoch's {what} (nats per datapoint): train "
                    f"{self.train_objective[-1]:.4f}")
            last += f", valid {self.valid_elbo[-1]:.4f}" if self.valid_elbo else ""
            last += f"; best epoch {self.best_epoch}: {self.best_value:.4f}"
        note = "" if self.stopped == "completed" else f": {_clip(self.message, 100)}"
        rollbacks = f"; {self.rollbacks} rollbacks" if self.rollbacks else ""
        return (f"FitResult({self.stopped}{note}; {self.epochs} epochs, {self.steps} steps "
                f"({self.steps_per_second:.1f}/s) in {self.wall_time:.1f} s; {last}{rollbacks})")


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 3] + "..."


def fit_result(state: TrainState, *, steps: int, train_time: float, wall_time: float,
               stopped: str, message: str, objective: str = "") -> FitResult:
    """The result of a call that took ``steps`` steps in ``train_time`` seconds of training."""
    h = state.history
    return FitResult(list(h.train), list(h.valid), list(h.lr), state.best.epoch, state.epoch,
                     state.step, wall_time, steps / train_time if train_time > 0 else 0.0,
                     stopped, message, state.rollbacks, objective)
