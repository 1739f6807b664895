"""Per-datapoint (non-amortized) variational inference, vectorized over datapoints.

For data x_1..x_N and any model keeping the contract, :func:`fit_local` fits a separate
q_n(z) for every datapoint by maximizing sum_n ELBO_n, where ELBO_n is the mean over particles
of the per-datapoint log weights of :func:`ppvae.log_weights` (the model replayed on the local
guide's samples). Each q_n has its own parameters (a leading [N] dimension), so the sum gives
each datapoint its own gradient; one optimizer steps them all at once. This is the optimal-q*
step of Cremer, Li and Duvenaud (2018), "Inference suboptimality in variational autoencoders";
started from an amortized encoder's output and run for a fixed number of steps it is the
semi-amortized refinement of Kim et al. (2018), "Semi-amortized variational autoencoders".

Latent sites and event shapes are read from a trace of the model; every latent site gets its own q
(factorized across sites; within a site the family of :mod:`ppvae.infer.local.families`), built on
the unconstrained space of the site's support. Convergence is per datapoint: every ``window`` steps
the window's mean ELBO of each active datapoint is compared with its best so far; after
``patience`` windows without an improvement above ``tol`` the datapoint is converged (and, with
``freeze_converged``, frozen). The loop ends when all datapoints converge or ``num_steps`` is
reached. The window means are noisy, so a datapoint may be declared converged while it still
improves slowly; freezing is therefore off by default (it saves no computation: all datapoints are
evaluated in one tensor either way).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.optim.clipped_adam import ClippedAdam
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.distributions.transforms import ReshapeTransform, Transform

from ...core.contract import DATA_PLATE, ContractError, check_pair, is_latent
from ...core.diagnostic_warnings import ConvergenceWarning, warn
from ...core.enum import is_enumerated, sum_out_discrete
from ...core.modes import evaluates
from ...core.progress import stage
from ...core.records import frame
from ...core.sites import LatentSite, latent_site
from ...core.weights import log_weights
from .families import (
    FAMILIES,
    LocalFamily,
    PathDerivative,
    guide_moments,
    sampled_moments,
)

__all__ = ["LocalFit", "LocalGuide", "fit_local", "latent_sites"]


class LocalFit(NamedTuple):
    """What happened in :func:`fit_local`."""

    family: str
    init: str  # "prior" or the initializing guide's class name
    num_steps: int  # steps run (<= max_steps)
    max_steps: int
    num_particles: int
    converged: torch.Tensor  # [N] bool: stopped improving by more than tol
    steps_used: torch.Tensor  # [N] steps until convergence (num_steps if not converged)
    elbo: torch.Tensor  # [N] mean ELBO over each datapoint's last window (noisy, for tracking)
    history: tuple[float, ...]  # mean ELBO over datapoints, one per window (nats)
    seconds: float
    # [W, N] mean ELBO of each datapoint over each window (nats; a frozen datapoint keeps its
    # last value); history is its mean over datapoints. On the device of x.
    trace: torch.Tensor
    window: int  # steps per window (the last window may be shorter: num_steps ends it)

    @property
    def num_converged(self) -> int:
        """The number of datapoints that converged."""
        return int(self.converged.sum())

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``).

        Columns ``converged``, ``steps_used`` and ``elbo`` (the last window's mean ELBO, nats);
        the per-window values are :attr:`trace`.
        """
        return frame({"converged": self.converged, "steps_used": self.steps_used,
                      "elbo": self.elbo})

    def __repr__(self) -> str:
        n = self.converged.numel()
        return (f"LocalFit({self.family} from {self.init}: {self.num_steps} steps, "
                f"{self.num_converged}/{n} converged, mean steps "
                f"{float(self.steps_used.double().mean()):.0f}, {self.seconds:.1f} s)")


def latent_sites(model, x: torch.Tensor, *,
                 model_kwargs: Mapping[str, Any] | None = None) -> tuple[LatentSite, ...]:
    """The model's latent sites from one trace of ``model(x, **kwargs)`` (prior samples)."""
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        tr = prune_subsample_sites(poutine.trace(model).get_trace(x, **kwargs))
    n, sites = int(x.shape[0]), []
    for name, site in tr.nodes.items():
        if not is_latent(site) or is_enumerated(site):  # enumerated: summed out, not fitted
            continue
        s = latent_site(name, site, n, leading=0, purpose="local VI")
        if s.mid_shape:
            raise ContractError(
                f"latent site '{name}' has batch shape {(*s.mid_shape, n)}; local guides "
                f"need latents whose batch shape is the data plate [N] = [{n}] (no plates "
                "nested inside 'data'; declare event dims with .to_event())")
        sites.append(s)
    if not sites:
        raise ContractError("the model has no latent sites: nothing for local VI to fit")
    return tuple(sites)


class LocalGuide(nn.Module):
    """A guide with one variational distribution per datapoint, keeping the ppvae contract.

    ``guide(x, **kwargs)`` samples every latent site inside the model's per-datapoint plate
    (``plate``, "data" unless the model names it otherwise); x must
    have the N rows it was fitted on. Its parameters are plain torch parameters (not in Pyro's
    parameter store); :func:`fit_local` trains them and sets :attr:`fit`.
    """

    def __init__(self, sites: tuple[LatentSite, ...], families: list[LocalFamily], *,
                 plate: str = DATA_PLATE):
        super().__init__()
        self.sites, self.plate = sites, plate
        # torch's ModuleList is not generic; this one holds the LocalFamily modules
        self.families: list[LocalFamily] = nn.ModuleList(families)  # type: ignore[assignment]
        self.family = families[0].family
        self.num_data = families[0].num_data
        self.fit: LocalFit | None = None
        self._path_derivative = False  # set by fit_local while it trains

    def _site_distribution(self, site: LatentSite, fam: LocalFamily,
                           detach: bool = False) -> dist.TorchDistribution:
        q = fam.distribution(detach)
        steps: list[Transform] = []
        if site.unconstrained_event != (site.size,):
            steps.append(ReshapeTransform(torch.Size((site.size,)),
                                          torch.Size(site.unconstrained_event)))
        if not site.is_real:
            steps.append(site.transform)
        return dist.TransformedDistribution(q, steps) if steps else q

    def distributions(self) -> dict[str, dist.TorchDistribution]:
        """q_n for every latent site: batch shape [N], the site's event shape."""
        out = {}
        for s, f in zip(self.sites, self.families, strict=True):
            q = self._site_distribution(s, f)
            if self._path_derivative:
                q = PathDerivative(q, self._site_distribution(s, f, detach=True))
            out[s.name] = q
        return out

    def distribution(self, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q_n(z) with batch shape [N] for a single-latent model (as amortized guides expose)."""
        if len(self.sites) != 1:
            raise ValueError(f"distribution() needs a single latent site; this guide has "
                             f"{[s.name for s in self.sites]}: use distributions()")
        self._check_rows(x)
        return self._site_distribution(self.sites[0], self.families[0])

    def _check_rows(self, x) -> None:
        if x is not None and int(x.shape[0]) != self.num_data:
            raise ContractError(f"this local guide was fitted on N = {self.num_data} datapoints "
                                f"but x has {int(x.shape[0])} rows; it is tied to those rows")

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample every latent site from its q_n inside the model's per-datapoint plate."""
        self._check_rows(x)
        qs = self.distributions()
        with pyro.plate(self.plate, x.shape[0], dim=-1):
            for name, q in qs.items():
                pyro.sample(name, q)


@evaluates
def fit_local(model, x: torch.Tensor, family: str = "diag", init="prior", *,
              num_steps: int = 1000, num_particles: int = 8, lr: float = 0.1,
              lr_decay: float = 1e-3, tol: float = 1e-3, window: int = 100, patience: int = 3,
              freeze_converged: bool = False, num_flows: int = 2, num_init_samples: int = 512,
              gradient: str = "path", progress: bool | None = None,
              model_kwargs: Mapping[str, Any] | None = None) -> LocalGuide:
    """Fit one q_n per datapoint of ``x`` for ``model``; return the fitted :class:`LocalGuide`.

    Args:
        model: any model keeping the ppvae contract; its parameters are not changed.
        x: data ``[N, ...]``; parameters follow its device and dtype.
        family: "diag", "full" or "flow" (see :mod:`ppvae.infer.local.families`).
        init: "prior", an amortized guide (semi-amortized refinement starts at its output: exact
            when it exposes a Gaussian ``.distribution(x)``, moment-matched from samples
            otherwise), or a fitted :class:`LocalGuide`.
        num_steps: maximum optimizer steps (0 returns the initialization).
        num_particles: reparameterized particles per datapoint and step (vectorized).
        lr: ClippedAdam learning rate (divided by K for the Cholesky and flow matrices).
        lr_decay: the learning rate decays geometrically to ``lr * lr_decay`` over
            ``num_steps``.
        tol: the improvement of a window's mean ELBO that counts (module docstring).
        window: steps per window of the convergence rule.
        patience: windows without an improvement above ``tol`` before a datapoint converges.
        freeze_converged: stop updating a datapoint once it has converged (default: keep
            refining it until every datapoint has converged or ``num_steps`` is reached).
        num_flows: layers of the "flow" family.
        num_init_samples: samples for moment-matched initialization (prior, non-Gaussian guide).
        gradient: "path" (the path derivative of Roeder et al. 2017 for the Gaussian families:
            zero variance where q can equal the posterior; the flow always uses "reparam")
            or "reparam" (the plain reparameterization gradient of the ELBO).
        progress: a bar over optimizer steps (at window ends: converged datapoints and mean
            ELBO): True, False, or None for one only on a terminal (:mod:`ppvae.core.progress`).
        model_kwargs: passed to the model (and an initializing guide).

    The result's :attr:`LocalGuide.fit` is a :class:`LocalFit`.
    """
    kwargs = dict(model_kwargs or {})
    _check_options(family, init, gradient, num_steps, num_particles, window, patience)
    start = time.perf_counter()
    model = sum_out_discrete(model, x, kwargs)  # q* is over the continuous latents only
    guide, label = _initial_guide(model, x, family, init, num_flows, num_init_samples, kwargs)
    info = check_pair(model, guide, x, model_kwargs=kwargs)
    params = list(guide.parameters())
    optim = _optimizer(guide, params, lr, lr_decay, num_steps)
    rule = _Convergence(int(x.shape[0]), num_steps, tol, window, patience, freeze_converged,
                        x.dtype, x.device)
    guide._path_derivative = gradient == "path" and family != "flow"
    try:
        with stage(progress, f"fit_local {family}", total=num_steps, unit="step") as bar:
            step = _optimize(model, guide, x, info, kwargs, num_particles, optim, rule, bar)
    finally:
        guide._path_derivative = False
        for p in params:
            p.grad = None
    guide.fit = LocalFit(family, label, step, num_steps, num_particles, ~rule.active,
                         rule.steps_used, rule.last, tuple(rule.history),
                         time.perf_counter() - start, rule.trace(), window)
    n_conv, n = guide.fit.num_converged, int(x.shape[0])
    if num_steps > 0 and n_conv < n:
        warn(ConvergenceWarning,
             f"fit_local({family}): {n_conv}/{n} datapoints converged within {num_steps} steps "
             f"(rule: no ELBO improvement above tol={tol} over {patience} windows of {window} "
             "steps); for the others ELBO[q*] is below its optimum, so approximation gaps "
             "built on it are overestimated and amortization gaps underestimated: raise "
             "num_steps (--local-steps in the CLI) or lr", stacklevel=2)
    return guide


def _optimize(model, guide: LocalGuide, x: torch.Tensor, info, kwargs, num_particles: int,
              optim, rule: _Convergence, bar) -> int:
    """Step ``optim`` on sum_n ELBO_n until ``rule`` ends the fit; returns the steps taken.

    ``bar`` counts the steps; at a window's end its postfix shows the converged datapoints and
    the mean ELBO that the rule has just read back (no host sync of its own).
    """
    params, step = list(guide.parameters()), 0
    with torch.enable_grad(), pyro.validation_enabled(False):  # checked once by check_pair
        for step in range(1, rule.num_steps + 1):
            lw = log_weights(model, guide, x, num_particles, chunk_size=num_particles,
                             info=info, model_kwargs=kwargs)  # [S, N]
            elbo_n = lw.mean(0)  # [N]
            grads = torch.autograd.grad(-elbo_n.sum(), params)
            old = [p.detach().clone() for p in params] if rule.any_frozen else None
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optim.step()
            if old is not None:  # frozen datapoints keep their parameters
                with torch.no_grad():
                    for p, o in zip(params, old, strict=True):
                        p.copy_(torch.where(rule.active.view(-1, *[1] * (p.dim() - 1)), p, o))
            done = rule.update(elbo_n.detach(), step)
            bar.update(1)
            if rule.closed:
                bar.set_postfix(converged=f"{rule.num_converged}/{rule.n}",
                                elbo=f"{rule.history[-1]:.3f}", refresh=False)
            if done:
                break
    return step


def _check_options(family, init, gradient, num_steps, num_particles, window, patience) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if gradient not in ("path", "reparam"):
        raise ValueError(f"gradient must be 'path' or 'reparam', got {gradient!r}")
    if num_steps < 0 or num_particles < 1 or window < 1 or patience < 1:
        raise ValueError("need num_steps >= 0, num_particles >= 1, window >= 1, patience >= 1")
    if isinstance(init, str) and init != "prior":
        raise ValueError(f"init must be 'prior' or a guide, got {init!r}")


def _initial_guide(model, x, family, init, num_flows, num_init_samples, kwargs
                   ) -> tuple[LocalGuide, str]:
    """The :class:`LocalGuide` at its starting point (prior or a guide's output) and a label."""
    # the prior as a guide keeps the contract; either way x and the model are checked first
    info = check_pair(model, model if isinstance(init, str) else init, x, model_kwargs=kwargs)
    sites = latent_sites(model, x, model_kwargs=kwargs)
    if isinstance(init, str):
        moments = sampled_moments(model, x, sites, num_init_samples, info.particle_dim, kwargs,
                                  info.vectorized)
        label = "prior"
    else:
        moments = guide_moments(init, x, sites) or sampled_moments(
            init, x, sites, num_init_samples, info.particle_dim, kwargs, info.vectorized)
        label = type(init).__name__
    guide = LocalGuide(sites, [LocalFamily(family, m.to(x.dtype), L.to(x.dtype), num_flows)
                               for m, L in moments], plate=info.data_plate)
    return guide, label


def _optimizer(guide: LocalGuide, params, lr: float, lr_decay: float, num_steps: int):
    # matrix parameters ([N, ..., K, K]) move K entries that add up in each output: lr / K
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if p.dim() == 2]},
        {"params": [p for p in params if p.dim() > 2],
         "lr": lr / max(f.dim for f in guide.families)}]
    return ClippedAdam([g for g in groups if g["params"]], lr=lr,
                       lrd=lr_decay ** (1.0 / max(num_steps, 1)))


class _Convergence:
    """The per-datapoint stopping rule (all state ``[N]`` tensors).

    A datapoint converges when its window-mean ELBO has not improved by more than ``tol`` for
    ``patience`` windows.
    """

    def __init__(self, n, num_steps, tol, window, patience, freeze, dtype, device):
        self.tol, self.window, self.patience, self.freeze = tol, window, patience, freeze
        self.num_steps = num_steps
        self.active = torch.ones(n, dtype=torch.bool, device=device)
        self.best = torch.full((n,), -math.inf, dtype=dtype, device=device)
        self.stale = torch.zeros(n, dtype=torch.long, device=device)
        self.steps_used = torch.full((n,), num_steps, dtype=torch.long, device=device)
        self.acc = torch.zeros(n, dtype=dtype, device=device)
        self.last = torch.full((n,), math.nan, dtype=dtype, device=device)
        self.history: list[float] = []
        self.windows: list[torch.Tensor] = []  # self.last at each window's end, [N] each
        self.any_frozen = False
        self.n, self.num_converged = n, 0
        self.closed = False  # whether the last update ended a window
        self.dtype, self.device = dtype, device

    def trace(self) -> torch.Tensor:
        """The window means so far, ``[W, N]`` (``[0, N]`` before the first window ends)."""
        if not self.windows:
            return torch.empty(0, self.n, dtype=self.dtype, device=self.device)
        return torch.stack(self.windows)

    def update(self, elbo_n: torch.Tensor, step: int) -> bool:
        """Add one step's ELBOs; at a window's end, apply the rule (one host sync).

        True: every datapoint is frozen (only with ``freeze``), so the loop can stop.
        """
        self.acc += elbo_n
        self.closed = not (step % self.window and step != self.num_steps)
        if not self.closed:
            return False
        mean = self.acc / (step - (step - 1) // self.window * self.window)  # [N] window mean
        active = self.active
        self.last = torch.where(active, mean, self.last) if self.freeze else mean
        improved = active & (mean > self.best + self.tol)
        self.best = torch.where(improved, mean, self.best)
        self.stale = torch.where(improved, 0, self.stale + active.long())
        done = active & (self.stale >= self.patience)
        self.steps_used = torch.where(done, step, self.steps_used)
        self.active = active & ~done
        self.acc.zero_()
        self.windows.append(self.last)
        # the window's one host sync: mean ELBO and converged count together
        mean_elbo, converged = torch.stack([self.last.mean().double(),
                                            (~self.active).sum().double()]).tolist()
        self.history.append(mean_elbo)
        self.num_converged = int(converged)
        if self.freeze:
            self.any_frozen = self.num_converged > 0
            return self.num_converged == self.n
        return False
