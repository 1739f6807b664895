"""The tensors :func:`ppvae.fit` trains and restores.

The pair's parameters, the modules' buffers, and in-memory snapshots of both (with the optimizer
state) for rollback and best-epoch restore:

* :func:`collect_params` traces one objective evaluation with ``poutine.trace(param_only=True)``
  (as Pyro's ``SVI.step`` does, but once, not every step) and returns the live unconstrained
  parameter tensors by parameter-store name. Gradients stay enabled there: objectives that
  differentiate inside (``TraceEnum_ELBO`` checks its loss is differentiable, ``TraceGraph_ELBO``
  calls ``backward``) run as in a training step, and a Jit ELBO compiles a graph with gradients.
* :func:`module_buffers`: the buffers (running statistics, EMA codebooks) of model and guide,
  which a rollback restores with the parameters.
* :class:`Snapshot` copies parameter values, module buffers and optimizer state (or not: the
  best epoch's snapshot needs none), and restores them in place (keeping the current learning
  rates).
* :func:`params_finite` (a device tensor, no host sync) and :func:`nonfinite_param` (the name
  of the first non-finite parameter) check the parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import pyro
import torch
from pyro import poutine

__all__ = [
    "Snapshot",
    "collect_params",
    "module_buffers",
    "nonfinite_param",
    "params_finite",
]


def _shadowed(trace) -> list[str]:
    """Store names whose entry is not the module parameter ``pyro.module`` registered there.

    ``pyro.module(name, m)`` calls ``pyro.param(f"{name}$$${p}", m.p)``; when the store already
    holds that name (an earlier model with the same module names, in the same process), Pyro
    returns the old tensor and the module keeps computing with its own: the optimizer would then
    train the stale tensor (no gradient) and leave the module unchanged.
    """
    names = []
    for name, site in trace.nodes.items():
        init = site["args"][1] if site["type"] == "param" and len(site["args"]) > 1 else None
        if isinstance(init, torch.nn.Parameter) and site["value"] is not None \
                and site["value"]._cdata != init._cdata:
            names.append(name)
    return names


def collect_params(loss_fn) -> dict[str, torch.Tensor]:
    """Run ``loss_fn()`` once under a param-only trace; return ``{name: unconstrained tensor}``.

    Parameter-store entries left by an earlier model under this pair's module parameter names
    (:func:`_shadowed`) are dropped first, so the pair trains its own modules.
    """
    with torch.enable_grad(), poutine.trace(param_only=True) as capture:
        loss_fn()
    stale = _shadowed(capture.trace)
    if stale:
        store = pyro.get_param_store()
        for name in stale:
            del store[name]
        with torch.enable_grad(), poutine.trace(param_only=True) as capture:
            loss_fn()
    params: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, site in capture.trace.nodes.items():
        if site["type"] != "param":
            continue
        assert site["value"] is not None  # a param site's value is the store's parameter
        p = site["value"].unconstrained()
        if id(p) not in seen:
            seen.add(id(p))
            params[name] = p
    if not params:
        raise ValueError("the model and guide have no trainable parameters (no pyro.param, "
                         "pyro.module or PyroModule parameters were used)")
    return params


def module_buffers(*modules) -> list[torch.Tensor]:
    """The modules' buffers, each once (a guide is often a submodule of its model)."""
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        if isinstance(m, torch.nn.Module):
            for b in m.buffers():
                seen.setdefault(id(b), b)
    return list(seen.values())


class Snapshot(NamedTuple):
    """A copy of parameter values, module buffers and optimizer state, restorable in place.

    The buffers are running statistics, EMA codebooks and the like.
    """

    values: list[torch.Tensor]
    optimizer: dict | None  # None: the optimizer is left as it is on restore
    buffers: tuple[torch.Tensor, ...] = ()

    @classmethod
    def take(cls, params: dict[str, torch.Tensor], optimizer,
             buffers: Sequence[torch.Tensor] = ()) -> Snapshot:
        """Copy the parameters' values, the optimizer state (None: none) and the buffers."""
        with torch.no_grad():
            values = [p.detach().clone() for p in params.values()]
            saved = [b.detach().clone() for b in buffers]
        state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        return cls(values, state, tuple(saved))

    @classmethod
    def of(cls, saved: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
           buffers: Sequence[torch.Tensor], like: Sequence[torch.Tensor] = ()) -> Snapshot:
        """A snapshot without optimizer state of values ``saved`` by parameter name.

        Each value and buffer moved to its live tensor's (``params``, ``like``) device and dtype.
        """
        with torch.no_grad():
            values = [saved[n].to(device=p.device, dtype=p.dtype).clone()
                      for n, p in params.items()]
            bufs = [b.to(device=live.device, dtype=live.dtype).clone()
                    for b, live in zip(buffers, like, strict=True)]
        return cls(values, None, tuple(bufs))

    def restore(self, params: dict[str, torch.Tensor], optimizer,
                buffers: Sequence[torch.Tensor] = ()) -> None:
        """Copy the saved values back in place, keeping the optimizer's current learning rates.

        A snapshot without optimizer state leaves the optimizer as it is.
        """
        with torch.no_grad():
            for p, v in zip(params.values(), self.values, strict=True):
                p.copy_(v)
            for b, v in zip(buffers, self.buffers, strict=True):
                b.copy_(v)
        if self.optimizer is None:
            return
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
