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
* :func:`heldout_elbo` is the mean per-datapoint ELBO (Kingma and Welling 2014) from
  :func:`ppvae.log_weights`, streamed over rows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from .contract import PairInfo, is_latent, is_observed, site_log_density
from .weights import log_weights

__all__ = [
    "Snapshot",
    "collect_params",
    "first_nonfinite_site",
    "heldout_elbo",
    "nonfinite_param",
    "params_finite",
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
