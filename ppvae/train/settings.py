"""The settings of one :func:`ppvae.fit` call, checked before anything runs.

And what is built from them: the optimizer, the learning-rate schedule, and the configuration a
checkpoint records.

* :class:`LoopSettings` (with its :class:`NanPolicy`) groups fit's keyword arguments that steer
  the loop; constructing one refuses values that would train wrongly or not at all, by name
  (:func:`check_settings`: a negative ``clip_norm`` would flip the gradient, ``patience=0``
  would stop after the first epoch).
* :func:`make_optimizer` builds the ``torch.optim`` optimizer fit steps from what ``optimizer=``
  may be (:func:`check_optimizer` refuses anything else before the run starts): None (Adam with
  ``lr``), a factory ``params -> torch.optim.Optimizer``, a ``torch.optim.Optimizer`` subclass
  (called with ``lr=lr``), a ``pyro.optim.PyroOptim`` such as ``pyro.optim.Adam({"lr": 1e-3})``
  or ``pyro.optim.ClippedAdam({...})`` (its constructor and arguments; per-parameter arguments
  become parameter groups), or a ``pyro.optim.PyroLRScheduler`` such as
  ``pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {...}, "gamma": 0.9})``
  (the optimizer and its scheduler, stepped per epoch). :func:`check_lr` refuses an ``lr`` that
  is not a finite number > 0 where the optimizer uses it. :func:`make_schedule` (``"cosine"``:
  :class:`CosineSchedule`, ``"plateau"`` or a factory) is stepped per epoch by
  :func:`step_schedule`; a rollback lowers the learning rates through :func:`scale_lr`, which
  keeps a closed-form schedule from undoing it.
* :func:`run_config`: the settings that identify a run, written into every checkpoint and
  compared on resume (:func:`ppvae.train.checkpoint.same_run`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from pyro.params.param_store import (
    module_from_param_with_module_name,
    normalize_param_name,
    user_param_name,
)

__all__ = [
    "CosineSchedule",
    "LoopSettings",
    "NanPolicy",
    "check_lr",
    "check_optimizer",
    "check_settings",
    "default_adam",
    "make_optimizer",
    "make_schedule",
    "run_config",
    "scale_lr",
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
    progress: bool | None = None  # the epoch bar (ppvae.core.progress: None = on a terminal)
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
    if s.progress is not None and not isinstance(s.progress, bool):
        raise ValueError(f"progress must be True, False or None, got {s.progress!r}")


def check_optimizer(spec, schedule) -> None:
    """Refuse an ``optimizer=`` fit does not accept, or a scheduler given twice, by name."""
    if isinstance(spec, PyroLRScheduler) and schedule is not None:
        raise ValueError("optimizer= is a pyro.optim scheduler, which brings its own learning-"
                         f"rate schedule; do not also pass schedule={schedule!r}")
    if isinstance(spec, PyroOptim):
        clip = spec.pt_clip_args
        if callable(clip) or clip:
            raise ValueError(f"optimizer= has clip_args {clip!r}: fit clips gradients itself, "
                             "pass clip_norm= to fit instead")
        return
    if spec is None or (isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer)):
        return
    if callable(spec) and not isinstance(spec, (type, torch.optim.Optimizer)):
        return
    raise TypeError(
        "optimizer must be None (Adam with lr), a torch.optim.Optimizer subclass (e.g. "
        "torch.optim.SGD, called with lr=lr), a factory params -> torch.optim.Optimizer, a "
        "pyro.optim optimizer (e.g. pyro.optim.Adam({'lr': 1e-3})) or a pyro.optim scheduler "
        "(e.g. pyro.optim.ExponentialLR({'optimizer': torch.optim.Adam, 'optim_args': "
        f"{{'lr': 1e-3}}, 'gamma': 0.9}})), got {spec!r}")


def check_lr(lr, spec) -> None:
    """Refuse an ``lr`` that is not a finite number > 0 where the optimizer uses it, by name.

    fit passes ``lr`` to the default Adam (``spec`` None) and to a ``torch.optim.Optimizer``
    subclass; a factory or a ``pyro.optim`` optimizer brings its own learning rate.
    """
    if spec is not None and not isinstance(spec, type):
        return
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) \
            or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")


def make_optimizer(params: dict[str, torch.Tensor], spec, lr: float
                   ) -> tuple[torch.optim.Optimizer, Any, float]:
    """The optimizer ``spec`` describes over ``params`` (by parameter-store name).

    Returns ``(optimizer, scheduler or None, learning rate)``: the scheduler of a
    ``pyro.optim`` scheduler, and the learning rate a checkpoint records (``lr``, or a
    ``pyro.optim`` optimizer's own).
    """
    check_optimizer(spec, None)
    tensors = list(params.values())
    if spec is None:
        return default_adam(tensors, lr), None, lr
    if isinstance(spec, PyroOptim):
        opt: torch.optim.Optimizer = _pyro_optimizer(spec, params)
        sched = spec.pt_scheduler_constructor(opt, **spec.kwargs) if isinstance(
            spec, PyroLRScheduler) else None
        return opt, sched, float(opt.param_groups[0].get("lr", lr))
    if isinstance(spec, type):  # a torch.optim.Optimizer subclass
        return spec(tensors, lr=lr), None, lr
    opt = spec(tensors)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer factory {spec!r} returned {type(opt).__name__}, not a "
                        "torch.optim.Optimizer")
    return opt, None, lr


def default_adam(tensors: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where every parameter allows it (CPU or CUDA floats).

    The fused kernel updates all parameters in one call: on the CPU, a 784-400-50 VAE's Adam
    step takes 0.51 ms against 1.44 ms for torch's default per-tensor loop (1 thread), a
    quarter of a batch-16 training step. The update is Adam's, up to floating-point rounding.
    """
    fusable = bool(tensors) and all(
        t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return torch.optim.Adam(tensors, lr=lr, fused=True if fusable else None)


def _pyro_optimizer(spec: PyroOptim, params: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    """A ``pyro.optim`` optimizer's torch optimizer over all of ``params`` at once.

    Per-parameter arguments (``optim_args`` a callable of the parameter's name, or of its module
    and parameter names, as Pyro calls it) become one parameter group per distinct argument set.
    """
    args = spec.pt_optim_args
    make: Any = spec.pt_optim_constructor  # an Optimizer subclass (typed as Pyro's union)
    if not callable(args):
        return make(list(params.values()), **args)
    argc = len(inspect.signature(args).parameters)
    groups: dict[str, dict] = {}
    for name, p in params.items():
        d = args(normalize_param_name(name)) if argc == 1 else \
            args(module_from_param_with_module_name(name), user_param_name(name))
        if not isinstance(d, dict):
            raise TypeError(f"optimizer's per-parameter optim_args returned {d!r} for parameter "
                            f"'{name}'; it must return a dict of optimizer arguments")
        groups.setdefault(repr(sorted(d.items())), {**d, "params": []})["params"].append(p)
    return make(list(groups.values()))


class CosineSchedule(torch.optim.lr_scheduler.LRScheduler):
    """``schedule="cosine"``: ``lr(e) = lr0 (1 + cos(pi e / epochs)) / 2`` in closed form.

    ``e`` counts the scheduler's steps (epochs completed) and ``epochs`` is the horizon of the
    current fit call, also after :meth:`load_state_dict`: a run resumed with more epochs anneals
    from where it is to zero at its new end (never back up); ``e >= epochs`` gives 0. ``lr0``
    is each group's base learning rate (``base_lrs``), which :func:`scale_lr` lowers with the
    group's at a rollback. Loads the state of a ``CosineAnnealingLR`` (checkpoints of ppvae
    before this class), whose ``T_max`` and ``eta_min`` it ignores.

    Args:
        optimizer: the optimizer whose groups' learning rates it sets.
        epochs: the horizon (at least 1).
    """

    _STATE = ("base_lrs", "last_epoch", "_step_count", "_last_lr")  # what a load takes

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int) -> None:
        self.epochs = max(int(epochs), 1)
        super().__init__(optimizer)

    def get_lr(self) -> list[Any]:
        """The learning rates at step ``last_epoch`` (the current ones when constructed)."""
        if getattr(self, "_is_initial", False):
            return [g["lr"] for g in self.optimizer.param_groups]
        return self.closed_form()

    def closed_form(self) -> list[Any]:
        """``base_lr (1 + cos(pi e / epochs)) / 2`` per group, ``e = min(last_epoch, epochs)``."""
        e = min(max(self.last_epoch, 0), self.epochs)
        factor = 0.5 * (1.0 + math.cos(math.pi * e / self.epochs))
        return [base * factor for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the step count and base rates; keep this call's horizon and set the rates."""
        super().load_state_dict({k: v for k, v in state_dict.items() if k in self._STATE})
        for g, lr in zip(self.optimizer.param_groups, self.closed_form(), strict=True):
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def make_schedule(spec, optimizer, epochs: int):
    """The learning-rate scheduler ``spec`` names (None: none)."""
    if spec is None:
        return None
    if spec == "cosine":
        return CosineSchedule(optimizer, epochs)
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


def scale_lr(optimizer: torch.optim.Optimizer, scheduler, factor: float) -> None:
    """Multiply every group's learning rate by ``factor`` (a rollback), lastingly.

    A scheduler's ``base_lrs`` are scaled too, so that a closed-form schedule (such as
    :class:`CosineSchedule`, computed from them) keeps the reduction at its next step.
    """
    for g in optimizer.param_groups:
        g["lr"] *= factor
    base = getattr(scheduler, "base_lrs", None)
    if isinstance(base, list) and len(base) == len(optimizer.param_groups):
        scheduler.base_lrs = [b * factor for b in base]


def run_config(s: LoopSettings, *, lr: float, objective: str, seed: int, num_data: int | None,
               device, ranks: dict) -> dict:
    """The run's configuration as a checkpoint records it (JSON types)."""
    return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": lr, "objective": objective,
            "seed": seed, "num_data": num_data, "nan_policy": s.nan.policy,
            "clip_norm": s.clip_norm, "patience": s.patience, "device": str(device),
            "jit": s.jit, **ranks}
