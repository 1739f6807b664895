"""The settings of one :func:`ppvae.fit` call, checked before anything runs.

And what is built from them: the optimizer, the learning-rate schedule, and the configuration a
checkpoint records.

* :class:`LoopSettings` (with its :class:`NanPolicy`) groups fit's keyword arguments that steer
  the loop; constructing one refuses values that would train wrongly or not at all, by name
  (:func:`check_settings`: a negative ``clip_norm`` would flip the gradient, ``patience=0``
  would stop after the first epoch).
* :func:`make_optimizer` (Adam with ``lr`` unless a factory is given) and :func:`make_schedule`
  (``"cosine"``, ``"plateau"`` or a factory), stepped per epoch by :func:`step_schedule`.
* :func:`run_config`: the settings that identify a run, written into every checkpoint and
  compared on resume (:func:`ppvae.train.checkpoint.same_run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "LoopSettings",
    "NanPolicy",
    "check_settings",
    "make_optimizer",
    "make_schedule",
    "run_config",
    "step_schedule",
]


@dataclass(frozen=True)
class NanPolicy:
    """What a non-finite step does: ``"stop"``, or ``"rollback"`` to the last finite state.

    A rollback happens up to ``max_rollbacks`` times, multiplying the learning rate by
    ``lr_factor`` each time.
    """

    policy: str = "stop"
    max_rollbacks: int = 3
    lr_factor: float = 0.5

    @property
    def rolls_back(self) -> bool:
        """True for ``"rollback"``."""
        return self.policy == "rollback"


@dataclass(frozen=True)
class LoopSettings:
    """fit's settings for the training loop (see :func:`ppvae.fit` for each); checked."""

    epochs: int = 10
    batch_size: int = 128  # per rank: the effective minibatch is batch_size x ranks
    check_every: int = 100  # steps between finiteness checks (one host sync each)
    valid_samples: int = 1
    patience: int | None = None
    clip_norm: float | None = None
    restore_best: bool = True
    validate: bool = False  # distribution validation on in the loop
    jit: bool = False
    quiet: bool = False
    nan: NanPolicy = NanPolicy()

    def __post_init__(self) -> None:
        check_settings(self)


def check_settings(s: LoopSettings) -> None:
    """Refuse loop settings that would train wrongly or not at all, naming the setting."""
    nan = s.nan
    v: float | None  # the value under check: an int in the first loop, a float in the second
    ints = [("epochs", s.epochs, 0), ("batch_size", s.batch_size, 1),
            ("check_every", s.check_every, 1), ("valid_samples", s.valid_samples, 1),
            ("max_rollbacks", nan.max_rollbacks, 0)]
    for name, v, low in ints + ([("patience", s.patience, 1)] if s.patience is not None else []):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    for name, v, top in (("clip_norm", s.clip_norm, math.inf),
                         ("rollback_lr_factor", nan.lr_factor, 1.0)):
        if v is not None and not (isinstance(v, (int, float)) and 0 < v <= top
                                  and math.isfinite(v)):
            bound = "" if top == math.inf else f" and <= {top}"
            raise ValueError(f"{name} must be a finite number > 0{bound}, got {v!r}")
    if nan.policy not in ("stop", "rollback"):
        raise ValueError(f"nan_policy must be 'stop' or 'rollback', got {nan.policy!r}")


def make_optimizer(params: list[torch.Tensor], factory: Callable | None,
                   lr: float) -> torch.optim.Optimizer:
    """``factory(params)``, or Adam with learning rate ``lr``."""
    return factory(params) if factory else torch.optim.Adam(params, lr=lr)


def make_schedule(spec, optimizer, epochs: int):
    """The learning-rate scheduler ``spec`` names (None: none)."""
    if spec is None:
        return None
    if spec == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if spec == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    if callable(spec):
        return spec(optimizer)
    raise ValueError(f"schedule must be None, 'cosine', 'plateau' or a callable "
                     f"optimizer -> scheduler, got {spec!r}")


def step_schedule(scheduler, value: float) -> None:
    """One epoch's scheduler step (``ReduceLROnPlateau`` on minus the epoch's ``value``)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(-value)
    elif scheduler is not None:
        scheduler.step()


def run_config(s: LoopSettings, *, lr: float, objective: str, seed: int, num_data: int,
               device, ranks: dict) -> dict:
    """The run's configuration as a checkpoint records it (JSON types)."""
    return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": lr, "objective": objective,
            "seed": seed, "num_data": num_data, "nan_policy": s.nan.policy,
            "clip_norm": s.clip_norm, "patience": s.patience, "device": str(device),
            "jit": s.jit, **ranks}
