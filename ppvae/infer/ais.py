"""Annealed importance sampling (Neal 2001) for per-datapoint log p(x), with HMC transitions.

Along the geometric path f_beta(z) = f_0(z)^(1 - beta) p(x_n, z)^beta from the prior (or a
guide) f_0 to the unnormalized posterior, with 0 = beta_0 < ... < beta_T = 1, each of C chains
per datapoint carries the log weight

    log w = sum_t (beta_t - beta_{t-1}) [log p(x_n, z_{t-1}) - log f_0(z_{t-1})],

z_t an HMC transition leaving f_{beta_t} invariant. ``E[w] = p(x_n)``, so
``log mean_c w_c`` is a stochastic lower bound on log p(x_n) (Jensen) and converges to it as T
grows (Wu, Burda, Salakhutdinov and Grosse 2017 for decoder-based models). The schedule is
sigmoidal by default (Grosse, Ghahramani and Adams 2015). Every chain's step size moves towards
a target acceptance rate after each transition (as in Wu et al. 2017) in a short pilot run; the
real run uses the pilot's per-datapoint step-size schedule, fixed, so its transition kernels do
not depend on its own chains' states and E[w] = p(x) holds exactly (online adaptation, which
measurably biases reverse AIS, is available with ``pilot_chains=0``). All [C, N] chains
are one tensor; the log density comes from the model's trace (:class:`ppvae.potential.Potential`),
so any model keeping the contract works. The result has ``per_datapoint`` and ``stderr`` like
:class:`ppvae.Bound`, so the gap report can use it as its log p(x).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..core.bounds import delta_stderr, logmeanexp
from ..core.estimate import record_mean, record_mean_stderr
from ..core.modes import evaluates
from ..core.potential import Potential
from .hmc import hmc_step

__all__ = [
    "AISResult",
    "Annealed",
    "ais",
    "ais_log_px",
    "anneal",
    "log_mean_weight",
    "pilot_step_sizes",
    "schedule",
]


def schedule(num_steps: int, kind: str = "sigmoid", *, delta: float = 4.0,
             dtype=torch.float64, device=None) -> torch.Tensor:
    """Inverse temperatures ``[num_steps + 1]`` from 0 to 1: "sigmoid" or "linear"."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=dtype, device=device)
    if kind == "linear":
        return t
    if kind != "sigmoid":
        raise ValueError(f"schedule kind must be 'sigmoid' or 'linear', got {kind!r}")
    s = torch.sigmoid(delta * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


class AISResult(NamedTuple):
    """Per-datapoint AIS estimates of log p(x) (or, reversed, of -log p(x))."""

    per_datapoint: torch.Tensor  # [N] log mean_c w_c
    stderr: torch.Tensor  # [N] delta-method standard error from the spread across chains
    log_weights: torch.Tensor  # [C, N]
    accept_rate: torch.Tensor  # [C, N] mean acceptance probability over the transitions
    step_size: torch.Tensor  # [C, N] final step sizes
    samples: dict[str, torch.Tensor]  # final states, site -> [C, *mid, N, *event]
    num_steps: int  # intermediate distributions T

    @property
    def name(self) -> str:
        """The estimator's name, ``"ais"`` (a :class:`ppvae.Bound`'s: ``"elbo"``, ``"iwae"``)."""
        return "ais"

    @property
    def mean(self) -> float:
        """Average of ``per_datapoint`` over datapoints."""
        return record_mean(self)

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (independent errors across datapoints)."""
        return record_mean_stderr(self)

    def __repr__(self) -> str:
        c, n = self.log_weights.shape
        return (f"AISResult(log p(x): mean {self.mean:.4f} ± {self.mean_stderr:.4f} over {n} "
                f"datapoints, {c} chains, {self.num_steps} steps, acceptance "
                f"{float(self.accept_rate.mean()):.2f})")


class Annealed(NamedTuple):
    """The end of one annealing run: final log weights, states, acceptance and step sizes."""
    log_w: torch.Tensor  # [C, N]
    u: torch.Tensor  # [C, N, D] final states
    accept_rate: torch.Tensor  # [C, N]
    step_sizes: torch.Tensor  # [T, C, N] the step size of every transition


def anneal(pot: Potential, u: torch.Tensor, betas: torch.Tensor, *, num_leapfrog: int = 10,
           step_size: float = 0.1, target_accept: float = 0.65, adapt_rate: float = 0.05,
           step_sizes: torch.Tensor | None = None) -> Annealed:
    """Run AIS from ``u [C, N, D]`` (a draw from f_{betas[0]}) along ``betas``.

    ``betas`` may decrease (reverse AIS for BDMC). With ``step_sizes [T, C or 1, N]`` the
    transitions use that fixed schedule; otherwise each chain's log step size starts at
    ``step_size`` and moves by ``adapt_rate * (accept - target_accept)`` after every
    transition (online adaptation: cheap, but the kernels then depend on the chain's past, which
    biases the estimate slightly; :func:`ais` adapts in a pilot run instead).
    """
    betas = betas.to(dtype=u.dtype, device=u.device)
    tm = pot.terms(u)
    li, ld, gi, gd = tm.log_init, tm.log_diff, tm.grad_init, tm.grad_diff
    log_w = torch.zeros_like(li)  # [C, N]
    eps = torch.full_like(li, step_size)  # [C, N]
    inv_mass = torch.ones_like(u)
    acc_sum, trace = torch.zeros_like(li), []
    for t in range(1, len(betas)):
        beta = betas[t]
        log_w = log_w + (beta - betas[t - 1]) * ld
        if step_sizes is not None:
            eps = step_sizes[t - 1].expand_as(li)

        def fn(q, beta=beta):
            tq = pot.terms(q)
            return (tq.log_init + beta * tq.log_diff, tq.grad_init + beta * tq.grad_diff,
                    (tq.log_init, tq.log_diff, tq.grad_init, tq.grad_diff))

        u, _, _, (li, ld, gi, gd), acc = hmc_step(u, li + beta * ld, gi + beta * gd,
                                                  (li, ld, gi, gd), fn, eps, num_leapfrog,
                                                  inv_mass)
        acc_sum = acc_sum + acc
        trace.append(eps)
        if step_sizes is None:
            eps = eps * torch.exp(adapt_rate * (acc - target_accept))
    return Annealed(log_w, u, acc_sum / max(len(betas) - 1, 1), torch.stack(trace))


def pilot_step_sizes(pot: Potential, betas: torch.Tensor, num_chains: int, **opts) -> torch.Tensor:
    """Per-datapoint step-size schedule ``[T, 1, N]`` from a pilot AIS run.

    The pilot adapts each chain online; the schedule is the geometric mean over its chains.
    """
    pilot = anneal(pot, pot.sample_init(num_chains), betas, **opts)
    return pilot.step_sizes.log().mean(1, keepdim=True).exp()


def log_mean_weight(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log mean_c w_c ``[N]``, its delta-method s.e.) from log weights ``[C, N]``."""
    c = log_w.shape[0]
    est = logmeanexp(log_w, dim=0)  # [N]
    se = delta_stderr(est + math.log(c), torch.logsumexp(2 * log_w, 0), c)
    return est, se


@evaluates
def ais(model, x: torch.Tensor, *, num_steps: int = 500, num_chains: int = 16,
        guide=None, kind: str = "sigmoid", num_leapfrog: int = 10, step_size: float = 0.1,
        target_accept: float = 0.65, pilot_chains: int = 4,
        model_kwargs: Mapping[str, Any] | None = None) -> AISResult:
    """AIS estimate of log p(x_n) for every datapoint of ``x``.

    Args:
        model: a model keeping the ppvae contract (continuous latents).
        x: data ``[N, ...]``; computations follow its device and dtype.
        num_steps: intermediate distributions T (the schedule has T + 1 temperatures).
        num_chains: independent AIS chains per datapoint (C).
        guide: initial distribution instead of the prior (a guide keeping the contract).
        kind: "sigmoid" or "linear" schedule.
        num_leapfrog: leapfrog steps per HMC transition.
        step_size: initial HMC step size, before adaptation.
        target_accept: acceptance rate the step-size adaptation aims at.
        pilot_chains: chains of a pilot run whose per-chain adapted step sizes (averaged per
            datapoint) fix the schedule of the real run, so that its kernels do not depend on
            its own chains and the estimate stays unbiased; 0 adapts online in the run itself.
        model_kwargs: passed to model and guide.
    """
    kwargs = dict(model_kwargs or {})
    pot = Potential(model, x, guide=guide, model_kwargs=kwargs)
    betas = schedule(num_steps, kind, dtype=x.dtype, device=x.device)
    opts: dict[str, Any] = dict(num_leapfrog=num_leapfrog, step_size=step_size,
                                target_accept=target_accept)
    with torch.no_grad():
        steps = pilot_step_sizes(pot, betas, pilot_chains, **opts) if pilot_chains else None
        run = anneal(pot, pot.sample_init(num_chains), betas, step_sizes=steps, **opts)
        values, _ = pot.unflatten(run.u)
    est, se = log_mean_weight(run.log_w)
    return AISResult(est, se, run.log_w, run.accept_rate, run.step_sizes[-1],
                     {k: v.detach() for k, v in values.items()}, num_steps)


def ais_log_px(model, x: torch.Tensor, proposal, model_kwargs: dict, *, init: str = "prior",
               **options) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The ``"ais"`` log p(x) estimator of :func:`ppvae.gaps` (registered by ``ppvae``).

    Returns ``(per_datapoint, stderr, description)``. ``init="guide"`` starts AIS from
    ``proposal`` (the best q* of the report) instead of the prior; ``options`` go to :func:`ais`.
    """
    if init not in ("prior", "guide"):
        raise ValueError(f"init must be 'prior' or 'guide', got {init!r}")
    res = ais(model, x, guide=proposal if init == "guide" else None, **options,
              model_kwargs=model_kwargs)
    label = f"AIS ({res.num_steps} steps, {res.log_weights.shape[0]} chains, from {init})"
    return res.per_datapoint, res.stderr, label
