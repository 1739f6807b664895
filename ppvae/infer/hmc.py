"""Batched Hamiltonian Monte Carlo over [chains, datapoints], one tensor for all chains.

The per-datapoint posteriors p(z_n | x_n) of a latent-variable model are independent given the
model, so C chains for each of N datapoints are one tensor ``u [C, N, D]`` and one leapfrog step
is one vectorized evaluation of the log joint (:class:`ppvae.potential.Potential`). Each of the
C * N chains has its own step size, tuned during warm-up by dual averaging towards a target
acceptance rate (Hoffman and Gelman 2014, Algorithm 5). The mass matrix is estimated from a
warm-up window (as Stan does): by default dense, one covariance per datapoint pooled over its
chains (for at most :data:`DENSE_MAX_DIM` coordinates per datapoint), else each chain's
diagonal. The momentum is kept whitened (``r = F^T p ~ N(0, I)``, ``F F^T = M^-1``, F the
Cholesky factor), so a dense metric costs two small batched matrix-vector products per
leapfrog step (Neal 2011, section 4.1). The trajectory length is fixed (L leapfrog steps) or
jittered: each iteration draws L uniformly from a range, shared by all chains so that no work is
wasted, which breaks the periodicity of fixed trajectories on near-Gaussian posteriors (Neal
2011, section 5.4.2.2). By default the range follows the tuned step size, so that the
integration time in the metric's whitened coordinates is uniform in ``trajectory_time``.
There is no Python loop over datapoints or chains.

Results convert to ArviZ ``InferenceData`` (:mod:`ppvae.infer.diagnostics`), where R-hat, ESS
and MCSE are computed per datapoint and coordinate, with the sampler statistics (``lp``,
``acceptance_rate``, ``step_size``, ``diverging``, ``n_steps``, ``energy``) and the pointwise
``log_likelihood`` for ``az.loo`` / ``az.waic``. Every datapoint is its own Hamiltonian system;
``energy`` in the InferenceData is the sum of the N systems' Hamiltonians (the energy of their
product, one value per chain and draw as ``az.bfmi`` expects), and the per-datapoint energies
stay in :attr:`HMCResult.energy` (and ``datapoint_energy`` in the InferenceData), from which
:meth:`HMCResult.to_dataframe` computes each datapoint's E-BFMI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..core.modes import evaluates
from ..core.potential import Potential
from ..core.progress import stage
from ..core.records import frame
from .diagnostics import (
    Diagnostics,
    check_mcmc,
    diagnostics,
    e_bfmi,
    likelihood_name,
    pointwise_log_density,
    to_inference_data,
)

__all__ = ["DENSE_MAX_DIM", "WARMUP_LEAPFROG", "HMCResult", "hmc", "hmc_step"]

DENSE_MAX_DIM = 32  # hmc's default mass matrix is dense up to this many coordinates per datapoint
WARMUP_LEAPFROG = (3, 5)  # hmc's leapfrog steps before it reads its step size (measured best)


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    m = mask.reshape(mask.shape + (1,) * (new.dim() - mask.dim()))
    return torch.where(m, new, old)


def hmc_step(u, logp, grad, aux, fn, step_size, num_leapfrog: int, inv_mass):
    """One HMC transition for every chain at once.

    ``u [C, N, D]`` with its ``logp [C, N]`` and ``grad [C, N, D]``; ``aux`` a tuple of tensors
    carried with the state (selected with it on acceptance); ``fn(u) -> (logp, grad, aux)``;
    ``step_size [C, N]``; ``inv_mass`` the inverse mass matrices, diagonal ``[C, N, D]`` or
    dense ``[C, N, D, D]`` (a leading 1 broadcasts over chains). Returns the new
    ``(u, logp, grad, aux)`` and the acceptance probabilities ``[C, N]``.
    """
    return _transition(u, logp, grad, aux, fn, step_size, num_leapfrog,
                       _factor(inv_mass, u))[:5]


def _factor(inv_mass: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A square root F of the inverse mass matrix, F F^T = M^-1: elementwise or Cholesky."""
    return inv_mass.sqrt() if inv_mass.dim() == u.dim() else torch.linalg.cholesky(inv_mass)


def _apply(f: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``F v`` (or ``F^T v``) for a diagonal ``f [.., D]`` or a triangular ``f [.., D, D]``."""
    if f.dim() == v.dim():
        return f * v
    return ((f.transpose(-1, -2) if transpose else f) @ v.unsqueeze(-1)).squeeze(-1)


def _transition(u, logp, grad, aux, fn, step_size, num_leapfrog: int, factor):
    """:func:`hmc_step`, also returning the Hamiltonian ``[C, N]`` where the transition ends.

    That is the proposal's on acceptance and the starting point's (with its fresh momentum) on
    rejection: one ``torch.where`` on values the step computes anyway. The momentum is kept
    whitened, ``r = F^T p ~ N(0, I)`` with ``F F^T = M^-1`` (``factor``): positions move by
    ``eps F r`` and ``r`` by ``eps F^T grad``, the kinetic energy is ``|r|^2 / 2``.
    """
    eps = step_size.unsqueeze(-1)  # [C, N, 1]
    r0 = torch.randn_like(u)  # whitened momentum
    h0 = -logp + 0.5 * r0.pow(2).sum(-1)  # [C, N]
    q, r = u, r0 + 0.5 * eps * _apply(factor, grad, transpose=True)
    lp1, g1, aux1 = logp, grad, aux
    for i in range(num_leapfrog):
        q = q + eps * _apply(factor, r)
        lp1, g1, aux1 = fn(q)
        r = r + (eps if i < num_leapfrog - 1 else 0.5 * eps) * _apply(factor, g1, transpose=True)
    h1 = -lp1 + 0.5 * r.pow(2).sum(-1)
    log_acc = (h0 - h1).nan_to_num(nan=-math.inf)  # diverged trajectories are rejected
    accept_prob = log_acc.clamp(max=0.0).exp()  # [C, N]
    accepted = torch.rand_like(accept_prob).log() < log_acc
    new_aux = tuple(_where(accepted, a1, a0) for a1, a0 in zip(aux1, aux, strict=True))
    return (_where(accepted, q, u), _where(accepted, lp1, logp), _where(accepted, g1, grad),
            new_aux, accept_prob, torch.where(accepted, h1, h0))


class _DualAveraging:
    """Per-chain dual averaging of log step size (Hoffman and Gelman 2014, Algorithm 5)."""

    def __init__(self, step_size: torch.Tensor, target: float):
        self.target, self.t = target, 0
        self.mu = (10 * step_size).log()
        self.h_bar = torch.zeros_like(step_size)
        self.log_eps_bar = torch.zeros_like(step_size)

    def update(self, accept_prob: torch.Tensor) -> torch.Tensor:
        self.t += 1
        t, t0, gamma, kappa = self.t, 10.0, 0.05, 0.75
        self.h_bar = (1 - 1 / (t + t0)) * self.h_bar + (self.target - accept_prob) / (t + t0)
        log_eps = self.mu - math.sqrt(t) / gamma * self.h_bar
        w = t ** (-kappa)
        self.log_eps_bar = w * log_eps + (1 - w) * self.log_eps_bar
        return log_eps.exp()

    def final(self) -> torch.Tensor:
        return self.log_eps_bar.exp()


def _sites(samples: Mapping[str, torch.Tensor]) -> str:
    """``"z (2 coordinates)"``-style names of the sampled sites."""
    return ", ".join(f"{k} ({v.shape[-1]} coordinate{'s' if v.shape[-1] != 1 else ''})"
                     for k, v in samples.items())


class _Adaptation:
    """Warm-up of every chain's step size and of the mass matrices (as Stan's, simplified).

    Dual averaging of the step size throughout the warm-up; the inverse mass matrix is set at
    75% of the warm-up from the draws in [15%, 75%) (Welford's algorithm, with Stan's
    shrinkage towards 1e-3), after which dual averaging restarts; the last warm-up iteration
    fixes the step size at dual averaging's average. Diagonal: each chain's own variances.
    Dense: each datapoint's covariance from the draws of all its chains (one ``[D, D]`` matrix
    per datapoint, shared by its chains; a matrix whose Cholesky factorization fails falls back
    to its diagonal).
    """

    def __init__(self, u: torch.Tensor, num_warmup: int, target: float, dense: bool):
        self.num_warmup, self.target, self.dense = num_warmup, target, dense
        self.step = torch.full(u.shape[:2], 0.1, dtype=u.dtype, device=u.device)  # [C, N]
        self.inv_mass = torch.ones_like(u)  # [C, N, D], or [C, N, D, D] once dense
        self.factor = self.inv_mass  # F with F F^T = inv_mass (the diagonal's square root)
        self.da = _DualAveraging(self.step, target)
        self.w_start, self.w_end = int(0.15 * num_warmup), int(0.75 * num_warmup)
        self.n, self.mean = 0, torch.zeros_like(u)
        self.m2 = u.new_zeros(u.shape + u.shape[-1:]) if dense else torch.zeros_like(u)

    def update(self, it: int, u: torch.Tensor, accept_prob: torch.Tensor) -> None:
        """Adapt after warm-up iteration ``it`` (0-based), which ended at ``u``."""
        self.step = self.da.update(accept_prob)
        if self.w_start <= it < self.w_end:  # Welford accumulation of the window's moments
            self.n += 1
            delta = u - self.mean
            self.mean = self.mean + delta / self.n
            after = u - self.mean
            self.m2 = self.m2 + (delta.unsqueeze(-1) * after.unsqueeze(-2) if self.dense
                                 else delta * after)  # [C, N, D, D] or [C, N, D]
        if it == self.w_end - 1 and self.n > 2:
            self._set_dense() if self.dense else self._set_diagonal()
            self.da = _DualAveraging(self.step, self.target)
        if it == self.num_warmup - 1:
            self.step = self.da.final()

    def _set_diagonal(self) -> None:
        var, n = self.m2 / (self.n - 1), self.n
        self.inv_mass = (n / (n + 5)) * var + 1e-3 * (5 / (n + 5))  # Stan's shrinkage
        self.factor = self.inv_mass.sqrt()

    def _set_dense(self) -> None:
        c, d = self.mean.shape[0], self.mean.shape[-1]
        grand = self.mean.mean(0)  # [N, D] each datapoint's mean over its chains' draws
        dev = self.mean - grand  # [C, N, D]
        m2 = self.m2.sum(0) + self.n * (dev.unsqueeze(-1) * dev.unsqueeze(-2)).sum(0)
        n = self.n * c  # draws pooled over the chains
        eye = torch.eye(d, dtype=m2.dtype, device=m2.device)
        cov = (n / (n + 5)) * m2 / (n - 1) + 1e-3 * (5 / (n + 5)) * eye  # [N, D, D], shrunk
        factor, info = torch.linalg.cholesky_ex(cov)
        bad = (info != 0).reshape(-1, 1, 1)  # not positive definite in this precision
        cov = torch.where(bad, cov * eye, cov)
        factor = torch.where(bad, cov.diagonal(dim1=-2, dim2=-1).sqrt().diag_embed(), factor)
        self.inv_mass = cov.unsqueeze(0).expand(c, -1, -1, -1)  # [C, N, D, D]
        self.factor = factor.unsqueeze(0)  # [1, N, D, D], broadcast over the chains


class HMCResult(NamedTuple):
    """Draws of batched HMC with its tuned step sizes, mass matrices and sampler statistics.

    Every per-transition tensor is ``[C, S, N]`` (chains, kept draws, datapoints): each
    datapoint's chains are their own Hamiltonian systems.
    """

    samples: dict[str, torch.Tensor]  # site -> [C, S, N, size], constrained, per datapoint
    accept_prob: torch.Tensor  # [C, S, N] acceptance probability of each kept transition
    step_size: torch.Tensor  # [C, N] tuned step sizes
    inv_mass: torch.Tensor  # [C, N, D] diagonal or [C, N, D, D] dense inverse mass matrices
    num_leapfrog: int  # the most leapfrog steps of a kept transition
    divergent: torch.Tensor | None = None  # [C, S, N] bool: divergent kept transitions
    diagnostics: Diagnostics | None = None  # ArviZ R-hat/ESS/MCSE (``diagnose=True``)
    energy: torch.Tensor | None = None  # [C, S, N] Hamiltonian where each transition ended
    n_steps: torch.Tensor | None = None  # [S] leapfrog steps of each kept iteration (all chains)
    lp: torch.Tensor | None = None  # [C, S, N] log p(x_n, z) + log|J| at each draw (nats)
    log_likelihood: torch.Tensor | None = None  # [C, S, N] log p(x_n | z) at each draw (nats)
    observed: str = "x"  # the name of the log-likelihood variable (the observed site)

    def __repr__(self) -> str:
        """Sizes, acceptance, step size, divergences and the worst diagnostics, on one line."""
        c, s, n = self.accept_prob.shape
        div = "" if self.divergent is None else f", {int(self.divergent.sum())} divergent"
        diag = "" if self.diagnostics is None else f"; {self.diagnostics.headline()}"
        return (f"HMCResult({c} chains x {s} draws for {n} datapoints of {_sites(self.samples)}"
                f"; acceptance {float(self.accept_prob.mean()):.2f}, step size "
                f"{float(self.step_size.median()):.3g} (median){div}{diag})")

    def to_inference_data(self, datapoints=None):
        """The draws as ArviZ ``InferenceData``: posterior, sample_stats and log_likelihood.

        ``sample_stats``: ``acceptance_rate``, ``step_size``, ``diverging``, ``n_steps``, ``lp``
        and ``datapoint_energy`` (each ``[chain, draw, datapoint]``) and ``energy``
        ``[chain, draw]``, the sum over datapoints (module docstring). ``log_likelihood``: the
        observed site's ``log p(x_n | z)``. ``datapoints`` labels the datapoint dim.
        """
        c, s, n = self.accept_prob.shape
        stats: dict[str, torch.Tensor] = {
            "acceptance_rate": self.accept_prob,
            "step_size": self.step_size.unsqueeze(1).expand(c, s, n)}
        if self.divergent is not None:
            stats["diverging"] = self.divergent
        if self.n_steps is not None:
            stats["n_steps"] = self.n_steps.reshape(1, s, 1).expand(c, s, n)
        if self.lp is not None:
            stats["lp"] = self.lp
        if self.energy is not None:
            stats["energy"] = self.energy.sum(-1)
            stats["datapoint_energy"] = self.energy
        loglik = None if self.log_likelihood is None else {self.observed: self.log_likelihood}
        return to_inference_data(self.samples, stats, datapoints, log_likelihood=loglik)

    def to_dataframe(self):
        """Per-datapoint sampler health, one row per datapoint (pandas).

        Columns: ``mean_accept_prob`` (over chains and draws), ``step_size`` (mean over
        chains), ``divergences`` (count), ``min_e_bfmi`` (the worst chain's E-BFMI of the
        datapoint's energies; below 0.3 the momentum resampling explores the energy poorly),
        ``mean_log_likelihood`` (nats), and with diagnostics ``max_rhat``, ``min_ess_bulk``,
        ``min_ess_tail``. The draws themselves: :meth:`to_inference_data` and ``az.summary``.
        """
        cols: dict[str, Any] = {"mean_accept_prob": self.accept_prob.mean((0, 1)),
                                "step_size": self.step_size.mean(0)}
        if self.divergent is not None:
            cols["divergences"] = self.divergent.sum((0, 1))
        if self.energy is not None:
            cols["min_e_bfmi"] = e_bfmi(self.energy).min(0).values
        if self.log_likelihood is not None:
            cols["mean_log_likelihood"] = self.log_likelihood.mean((0, 1))
        if self.diagnostics is not None:
            d = self.diagnostics
            cols.update(max_rhat=d.max_rhat, min_ess_bulk=d.min_ess_bulk,
                        min_ess_tail=d.min_ess_tail)
        return frame(cols)


class _Trajectory:
    """The range of leapfrog steps each iteration draws from (uniformly, shared by all chains).

    A fixed ``num_leapfrog``: 1..num_leapfrog with ``jitter``, else num_leapfrog. None: an
    integration time uniform in ``time`` (without ``jitter``, its midpoint) for the whitened
    posterior the adapted metric gives,
    ``ceil(time / eps)`` steps with eps the median step size over the chains, read twice (the
    warm-up's only host syncs): once dual averaging has re-tuned the step size for the new
    metric and at the end of the warm-up; before that, :data:`WARMUP_LEAPFROG` steps. For a
    whitened Gaussian a trajectory of time T moves a coordinate's deviation from the mean by
    cos(T): T near pi / 2 gives nearly independent draws for means and quantiles alike; longer
    times (antithetic draws, cos(T) < 0) gained bulk ESS on the VAE's posteriors but lost tail
    ESS and R-hat, and times near a period would not move at all.
    """

    def __init__(self, num_leapfrog: int | None, jitter: bool, time: tuple[float, float],
                 adapt: _Adaptation):
        self.fixed, self.jitter, self.time = num_leapfrog, jitter, time
        self.lo, self.hi = (1, num_leapfrog) if num_leapfrog is not None else WARMUP_LEAPFROG
        if num_leapfrog is not None and not jitter:
            self.lo = num_leapfrog
        start = adapt.w_end + max(5, int(0.4 * (adapt.num_warmup - adapt.w_end)))
        self.reads = (min(start, adapt.num_warmup - 1), adapt.num_warmup)

    def steps(self, it: int, step: torch.Tensor) -> int:
        """The number of leapfrog steps of iteration ``it`` (step sizes ``step [C, N]``)."""
        if self.fixed is None and it in self.reads:
            eps = float(step.median())  # one sync, twice per run
            if math.isfinite(eps) and eps > 0:
                times = self.time if self.jitter else (0.5 * sum(self.time),) * 2
                self.lo, self.hi = (max(1, math.ceil(t / eps)) for t in times)
        return int(torch.randint(self.lo, self.hi + 1, ())) if self.lo < self.hi else self.lo


@evaluates
def hmc(model, x: torch.Tensor, *, num_chains: int = 4, num_warmup: int = 500,
        num_samples: int = 500, num_leapfrog: int | None = None,
        trajectory_time: tuple[float, float] = (1.2, 2.0), target_accept: float = 0.8,
        jitter: bool = True, dense_mass: bool | None = None,
        init: torch.Tensor | None = None, guide=None,
        diagnose: bool = True, model_kwargs: Mapping[str, Any] | None = None,
        log_likelihood: bool = True, progress: bool | None = None) -> HMCResult:
    """Batched HMC on the posterior of every datapoint of ``x`` under ``model``.

    Warm-up: dual averaging of each chain's step size throughout; the mass matrix is set at
    75% of the warm-up from the draws in [15%, 75%) and dual averaging restarts.
    ``dense_mass``: one dense inverse mass matrix per datapoint, the covariance of its chains'
    draws (True), or each chain's diagonal of variances (False); None (default): dense for at
    most :data:`DENSE_MAX_DIM` unconstrained coordinates per datapoint. On a VAE's posteriors
    (binarized MNIST, 10 latents; ``benchmarks/mcmc_mnist.py``) dense gave 1.6x the effective
    samples per gradient.

    Trajectories: with ``num_leapfrog`` None (default) the number of leapfrog steps follows
    the tuned step size so that the integration time in the metric's whitened coordinates is
    uniform in ``trajectory_time`` (:class:`_Trajectory`): about a quarter period (pi / 2),
    nearly independent draws of a whitened posterior, jittered against periodic trajectories.
    On the VAE's posteriors: 1.35x bulk (1.55x tail) ESS per gradient over 1..8 steps. An
    integer ``num_leapfrog``: that many steps, or with ``jitter`` (default) a uniform draw in
    1..``num_leapfrog``. Chains start from the prior (or ``guide``, or ``init``, unconstrained).

    A transition is divergent when its energy error is non-finite or so large (above ~745
    nats) that its acceptance probability underflows to zero; such trajectories are rejected.
    With ``diagnose`` (default) the result carries ArviZ's R-hat, bulk/tail ESS and MCSE per
    datapoint (about 1.5 ms per datapoint and latent coordinate on a CPU) and an
    :class:`ppvae.MCMCWarning` is raised when R-hat, ESS or divergences fail their thresholds
    (:mod:`ppvae.core.diagnostic_warnings`). With ``log_likelihood`` (default) the result
    holds ``log p(x_n | z)`` at every draw (one batched model evaluation over the kept draws)
    for ArviZ's ``log_likelihood`` group. ``progress``: a bar over the warm-up and sampling
    iterations (:mod:`ppvae.core.progress`; None: only on a terminal), showing the median
    tuned step size and the mean acceptance once the warm-up ends.
    """
    kwargs = dict(model_kwargs or {})
    if num_warmup < 20 or num_samples < 1 or (num_leapfrog is not None and num_leapfrog < 1):
        raise ValueError("need num_warmup >= 20, num_samples >= 1 and num_leapfrog >= 1 (or "
                         f"None); got {num_warmup}, {num_samples}, {num_leapfrog}")
    if not 0 < trajectory_time[0] <= trajectory_time[1]:
        raise ValueError(f"trajectory_time must be (low, high) with 0 < low <= high, got "
                         f"{trajectory_time}")
    pot = Potential(model, x, guide=guide, model_kwargs=kwargs)
    u = init if init is not None else pot.sample_init(num_chains)  # [C, N, D]

    def fn(q):
        lp, g = pot.target_and_grad(q)
        return lp, g, ()

    logp, grad = pot.target_and_grad(u)
    dense = dense_mass if dense_mass is not None else u.shape[-1] <= DENSE_MAX_DIM
    adapt = _Adaptation(u, num_warmup, target_accept, dense)
    path = _Trajectory(num_leapfrog, jitter, trajectory_time, adapt)
    kept: dict[str, list[torch.Tensor]] = {"u": [], "acc": [], "lp": [], "energy": []}
    n_steps: list[int] = []
    with stage(progress, "hmc", total=num_warmup + num_samples) as bar:
        for it in range(num_warmup + num_samples):
            n_lf = path.steps(it, adapt.step)
            u, logp, grad, _, acc, energy = _transition(u, logp, grad, (), fn, adapt.step, n_lf,
                                                        adapt.factor)
            if it < num_warmup:
                adapt.update(it, u, acc)
                if it == num_warmup - 1 and not bar.disable:  # the run's one sync for the bar
                    bar.set_postfix_str(f"step size {float(adapt.step.median()):.3g} (median), "
                                        f"acceptance {float(acc.mean()):.2f}", refresh=False)
            else:
                for key, v in (("u", u), ("acc", acc), ("lp", logp), ("energy", energy)):
                    kept[key].append(v)
                n_steps.append(n_lf)
            bar.update()
    res = _result(pot, kept, n_steps, adapt, path.hi, log_likelihood)
    if diagnose:
        diag = diagnostics(res.to_inference_data())
        divergent = res.accept_prob == 0  # as res.divergent
        check_mcmc(diag, res.accept_prob.shape[0], "hmc",
                   divergent=divergent.sum((0, 1)).cpu().numpy())
        res = res._replace(diagnostics=diag)
    return res


def _result(pot: Potential, kept: dict[str, list[torch.Tensor]], n_steps: list[int],
            adapt: _Adaptation, num_leapfrog: int, log_likelihood: bool) -> HMCResult:
    """The :class:`HMCResult` of the kept states (constrained draws, statistics)."""
    us = torch.stack(kept["u"], dim=1)  # [C, S, N, D]
    c, s = us.shape[:2]
    flat_u = us.reshape(c * s, *us.shape[2:])
    values, _ = pot.unflatten(flat_u)
    flat = pot.per_datapoint_values(values)  # site -> [C*S, N, size]
    samples = {k: v.reshape(c, s, *v.shape[1:]).detach() for k, v in flat.items()}
    accept = torch.stack(kept["acc"], dim=1)  # [C, S, N]
    divergent = accept == 0  # energy error non-finite or above ~745 nats (exp underflows)
    ll = None
    if log_likelihood:
        ll = pointwise_log_density(pot, flat_u)[0].reshape(c, s, -1)
    return HMCResult(samples, accept, adapt.step, adapt.inv_mass, num_leapfrog, divergent,
                     energy=torch.stack(kept["energy"], dim=1),
                     n_steps=torch.tensor(n_steps, device=us.device),
                     lp=torch.stack(kept["lp"], dim=1), log_likelihood=ll,
                     observed=likelihood_name(pot))
