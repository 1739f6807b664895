"""The pieces of training state :func:`ppvae.fit` manages around its loop: the parameters a pair
uses, in-memory snapshots for rollback and best-epoch restore, the diagnosis of a non-finite
step, and the held-out ELBO.

* :func:`collect_params` traces one objective evaluation with ``poutine.trace(param_only=True)``
  (as Pyro's ``SVI.step`` does, but once, not every step) and returns the live unconstrained
  parameter tensors by parameter-store name.
* :class:`Snapshot` copies parameters, module buffers and optimizer state, and restores them
  in place.
* :func:`nonfinite_param` names the first non-finite parameter; :func:`first_nonfinite_site`
  the first guide / model site (in execution order) whose log density is non-finite, using the
  per-site log densities of :mod:`ppvae.contract`.
  :func:`describe_failure` writes the message fit reports.
* :func:`heldout_elbo` is the mean per-datapoint ELBO (Kingma and Welling 2014) from
  :func:`ppvae.log_weights`, streamed over rows; :func:`sharded_valid_elbo` splits it over ranks.
* :class:`FitResult` (what fit returns), :func:`make_schedule` (the learning-rate schedules by
  name), :func:`check_settings`, :func:`check_valid`, :func:`unpack_data`,
  :func:`module_buffers`, :func:`rank_seed`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..core.contract import (
    ContractError,
    PairInfo,
    check_pair,
    is_latent,
    is_observed,
    site_log_density,
)
from ..core.weights import log_weights
from ..distributed import process as ddp

__all__ = [
    "FitResult",
    "NonFiniteError",
    "Snapshot",
    "check_settings",
    "check_valid",
    "collect_params",
    "describe_failure",
    "first_nonfinite_site",
    "heldout_elbo",
    "make_schedule",
    "module_buffers",
    "nonfinite_param",
    "params_finite",
    "rank_seed",
    "sharded_valid_elbo",
    "unpack_data",
]


def collect_params(loss_fn) -> dict[str, torch.Tensor]:
    """Run ``loss_fn()`` once under a param-only trace; return ``{name: unconstrained tensor}``."""
    with torch.no_grad(), poutine.trace(param_only=True) as capture:
        loss_fn()
    params: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, site in capture.trace.nodes.items():
        if site["type"] != "param":
            continue
        p = site["value"].unconstrained()
        if id(p) not in seen:
            seen.add(id(p))
            params[name] = p
    if not params:
        raise ValueError("the model and guide have no trainable parameters (no pyro.param, "
                         "pyro.module or PyroModule parameters were used)")
    return params


class Snapshot(NamedTuple):
    """A copy of parameter values, module buffers (running statistics, EMA codebooks) and
    optimizer state, restorable in place."""

    values: list[torch.Tensor]
    optimizer: dict
    buffers: tuple[torch.Tensor, ...] = ()

    @classmethod
    def take(cls, params: dict[str, torch.Tensor], optimizer,
             buffers: Sequence[torch.Tensor] = ()) -> Snapshot:
        with torch.no_grad():
            values = [p.detach().clone() for p in params.values()]
            saved = [b.detach().clone() for b in buffers]
        return cls(values, copy.deepcopy(optimizer.state_dict()), tuple(saved))

    def restore(self, params: dict[str, torch.Tensor], optimizer,
                buffers: Sequence[torch.Tensor] = ()) -> None:
        with torch.no_grad():
            for p, v in zip(params.values(), self.values, strict=True):
                p.copy_(v)
            for b, v in zip(buffers, self.buffers, strict=True):
                b.copy_(v)
        lrs = [g["lr"] for g in optimizer.param_groups]  # keep the current learning rates
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        for g, lr in zip(optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr


def params_finite(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A 0-dim bool tensor (no host sync): are all parameters finite?"""
    return torch.stack([torch.isfinite(p).all() for p in params.values()]).all()


def nonfinite_param(params: dict[str, torch.Tensor]) -> str | None:
    """The name of the first non-finite parameter, or None."""
    return next((name for name, p in params.items() if not torch.isfinite(p).all()), None)


def first_nonfinite_site(model, guide, x: torch.Tensor, kwargs: dict) -> str | None:
    """Describe the first guide / model site (execution order) whose log density is non-finite
    on ``x`` at the current parameters, or None when all are finite."""
    bad_rows = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(-1).nonzero().flatten()
    data_note = (f"; the data have non-finite values in batch rows {bad_rows[:5].tolist()}"
                 if len(bad_rows) else "")
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            guide_tr = prune_subsample_sites(poutine.trace(guide).get_trace(x, **kwargs))
            model_tr = prune_subsample_sites(
                poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, **kwargs))
    except Exception as e:  # the diagnosis must not hide the original problem
        return f"re-running the pair failed ({type(e).__name__}: {e}){data_note}"
    for role, tr, keep in (("guide", guide_tr, is_latent),
                           ("model", model_tr, lambda s: is_latent(s) or is_observed(s))):
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or not keep(site):
                continue
            lp = site_log_density(site)
            if not torch.isfinite(lp).all():
                rows = (~torch.isfinite(lp)).reshape(-1, lp.shape[-1]).any(0).nonzero()
                return (f"first non-finite log density at {role} site '{name}' (batch rows "
                        f"{rows.flatten()[:5].tolist()}){data_note}")
    return None


def describe_failure(step: int, where: str, model, guide, x: torch.Tensor, kwargs: dict,
                     params: dict[str, torch.Tensor], restore, err=None) -> str:
    """The message for a non-finite step: names the first non-finite parameter, calls
    ``restore()`` (back to the last finite state), then re-runs the batch there and names the
    first site with a non-finite log density (or says the update diverged)."""
    bad_param = nonfinite_param(params)
    restore()
    site = first_nonfinite_site(model, guide, x, kwargs)
    msg = f"non-finite {where} at step {step}"
    msg += f" ({type(err).__name__}: {err})" if err is not None else ""
    msg += ": " + (site or "the batch's log densities are finite at the last finite "
                   "parameters, so the update diverged (learning rate too large, or a "
                   "non-finite gradient)")
    if bad_param is not None:
        msg += f"; parameter '{bad_param}' had become non-finite"
    return msg + "; parameters restored to the last finite state"


def heldout_elbo(model, guide, x: torch.Tensor, info: PairInfo, *, num_samples: int = 1,
                 batch_size: int = 1000, batch_kw: dict | None = None,
                 fixed_kw: dict | None = None) -> torch.Tensor:
    """Mean per-datapoint ELBO over the rows of ``x`` (a 0-dim tensor; no host sync)."""
    total = x.new_zeros((), dtype=torch.float64)
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in range(0, x.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            xb = x[rows]
            kw = dict(fixed_kw or {})
            kw.update({k: v[rows] for k, v in (batch_kw or {}).items()})
            lw = log_weights(model, guide, xb, num_samples, info=info._replace(
                num_data=xb.shape[0]), **kw)  # [S, B]
            total = total + lw.mean(0).sum().double()
    return total / x.shape[0]


class NonFiniteError(RuntimeError):
    """Raised internally when a step produced a non-finite loss or parameters."""


class FitResult(NamedTuple):
    """What :func:`fit` did. Lists run over all epochs, including those before a resume."""

    train_objective: list[float]  # per epoch: mean per-datapoint objective (ELBO by default)
    valid_elbo: list[float]  # per epoch: mean per-datapoint validation ELBO (empty: no valid)
    lr: list[float]  # per epoch: learning rate used
    best_epoch: int  # epoch (0-based) with the best validation (else training) value
    epochs: int  # epochs completed
    steps: int  # optimizer steps completed
    wall_time: float  # seconds in this call
    steps_per_second: float  # optimizer steps per second of training time in this call
    stopped: str  # "completed", "early_stopping" or "non_finite"
    message: str  # why it stopped; for non-finite: the step and the offending site
    rollbacks: int  # non-finite steps rolled back

    @property
    def best_value(self) -> float:
        values = self.valid_elbo or self.train_objective
        return values[self.best_epoch] if values else float("nan")


def make_schedule(spec, optimizer, epochs: int):
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


def _as_rows(t, what: str) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or array [N, ...] or a ppvae.data.Dataset, "
                        f"got {type(t).__name__}")
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(f"{what} has no rows (shape {tuple(t.shape)}): it must be [N, ...], "
                         "N >= 1")
    return t


def check_settings(*, epochs, batch_size, check_every, valid_samples, patience, clip_norm,
                   nan_policy, max_rollbacks, rollback_lr_factor) -> None:
    """Refuse fit settings that would train wrongly or not at all, by name (a negative
    ``clip_norm`` would flip the gradient; ``patience=0`` would stop after the first epoch)."""
    ints = [("epochs", epochs, 0), ("batch_size", batch_size, 1), ("check_every", check_every, 1),
            ("valid_samples", valid_samples, 1), ("max_rollbacks", max_rollbacks, 0)]
    for name, v, low in ints + ([("patience", patience, 1)] if patience is not None else []):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    for name, v, top in (("clip_norm", clip_norm, math.inf), ("rollback_lr_factor",
                                                              rollback_lr_factor, 1.0)):
        if v is not None and not (isinstance(v, (int, float)) and 0 < v <= top
                                  and math.isfinite(v)):
            bound = "" if top == math.inf else f" and <= {top}"
            raise ValueError(f"{name} must be a finite number > 0{bound}, got {v!r}")
    if nan_policy not in ("stop", "rollback"):
        raise ValueError(f"nan_policy must be 'stop' or 'rollback', got {nan_policy!r}")


def check_valid(model, guide, valid, fixed_kw, batch_kw, rows) -> None:
    """The contract check on the validation data's first ``rows``; a failure says it is
    ``valid`` that does not fit (its shape, dtype or values), not the training data."""
    try:
        check_pair(model, guide, valid[:rows], **fixed_kw,
                   **{k: v[:rows] for k, v in batch_kw.items()})
    except ContractError as e:
        raise ContractError(f"valid (validation data): {e}") from e


def unpack_data(data, valid, transform):
    """Training and validation tensors (numpy arrays converted) and the transform."""
    if hasattr(data, "train") and hasattr(data, "valid"):  # a ppvae.data.Dataset record
        if transform is None and getattr(data, "binarization", None) == "dynamic":
            from ..data.binarize import dynamic_binarize
            transform = dynamic_binarize
        data, valid = data.train, data.valid if valid is None else valid
    x = _as_rows(data, "data")
    valid = _as_rows(valid, "valid") if valid is not None else None
    return x, valid, transform


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for one rank's draws in one epoch (distinct across ranks and epochs)."""
    return (seed * 1_000_003 + epoch * 8191 + rank * 131_071 + 1) % 2**63


def module_buffers(*modules) -> list[torch.Tensor]:
    """The modules' buffers, each once (a guide is often a submodule of its model)."""
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        if isinstance(m, torch.nn.Module):
            for b in m.buffers():
                seen.setdefault(id(b), b)
    return list(seen.values())


def sharded_valid_elbo(model, guide, valid, info, samples, batch_kw, fixed_kw, world) -> float:
    """Mean validation ELBO; with several ranks each scores its share of the rows."""
    if world == 1:
        return float(heldout_elbo(model, guide, valid, info, num_samples=samples,
                                  batch_kw=batch_kw, fixed_kw=fixed_kw))
    rows = slice(*ddp.shard_bounds(valid.shape[0]))
    total = valid.new_zeros((), dtype=torch.float64)
    if rows.stop > rows.start:
        part = heldout_elbo(model, guide, valid[rows], info, num_samples=samples,
                            batch_kw={k: v[rows] for k, v in batch_kw.items()},
                            fixed_kw=fixed_kw)
        total = part * (rows.stop - rows.start)
    return float(ddp.all_sum(total)) / valid.shape[0]
