"""Training objectives for :func:`ppvae.fit`.

The ELBO, the IWAE bound, beta / KL warm-up wrappers, and every Pyro ELBO:

* :class:`ELBO` — the reparameterized Monte Carlo ELBO of Kingma and Welling (2014), the same
  estimator as Pyro's ``Trace_ELBO`` computed from one guide trace and one replayed model trace,
  with ``num_particles`` vectorized over an outer plate (one trace each when the pair does not
  broadcast, :attr:`ppvae.PairInfo.vectorized`) and no host syncs (no ``.item()``).
* :class:`IWAE` — the importance-weighted bound of Burda, Grosse and Salakhutdinov (2016) built on
  :func:`ppvae.log_weights`: a log-mean-exp over k particles *per datapoint*, then a sum over data.
* :class:`PyroObjective` and :func:`mean_field` (:mod:`ppvae.train.pyro_elbos`): any
  ``pyro.infer`` ELBO, Jit variants included.
* :func:`as_objective` — what fit accepts: these, or a Pyro ELBO instance (wrapped);
  :func:`for_pair` — the objective a pair trains with (``TraceEnum_ELBO`` by default when the
  model enumerates discrete sites).
* :func:`beta_vae` (Higgins et al. 2017) and :func:`kl_warmup` (Bowman et al. 2016; Sønderby et
  al. 2016) scale the latent sites of model *and* guide by beta: ``E[log p(x|z)] - beta KL``.
  Models stay pure, so beta = 1 is the ELBO.

Every objective's ``loss`` keeps the engine's scale contract (:mod:`ppvae.train.scaling`): with
``data_scale = 1 / B`` and ``train_size = N`` (what fit passes) it is minus the mean
per-datapoint objective of the minibatch, global latents counted 1 / N, whatever scale the model
declares (subsampling plates, ``poutine.scale``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO as PyroELBO
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, Normal

from ..core.bounds import logmeanexp
from ..core.contract import PairInfo, is_latent, is_observed
from ..core.trace import particle_plate, trace_pair
from ..core.weights import log_weights
from .pyro_elbos import PyroObjective, mean_field
from .scaling import (
    EngineScale,
    Factor,
    Objective,
    SiteScale,
    WrappedObjective,
    global_factor,
    in_plate,
)
from .speedup.recorder import StepRecorder

__all__ = [
    "ELBO",
    "IWAE",
    "Objective",
    "PyroObjective",
    "ScaledLatents",
    "SiteScale",
    "as_objective",
    "beta_vae",
    "for_pair",
    "in_plate",
    "kl_warmup",
    "mean_field",
]

logger = logging.getLogger("ppvae")


def _only_own_handlers() -> bool:
    """Is every active Pyro handler one of ppvae's site scalings (sample-only)?"""
    return all(type(frame) is SiteScale for frame in _PYRO_STACK)


def _enumeration_refused(objective: Objective, info: PairInfo) -> None:
    if info.enumerated and not objective.sums_out_enumerated:
        raise ValueError(
            f"the model enumerates site(s) {list(info.enumerated)} (infer={{'enumerate': "
            f"'parallel'}}), which {objective.describe()} cannot sum out: train with "
            "objective=pyro.infer.TraceEnum_ELBO() (or leave objective unset)")


@dataclass(frozen=True)
class ELBO(Objective):
    """Reparameterized ELBO (Pyro's ``Trace_ELBO`` estimator), particles vectorized."""

    num_particles: int = 1
    name = "elbo"

    def __post_init__(self):
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0):
        """Minus the ELBO of the minibatch (mean over particles) on the engine's scale."""
        _enumeration_refused(self, info)
        kwargs = kwargs or {}
        p = self.num_particles
        factors = (data_scale, global_factor(data_scale, x.shape[0], train_size), latent_scale)
        groups = [p] if p == 1 or info.vectorized else [1] * p  # one trace per particle
        total = None
        for size in groups:
            term = self._particles(model, guide, x, info, factors, kwargs, size)
            total = term if total is None else total + term
        return total

    def _particles(self, model, guide, x, info: PairInfo, factors: tuple[Factor, Factor, Factor],
                   kwargs: dict, size: int) -> torch.Tensor:
        """Minus the scaled ELBO of ``size`` particles (one trace), divided by num_particles."""
        if size > 1:
            guide = particle_plate(guide, size, info.particle_dim, x.device)
            model = particle_plate(model, size, info.particle_dim, x.device)
        local, global_, latent = factors
        guide_sites: dict[str, Any]  # sample-site messages by name
        model_sites: dict[str, Any]
        if not _only_own_handlers():  # outer handlers must see every message: Pyro's handlers
            with EngineScale(local, global_, latent, plate=info.data_plate):
                guide_tr, model_tr = trace_pair(model, guide, x, kwargs, prune=False)
            guide_sites = {n: s for n, s in guide_tr.nodes.items() if s["type"] == "sample"}
            model_sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample"}
        else:  # the same semantics in one frame (ppvae.recorder)
            with StepRecorder(local, global_, latent, plate=info.data_plate) as rec:
                guide(x, **kwargs)
            guide_sites = rec.sites
            with StepRecorder(local, global_, latent, replay=guide_sites,
                              plate=info.data_plate) as rec:
                model(x, **kwargs)
            model_sites = rec.sites
        terms = _ScaledSum()
        for site in model_sites.values():
            if not site_is_subsample(site) and (is_observed(site) or is_latent(site)):
                terms.add(site, 1.0)
        for name, site in guide_sites.items():
            if site_is_subsample(site):
                continue
            if is_observed(site):
                terms.add(site, -1.0)  # guide factors (as in Pyro's Trace_ELBO)
            elif is_latent(site):
                if not site["fn"].has_rsample:
                    raise ValueError(
                        f"guide site '{name}' ({type(site['fn']).__name__}) has no "
                        "reparameterized sampler; use objective=pyro.infer.TraceGraph_ELBO() "
                        "for score-function gradients"
                    )
                terms.add(site, -1.0)
        return terms.total(-1.0 / self.num_particles)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob_sum(fn: Normal, value: torch.Tensor) -> torch.Tensor:
    """``fn.log_prob(value).sum()`` for a Normal, in fewer autograd nodes than torch's formula."""
    loc, scale = fn.loc, fn.scale
    lp = -0.5 * ((value - loc) / scale).pow(2) - scale.log()  # the broadcast of all three
    return lp.sum() - _HALF_LOG_2PI * lp.numel()


class _ScaledSum:
    """Sum over sites of sign * scale * log density, summed over every dimension.

    Sites with the same numeric scale are added first and multiplied once (fewer autograd nodes
    per step).
    """

    def __init__(self):
        self.groups: dict[float, torch.Tensor] = {}
        self.other: list[torch.Tensor] = []

    def add(self, site, sign: float) -> None:
        fn, scale = site["fn"], site["scale"]
        if site["mask"] is None and isinstance(scale, (int, float)) and not site["args"] \
                and not site["kwargs"]:
            while isinstance(fn, Independent):  # the sum covers its event dims anyway
                fn = fn.base_dist
            lp = _normal_log_prob_sum(fn, site["value"]) if isinstance(fn, Normal) else \
                fn.log_prob(site["value"]).sum()
            prev = self.groups.get(float(scale))
            if prev is None:
                self.groups[float(scale)] = lp if sign > 0 else -lp
            else:
                self.groups[float(scale)] = prev + lp if sign > 0 else prev - lp
            return
        lp = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
        self.other.append(sign * scale_and_mask(lp, scale, site["mask"]).sum())

    def total(self, factor: float):
        out = None
        for scale, lp in self.groups.items():
            term = lp * (factor * scale)
            out = term if out is None else out + term
        for lp in self.other:
            term = lp * factor
            out = term if out is None else out + term
        return out if out is not None else torch.zeros(())


@dataclass(frozen=True)
class IWAE(Objective):
    """IWAE_k bound: per datapoint ``log (1/k) sum_i w_i`` from :func:`ppvae.log_weights`.

    Its log weights use the model's own densities (no scale), so a model's declared scale
    never enters; enumerated discrete sites are summed out per datapoint; it needs every latent
    inside the per-datapoint plate (no global latents).
    """

    k: int = 5
    name = "iwae"
    supports_latent_scale = False
    sums_out_enumerated = True  # ppvae.log_weights sums enumerated sites out per datapoint

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0):
        """Minus the IWAE_k bound summed over the minibatch, times ``data_scale``."""
        _enumeration_refused(self, info)
        if info.globals:
            raise ValueError(f"the IWAE bound is per datapoint, but the pair has global latent "
                             f"site(s) {list(info.globals)}: train it with the ELBO")
        lw = log_weights(model, guide, x, self.k, chunk_size=self.k, info=info,
                         model_kwargs=kwargs, eval_modules=False,
                         validate=None)  # [k, B]: training mode, fit's validation setting
        return -data_scale * logmeanexp(lw, dim=0).sum()


@dataclass(frozen=True)
class ScaledLatents(WrappedObjective):
    """``base`` with every latent site of model and guide scaled by ``beta(step)``."""

    beta: Callable[[int], float]
    label: str = "beta"

    def __post_init__(self):
        if isinstance(self.base, IWAE):
            raise TypeError("beta / KL warm-up scale the KL term of an ELBO; the IWAE bound has "
                            "no separate KL term to scale")
        if not self.base.supports_latent_scale:
            raise TypeError(f"beta / KL warm-up scale the KL term of an ELBO; "
                            f"{self.base.describe()} is not a sum of log densities to scale")

    @property
    def name(self) -> str:  # type: ignore[override]  # read-only here; Objective.name is a default
        """The label and the base objective's name, e.g. ``"beta-elbo"``."""
        return f"{self.label}-{self.base.name}"

    def describe(self) -> str:
        """The label around the base's description, e.g. ``"warmup(elbo)"``."""
        return f"{self.label}({self.base.describe()})"

    def scalars(self, step: int) -> tuple[float, ...]:
        """``beta(step)`` followed by the base objective's scalars."""
        return (float(self.beta(step)), *self.base.scalars(step))

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0, scalars=None):
        """``scalars``: beta (and the base's scalars) as tensors, in place of ``beta(step)``."""
        beta = float(self.beta(step)) if scalars is None else scalars[0]
        extra = {"scalars": scalars[1:]} if scalars is not None and len(scalars) > 1 else {}
        both = beta if isinstance(latent_scale, (int, float)) and latent_scale == 1 \
            else beta * latent_scale
        return self.base.loss(model, guide, x, info=info, data_scale=data_scale,
                              train_size=train_size, step=step, kwargs=kwargs,
                              latent_scale=both, **extra)


def beta_vae(beta: float, base: Objective | None = None) -> ScaledLatents:
    """beta-VAE objective ``E_q[log p(x|z)] - beta KL(q(z|x) || p(z))`` (beta > 0)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return ScaledLatents(base or ELBO(), lambda step: beta, "beta")


def kl_warmup(steps: int, start: float = 0.01, base: Objective | None = None) -> ScaledLatents:
    """KL warm-up: beta rises linearly from ``start`` to 1 over ``steps`` optimizer steps."""
    if steps < 1 or not 0 < start <= 1:
        raise ValueError(f"need steps >= 1 and 0 < start <= 1, got {steps}, {start}")

    def beta(step: int) -> float:
        return min(1.0, start + (1.0 - start) * step / steps)

    return ScaledLatents(base or ELBO(), beta, "warmup")


def as_objective(objective) -> Objective:
    """What :func:`ppvae.fit` trains with.

    ``None`` is :class:`ELBO`, a Pyro ELBO instance (``Trace_ELBO()``, ``TraceGraph_ELBO()``,
    ``RenyiELBO()``, ``JitTrace_ELBO()`` ...) is wrapped in :class:`PyroObjective`; anything else
    is refused.
    """
    if objective is None:
        return ELBO()
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, PyroELBO):
        return PyroObjective(objective)
    if isinstance(objective, type) and issubclass(objective, (Objective, PyroELBO)):
        raise TypeError(f"objective must be an instance, got the class {objective.__name__}: "
                        f"write {objective.__name__}()")
    raise TypeError("objective must be a ppvae objective (ELBO(), IWAE(k), mean_field(), "
                    "beta_vae(beta), kl_warmup(steps)) or a Pyro ELBO instance such as "
                    f"Trace_ELBO() or TraceGraph_ELBO(), got {objective!r}")


def for_pair(objective: Objective, info: PairInfo, *, default: bool = False) -> Objective:
    """The objective ``info``'s pair trains with.

    With ``default`` (no objective given) and model sites enumerated in parallel
    (:attr:`ppvae.PairInfo.enumerated`), Pyro's ``TraceEnum_ELBO`` with the default's particles,
    which sums them out; an objective given that cannot sum them out is refused, naming the
    sites. An IWAE objective is refused for a pair with global latents.
    """
    if info.enumerated and not objective.sums_out_enumerated and default:
        particles = getattr(objective, "num_particles", 1)
        chosen = PyroObjective(TraceEnum_ELBO(num_particles=particles,
                                              vectorize_particles=particles > 1))
        logger.info("fit: the model enumerates %s; training with %s", list(info.enumerated),
                    chosen.describe())
        return chosen
    _enumeration_refused(objective, info)
    if info.globals and isinstance(objective, IWAE):
        raise ValueError(f"the IWAE bound is per datapoint, but the pair has global latent "
                         f"site(s) {list(info.globals)}: train it with the ELBO")
    return objective
