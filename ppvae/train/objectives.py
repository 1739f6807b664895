"""Training objectives for :func:`ppvae.fit`.

The ELBO, its analytic-KL variant, the IWAE bound, and beta / KL warm-up wrappers:

* :class:`ELBO` — the reparameterized Monte Carlo ELBO of Kingma and Welling (2014), the same
  estimator as Pyro's ``Trace_ELBO`` computed from one guide trace and one replayed model trace,
  with ``num_particles`` vectorized over an outer plate and no host syncs (no ``.item()``).
* :func:`mean_field` — Pyro's ``TraceMeanField_ELBO`` (analytic KL where it exists), and
  :class:`PyroObjective` for any other Pyro ELBO (score-function gradients included).
* :class:`IWAE` — the importance-weighted bound of Burda, Grosse and Salakhutdinov (2016) built on
  :func:`ppvae.log_weights`: a log-mean-exp over k particles *per datapoint*, then a sum over data.
* :func:`as_objective` — what fit accepts: these, or a Pyro ELBO instance (wrapped).
* :func:`beta_vae` (Higgins et al. 2017) and :func:`kl_warmup` (Bowman et al. 2016; Sønderby et
  al. 2016) scale the latent sites of model *and* guide by beta with a site-filtered
  ``poutine.scale``: ``E[log p(x|z)] - beta KL``. Models stay pure, so beta = 1 is the ELBO.

Every objective's ``loss(model, guide, x, *, info, data_scale, step, kwargs)`` returns a scalar
to minimize: minus the objective summed over the minibatch and multiplied by ``data_scale`` =
N_train / B, so that its gradient is unbiased for the full data set. Only sites inside the
``"data"`` plate are scaled (global latents, if any, count once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO as PyroELBO
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, Normal

from ..core.bounds import logmeanexp
from ..core.contract import PairInfo, is_latent, is_observed
from ..core.trace import particle_plate, trace_pair
from ..core.weights import log_weights
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
    "in_plate",
    "kl_warmup",
    "mean_field",
]



class SiteScale(ScaleMessenger):
    """``poutine.scale`` restricted to the sample sites for which ``which(msg)`` is true."""

    def __init__(self, scale: float, which: Callable[[dict], bool]):
        super().__init__(scale)
        self.which = which

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and self.which(msg):
            super()._process_message(msg)


def _only_own_handlers() -> bool:
    """Is every active Pyro handler one of this module's site scalings (sample-only)?"""
    return all(type(frame) is SiteScale for frame in _PYRO_STACK)


def in_plate(plate: str) -> Callable[[dict], bool]:
    """A site filter: is the message's site inside the plate named ``plate``?"""
    def inside(msg) -> bool:
        return any(f.name == plate for f in msg["cond_indep_stack"])
    return inside


def _latent(msg) -> bool:
    return not msg["is_observed"]


class Objective:
    """Base class: ``loss`` returns the scaled negative objective of one minibatch."""

    name = "objective"

    def loss(self, model, guide, x: torch.Tensor, *, info: PairInfo, data_scale: float = 1.0,
             step: int = 0, kwargs: dict | None = None) -> torch.Tensor:
        """Minus the objective of minibatch ``x`` times ``data_scale``: a scalar to minimize."""
        raise NotImplementedError

    def scalars(self, step: int) -> tuple[float, ...]:
        """The objective's quantities that change with ``step`` (default none).

        ``fit(jit=True)`` feeds them to its captured graph as inputs, in this order, through
        ``loss(..., scalars=...)``; an objective that declares any must accept that argument.
        """
        return ()


@dataclass(frozen=True)
class ELBO(Objective):
    """Reparameterized ELBO (Pyro's ``Trace_ELBO`` estimator), particles vectorized."""

    num_particles: int = 1
    name = "elbo"

    def __post_init__(self):
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")

    def loss(self, model, guide, x, *, info, data_scale=1.0, step=0, kwargs=None):
        """Minus the ELBO summed over the minibatch (mean over particles) times ``data_scale``."""
        kwargs = kwargs or {}
        p = self.num_particles
        if p > 1:
            guide = particle_plate(guide, p, info.particle_dim, x.device)
            model = particle_plate(model, p, info.particle_dim, x.device)
        if not _only_own_handlers():  # outer handlers must see every message: Pyro's handlers
            with SiteScale(data_scale, in_plate(info.data_plate)):
                guide_tr, model_tr = trace_pair(model, guide, x, kwargs, prune=False)
            guide_sites = {n: s for n, s in guide_tr.nodes.items() if s["type"] == "sample"}
            model_sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample"}
        else:  # the same semantics in one frame (ppvae.recorder)
            with StepRecorder(data_scale, plate=info.data_plate) as rec:
                guide(x, **kwargs)
            guide_sites = rec.sites
            with StepRecorder(data_scale, replay=guide_sites, plate=info.data_plate) as rec:
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
                        "reparameterized sampler; use PyroObjective(pyro.infer.Trace_ELBO()) "
                        "for score-function gradients"
                    )
                terms.add(site, -1.0)
        return terms.total(-1.0 / p)


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
class PyroObjective(Objective):
    """Any Pyro ELBO through its ``differentiable_loss``.

    ``Trace_ELBO``, ``TraceGraph_ELBO``, ``TraceMeanField_ELBO`` ... Slower than :class:`ELBO`
    (Pyro syncs to the host per site).
    """

    elbo: PyroELBO
    name = "pyro"

    def loss(self, model, guide, x, *, info, data_scale=1.0, step=0, kwargs=None):
        """The Pyro ELBO's ``differentiable_loss``, data-plate sites scaled by ``data_scale``."""
        vectorized = self.elbo.vectorize_particles and self.elbo.num_particles > 1
        want = info.max_plate_nesting + int(vectorized)
        if self.elbo.max_plate_nesting == float("inf") or self.elbo.max_plate_nesting < want:
            self.elbo.max_plate_nesting = want
        with SiteScale(data_scale, in_plate(info.data_plate)):
            return self.elbo.differentiable_loss(model, guide, x, **(kwargs or {}))


def mean_field(num_particles: int = 1) -> PyroObjective:
    """Pyro's ``TraceMeanField_ELBO``: analytic KL(q || p) for latents where it is known."""
    return PyroObjective(TraceMeanField_ELBO(num_particles=num_particles,
                                             vectorize_particles=num_particles > 1))


@dataclass(frozen=True)
class IWAE(Objective):
    """IWAE_k bound: per datapoint ``log (1/k) sum_i w_i`` from :func:`ppvae.log_weights`."""

    k: int = 5
    name = "iwae"

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def loss(self, model, guide, x, *, info, data_scale=1.0, step=0, kwargs=None):
        """Minus the IWAE_k bound summed over the minibatch, times ``data_scale``."""
        lw = log_weights(model, guide, x, self.k, chunk_size=self.k, info=info,
                         model_kwargs=kwargs, eval_modules=False)  # [k, B]: training mode
        return -data_scale * logmeanexp(lw, dim=0).sum()


@dataclass(frozen=True)
class ScaledLatents(Objective):
    """``base`` with every latent site of model and guide scaled by ``beta(step)``."""

    base: Objective
    beta: Callable[[int], float]
    label: str = "beta"

    def __post_init__(self):
        if isinstance(self.base, IWAE):
            raise TypeError("beta / KL warm-up scale the KL term of an ELBO; the IWAE bound has "
                            "no separate KL term to scale")

    @property
    def name(self) -> str:  # type: ignore[override]  # read-only here; Objective.name is a default
        """The label and the base objective's name, e.g. ``"beta-elbo"``."""
        return f"{self.label}-{self.base.name}"

    def scalars(self, step: int) -> tuple[float, ...]:
        """``beta(step)`` followed by the base objective's scalars."""
        return (float(self.beta(step)), *self.base.scalars(step))

    def loss(self, model, guide, x, *, info, data_scale=1.0, step=0, kwargs=None, scalars=None):
        """``scalars``: beta (and the base's scalars) as tensors, in place of ``beta(step)``."""
        beta = float(self.beta(step)) if scalars is None else scalars[0]
        extra = {"scalars": scalars[1:]} if scalars is not None and len(scalars) > 1 else {}
        with SiteScale(beta, _latent):
            return self.base.loss(model, guide, x, info=info, data_scale=data_scale, step=step,
                                  kwargs=kwargs, **extra)


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

    ``None`` is :class:`ELBO`, a Pyro ELBO instance (``Trace_ELBO()`` ...) is wrapped in
    :class:`PyroObjective`; anything else is refused.
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
                    f"Trace_ELBO(), got {objective!r}")
