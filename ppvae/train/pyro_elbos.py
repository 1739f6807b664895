"""Every ``pyro.infer`` ELBO as a :func:`ppvae.fit` objective, scaled per datapoint.

:class:`PyroObjective` wraps a Pyro ELBO instance and gives fit what it needs from it: a loss
tensor whose gradient is the ELBO's gradient estimate, on the engine's scale
(:mod:`ppvae.train.scaling`). Model and guide are handed to the ELBO wrapped in
:class:`~ppvae.train.scaling.EngineScale` (per-datapoint sites scale 1, global sites B / N,
latent sites beta), and the ELBO's loss is multiplied by ``data_scale`` outside it. That order
keeps objectives that are not linear in the log densities right: the Rényi bound (Li and Turner
2016) takes its log-mean-exp over particles of each datapoint's unscaled log weights, as in
``RenyiELBO.loss(model, guide, x) / N``.

How each ELBO gives its gradient:

* ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` (model sites enumerated in parallel
  are summed out), ``Trace_MMD`` (Zhao et al. 2017) and their Jit variants have
  ``differentiable_loss``: a tensor fit back-propagates.
* ``TraceGraph_ELBO`` / ``JitTraceGraph_ELBO`` (score-function gradients with Rao-Blackwellization
  and baselines, Schulman et al. 2015; Mnih and Gregor 2014), ``RenyiELBO`` and
  ``TraceTailAdaptive_ELBO`` (Wang et al. 2018) have only ``loss_and_grads``, which calls
  ``backward`` itself. Their gradients are taken from the parameters right after it and handed
  back through a loss tensor whose backward returns them (:class:`GivenGradients`), so fit's own
  step (gradient clipping, the NaN rollback, data-parallel averaging) applies unchanged.
  ``TraceTailAdaptive_ELBO`` computes no loss value; the value fit reports for it is the plain
  ELBO of the same particles.

The ELBO is copied per (model, guide) pair, never mutated: ``max_plate_nesting`` is set from
:attr:`ppvae.PairInfo.max_plate_nesting` (+1 when particles are vectorized),
``vectorize_particles`` is switched off for a pair that does not broadcast over a particle
dimension (:attr:`ppvae.PairInfo.vectorized`), and a Jit ELBO ignores ``torch.jit`` tracer
warnings. A Jit ELBO compiles once per minibatch shape: tensors reach the compiled function as
positional arguments (minibatch, per-datapoint keyword tensors, beta), the shape and the global
factor B / N as part of its cache key, so a short last minibatch gets its own graph instead of a
stale one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO as PyroELBO
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_MMD,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
    TraceTailAdaptive_ELBO,
)

from ..core.contract import PairInfo
from .scaling import EngineScale, Factor, Objective, global_factor

__all__ = ["GivenGradients", "PyroObjective", "mean_field", "pyro_elbo_gradients"]

_JIT = (JitTrace_ELBO, JitTraceGraph_ELBO, JitTraceEnum_ELBO, JitTraceMeanField_ELBO)
_NOT_LINEAR = (RenyiELBO, TraceTailAdaptive_ELBO, Trace_MMD)  # beta scaling means nothing there
_JIT_CACHES = ("_loss_and_surrogate_loss", "_jit_loss_and_surrogate_loss", "_differentiable_loss")


def pyro_elbo_gradients(elbo: PyroELBO) -> str:
    """How a Pyro ELBO gives its gradient: ``"differentiable_loss"`` or ``"loss_and_grads"``."""
    return "differentiable_loss" if hasattr(elbo, "differentiable_loss") and not isinstance(
        elbo, TraceTailAdaptive_ELBO) else "loss_and_grads"


class GivenGradients(torch.autograd.Function):
    """A loss whose backward hands given gradients to given parameters.

    ``apply(value, *params, *grads)`` returns ``value``; its backward gives each parameter its
    gradient times the incoming gradient.
    """

    @staticmethod
    def forward(ctx, value, *tensors):
        """Keep the gradients (the second half of ``tensors``); return ``value``."""
        ctx.save_for_backward(*tensors[len(tensors) // 2:])
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out):
        """The kept gradients times ``grad_out``, one per parameter."""
        grads = ctx.saved_tensors
        return (None, *(g * grad_out for g in grads), *(None for _ in grads))


def _gradients_of(run: Callable[[], float], device) -> tuple[torch.Tensor, list, list]:
    """Run ``run`` (which calls ``backward``); return its value and the parameters' gradients.

    The parameters' ``.grad`` are left as they were before.
    """
    store = pyro.get_param_store()
    before = dict(store.named_parameters())
    saved = {name: p.grad for name, p in before.items()}
    for p in before.values():
        p.grad = None
    try:
        with torch.enable_grad():
            value = run()
        params, grads = [], []
        for _name, p in store.named_parameters():
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
    finally:
        for name, p in store.named_parameters():
            p.grad = saved.get(name)
    return torch.as_tensor(float(value), device=device), params, grads


class _Call:
    """A model or guide as the engine hands it to a Pyro ELBO.

    Called as ``(x, *tensors, _ppvae=(names, global factor, has beta, shape), **static)``:
    tensor keyword arguments (and beta) arrive positionally, as a Jit ELBO needs them; the
    function runs under :class:`EngineScale`, recording its sample sites when asked.
    """

    def __init__(self, fn, plate: str):
        self.fn, self.plate = fn, plate
        self.record: list | None = None

    def __call__(self, x, *tensors, _ppvae, **static):
        names, global_, has_beta, _shape = _ppvae
        kw = dict(zip(names, tensors[:len(names)], strict=True))
        beta = tensors[len(names)] if has_beta else 1.0
        with EngineScale(1.0, global_, beta, self.plate, record=self.record):
            return self.fn(x, **static, **kw)


@dataclass
class _Run:
    elbo: PyroELBO
    model: _Call
    guide: _Call


@dataclass(frozen=True)
class PyroObjective(Objective):
    """Any ``pyro.infer`` ELBO instance as fit's objective, per datapoint (module docstring).

    The ELBO is copied, not changed; its ``num_particles``, ``vectorize_particles`` (when the pair
    broadcasts), ``alpha``, kernels and the like are kept.
    """

    elbo: PyroELBO
    runs: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    name = "pyro"

    @property
    def supports_latent_scale(self) -> bool:  # type: ignore[override]  # per ELBO here
        """False for the Rényi, tail-adaptive and MMD objectives (not sums of log densities)."""
        return not isinstance(self.elbo, _NOT_LINEAR)

    @property
    def sums_out_enumerated(self) -> bool:  # type: ignore[override]  # per ELBO here
        """True for ``TraceEnum_ELBO`` and ``JitTraceEnum_ELBO``."""
        return isinstance(self.elbo, TraceEnum_ELBO)

    def describe(self) -> str:
        """The ELBO's class and particles, e.g. ``"TraceEnum_ELBO(num_particles=1)"``."""
        e = self.elbo
        vec = ", vectorized" if e.vectorize_particles and e.num_particles > 1 else ""
        return f"{type(e).__name__}(num_particles={e.num_particles}{vec})"

    def jit_capturable(self) -> str | None:
        """Why ``fit(jit=True)`` cannot capture this ELBO, or None."""
        if isinstance(self.elbo, _JIT):
            return f"{type(self.elbo).__name__} compiles itself with torch.jit"
        if pyro_elbo_gradients(self.elbo) == "loss_and_grads":
            return f"{type(self.elbo).__name__} computes its gradients itself (loss_and_grads)"
        return None

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0):
        """The ELBO's loss of minibatch ``x`` on the engine's scale (see the module docstring)."""
        run = self.run_for(model, guide, info, latent_scale)
        kwargs = kwargs or {}
        names = tuple(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        static = {k: v for k, v in kwargs.items() if k not in names}
        has_beta = not (isinstance(latent_scale, (int, float)) and latent_scale == 1)
        beta = (torch.as_tensor(latent_scale, device=x.device, dtype=x.dtype if
                                x.is_floating_point() else None),) if has_beta else ()
        args = (x, *(kwargs[k] for k in names), *beta)
        static["_ppvae"] = (names, global_factor(1.0, x.shape[0], train_size), has_beta,
                            tuple(x.shape))
        elbo: Any = run.elbo  # the subclasses have differentiable_loss or loss_and_grads
        if pyro_elbo_gradients(elbo) == "differentiable_loss":
            return elbo.differentiable_loss(run.model, run.guide, *args, **static) * data_scale
        sites: tuple[list, list] | None = ([], []) if isinstance(
            elbo, TraceTailAdaptive_ELBO) else None
        run.model.record, run.guide.record = sites if sites is not None else (None, None)
        value, params, grads = _gradients_of(
            lambda: elbo.loss_and_grads(run.model, run.guide, *args, **static), x.device)
        if sites is not None:  # no loss value from the tail-adaptive ELBO: its particles' ELBO
            value = _plain_loss(*sites, elbo.num_particles)
        run.model.record = run.guide.record = None
        return GivenGradients.apply(value.detach(), *params, *grads) * data_scale

    def run_for(self, model, guide, info: PairInfo, latent_scale: Factor = 1.0) -> _Run:
        """The ELBO copy and wrapped pair for ``(model, guide)`` (made once, then reused)."""
        self.check_pair_info(info, latent_scale)
        vectorize = bool(self.elbo.vectorize_particles and info.vectorized)
        key = (_identity(model), _identity(guide), info.data_plate, info.max_plate_nesting,
               vectorize)
        run = self.runs.get(key)
        if run is None:
            elbo = copy.copy(self.elbo)
            for attr in _JIT_CACHES:  # a Jit ELBO compiles anew for this pair
                elbo.__dict__.pop(attr, None)
            elbo.vectorize_particles = vectorize
            want = info.max_plate_nesting + int(vectorize and elbo.num_particles > 1)
            have = elbo.max_plate_nesting
            elbo.max_plate_nesting = want if have == float("inf") else max(int(have), want)
            if isinstance(elbo, _JIT):
                elbo.ignore_jit_warnings = True
            run = self.runs[key] = _Run(elbo, _Call(model, info.data_plate),
                                        _Call(guide, info.data_plate))
        return run

    def check_pair_info(self, info: PairInfo, latent_scale: Factor = 1.0) -> None:
        """Refuse what this ELBO cannot do for the pair, saying what would."""
        name = type(self.elbo).__name__
        if isinstance(self.elbo, TraceTailAdaptive_ELBO) and not (
                self.elbo.vectorize_particles and info.vectorized):
            raise ValueError(
                f"{name} needs vectorize_particles=True and a pair that broadcasts over a "
                "leading particle dimension" + ("" if info.vectorized else
                                                " (this pair does not: PairInfo.vectorized)"))
        if not isinstance(latent_scale, torch.Tensor) and latent_scale != 1 and (
                not self.supports_latent_scale or info.enumerated):
            raise ValueError(f"{name} cannot scale latent sites by beta" + (
                f" while enumerating {list(info.enumerated)}" if info.enumerated else ""))


def _identity(fn) -> tuple[int, ...]:
    """What stays the same across calls: a bound method's object and function, else ``fn``.

    ``vae.model`` is a new bound-method object at each access.
    """
    owner, func = getattr(fn, "__self__", None), getattr(fn, "__func__", None)
    return (id(owner), id(func)) if owner is not None and func is not None else (id(fn),)


def _plain_loss(model_sites: list, guide_sites: list, particles: int) -> torch.Tensor:
    """Minus the ELBO of recorded sites (Trace_ELBO's value), averaged over particles."""
    total = None
    for sign, sites in ((-1.0, model_sites), (1.0, guide_sites)):
        for msg in sites:
            if msg["type"] != "sample" or msg["infer"].get("_deterministic"):
                continue
            with torch.no_grad():
                lp = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
                term = sign * scale_and_mask(lp, msg["scale"], msg["mask"]).sum()
            total = term if total is None else total + term
    return (total if total is not None else torch.zeros(())) / particles


def mean_field(num_particles: int = 1) -> PyroObjective:
    """Pyro's ``TraceMeanField_ELBO``: analytic KL(q || p) for latents where it is known."""
    return PyroObjective(TraceMeanField_ELBO(num_particles=num_particles,
                                             vectorize_particles=num_particles > 1))
