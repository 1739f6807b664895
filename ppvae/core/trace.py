"""The one trace primitive: trace the guide, replay the model on its samples.

Every per-datapoint quantity in ppvae is computed from a pair of Pyro traces made here (the
pattern of Pyro's ``Trace_ELBO._get_trace``, ``pyro/infer/trace_elbo.py``): the guide is traced,
and the model is traced under ``poutine.replay`` so that its latent sites take the guide's
values. Estimators that need several particles per datapoint run both under one outer plate,
:data:`PARTICLE_PLATE` (see :func:`particle_plate`), so that one vectorized trace holds all of
them as a leading dimension ``[S, ..., N, ...]``.

Estimators (log weights, objectives, collapse diagnostics, figures, the potential for MCMC) are
written against these two functions, never against a network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites

__all__ = ["PARTICLE_PLATE", "particle_groups", "particle_plate", "trace_fn", "trace_pair",
           "with_leading"]

PARTICLE_PLATE = "_ppvae_particles"


def particle_plate(fn: Callable, size: int, dim: int, device: torch.device | None = None
                   ) -> Callable:
    """``fn`` run inside an outer plate of ``size`` particles at ``dim``.

    ``dim`` is a negative dim left of every plate of the pair, i.e. ``-(max_plate_nesting + 1)``.
    """

    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, size, dim=dim, device=device):
            return fn(*args, **kwargs)

    return wrapped


def particle_groups(particles: int, vectorized: bool = True) -> list[int | None]:
    """How ``particles`` particles are traced: one plate of all of them, or one trace each.

    A pair that broadcasts over the particle plate (:attr:`PairInfo.vectorized`) gives
    ``[particles]``; one that does not gives ``[None] * particles``: that many traces without the
    particle plate (as Pyro's ``vectorize_particles=False``). Pass each entry as ``particles=`` to
    :func:`trace_fn` / :func:`trace_pair`; a trace made with ``None`` holds one particle, whose
    per-datapoint densities :func:`ppvae.core.contract.per_datapoint` reduces to ``[1, N]``.
    """
    if particles < 1:
        raise ValueError(f"the number of particles must be >= 1, got {particles}")
    return [particles] if vectorized else [None] * particles


def with_leading(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """``value`` with leading size-1 dimensions added until it has ``ndim`` dimensions."""
    return value.reshape((1,) * (ndim - value.dim()) + tuple(value.shape))


def trace_fn(fn: Callable, x: torch.Tensor, kwargs: Mapping[str, Any] | None = None, *,
             particles: int | None = None, particle_dim: int = -2, prune: bool = True) -> Trace:
    """Trace ``fn(x, **kwargs)``, under a particle plate of ``particles`` when given.

    ``prune`` drops the subsample sites Pyro adds for each plate (they carry no density).
    """
    if particles is not None:
        fn = particle_plate(fn, particles, particle_dim, x.device)
    tr = poutine.trace(fn).get_trace(x, **(kwargs or {}))
    return prune_subsample_sites(tr) if prune else tr


def trace_pair(model: Callable, guide: Callable, x: torch.Tensor,
               kwargs: Mapping[str, Any] | None = None, *, particles: int | None = None,
               particle_dim: int = -2, prune: bool = True) -> tuple[Trace, Trace]:
    """(guide trace, model trace replayed on the guide's samples) for data ``x``.

    With ``particles`` both run under one particle plate of that size at ``particle_dim``, so
    every latent and every log density carries a leading ``[S]`` dimension.
    """
    kwargs = kwargs or {}
    if particles is not None:
        guide = particle_plate(guide, particles, particle_dim, x.device)
        model = particle_plate(model, particles, particle_dim, x.device)
    guide_tr = poutine.trace(guide).get_trace(x, **kwargs)
    # replayed before pruning, as Pyro's get_importance_trace does: a subsampling plate of the
    # model then takes the guide's subsample indices
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, **kwargs)
    if prune:
        return prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)
    return guide_tr, model_tr
