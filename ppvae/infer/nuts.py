"""Pyro's NUTS on the same conditioned model: the reference sampler for per-datapoint posteriors.

The No-U-Turn sampler (Hoffman and Gelman 2014) as implemented in ``pyro.infer.mcmc`` runs on
the model itself (``model(x, **kwargs)`` with its ``obs=x`` site), so its target is exactly the
one of :func:`ppvae.hmc` and :func:`ppvae.ais`: the joint posterior of all latents of ``x``,
which factorizes over datapoints. NUTS treats it as one ``N * D``-dimensional problem with one
step size and mass matrix, so it suits small problems and serves as the reference
implementation; :func:`ppvae.hmc` is the batched sampler for many datapoints. Chains run one
after another in this process (Pyro's parallel chains need one CPU process per chain). Results
use the same layout and ArviZ conversion as :func:`ppvae.hmc`.

Sampler statistics. Pyro's ``MCMC`` keeps only the divergent iterations and the mean acceptance
of each chain; the per-transition values it computes and drops are recorded by a subclass of
its ``NUTS`` kernel, which reads them where Pyro computes them (``_build_basetree``, the leapfrog
step of a tree, and ``_sample_r``, the momentum draw; private methods of pyro 1.9, so a pyro
that renames them leaves these statistics out of the result rather than failing):

* ``acceptance_rate``: the transition's mean Metropolis acceptance over the tree's leapfrog
  steps (what Pyro's step-size adaptation uses);
* ``n_steps``: leapfrog steps of the tree; ``tree_depth``: the doublings it took,
  ``ceil(log2(n_steps + 1))`` (Stan's ``treedepth__``; ``max_tree_depth`` means saturated);
* ``energy``: the Hamiltonian of the transition's trajectory where it starts (the previous
  draw with the fresh momentum). Pyro keeps no momentum of the selected point, so Stan's value
  at the end is not available; along the trajectory the Hamiltonian changes only by the
  integration error, and ``az.bfmi`` needs these energy levels.

One tree moves the latents of all N datapoints, so ``diverging``, ``step_size``,
``acceptance_rate``, ``n_steps`` and ``tree_depth`` are shared by the datapoints (repeated along
the datapoint dim of the InferenceData, the layout of :func:`ppvae.hmc`), and ``energy`` is the
one system's Hamiltonian (dims chain, draw). ``lp`` and the ``log_likelihood`` group are per
datapoint, from one batched model evaluation over the draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro.infer.mcmc import MCMC, NUTS

from ..core.modes import evaluates
from ..core.potential import Potential
from ..core.progress import stage
from ..core.records import frame
from .diagnostics import (
    Diagnostics,
    check_mcmc,
    diagnostics,
    likelihood_name,
    pointwise_log_density,
    to_inference_data,
)

__all__ = ["NUTSResult", "nuts"]

_STATS = ("acceptance_rate", "n_steps", "tree_depth", "energy")


class NUTSResult(NamedTuple):
    """Draws of Pyro's NUTS with each chain's step size, divergences and per-draw statistics."""

    samples: dict[str, torch.Tensor]  # site -> [C, S, N, size], constrained, per datapoint
    step_size: torch.Tensor  # [C] adapted step size of each chain
    divergences: torch.Tensor  # [C] divergent transitions after warm-up
    seconds: float  # wall time of all chains (warm-up and sampling)
    diagnostics: Diagnostics | None = None  # ArviZ R-hat/ESS/MCSE (``diagnose=True``)
    divergent: torch.Tensor | None = None  # [C, S] bool: divergent kept transitions
    accept_prob: torch.Tensor | None = None  # [C, S] mean acceptance over each tree's steps
    n_steps: torch.Tensor | None = None  # [C, S] leapfrog steps of each kept transition
    tree_depth: torch.Tensor | None = None  # [C, S] doublings of each kept transition's tree
    energy: torch.Tensor | None = None  # [C, S] Hamiltonian of each kept transition (start)
    lp: torch.Tensor | None = None  # [C, S, N] log p(x_n, z) + log|J| at each draw (nats)
    log_likelihood: torch.Tensor | None = None  # [C, S, N] log p(x_n | z) at each draw (nats)
    observed: str = "x"  # the name of the log-likelihood variable (the observed site)

    def __repr__(self) -> str:
        """Sizes, step sizes, divergences, tree depth and the worst diagnostics, on one line."""
        c, s, n = next(iter(self.samples.values())).shape[:3]
        sites = ", ".join(f"{k} ({v.shape[-1]} coordinate{'s' if v.shape[-1] != 1 else ''})"
                          for k, v in self.samples.items())
        steps = ", ".join(f"{float(v):.3g}" for v in self.step_size)
        depth = ("" if self.tree_depth is None else
                 f", mean tree depth {float(self.tree_depth.double().mean()):.2g}")
        diag = "" if self.diagnostics is None else f"; {self.diagnostics.headline()}"
        return (f"NUTSResult({c} chains x {s} draws for {n} datapoints of {sites} in "
                f"{self.seconds:.1f} s; step size per chain {steps}, "
                f"{int(self.divergences.sum())} divergent{depth}{diag})")

    def to_inference_data(self, datapoints=None):
        """The draws as ArviZ ``InferenceData``: posterior, sample_stats and log_likelihood.

        ``sample_stats``: ``step_size``, ``diverging``, ``acceptance_rate``, ``n_steps``,
        ``tree_depth`` (shared by the datapoints: dims chain, draw, datapoint), ``lp`` (per
        datapoint) and ``energy`` (chain, draw); see the module docstring. ``datapoints`` labels
        the datapoint dim.
        """
        c, s, n = next(iter(self.samples.values())).shape[:3]
        stats = {"step_size": self.step_size.to(torch.float64).reshape(c, 1, 1).expand(c, s, n)}
        shared = {"diverging": self.divergent, "acceptance_rate": self.accept_prob,
                  "n_steps": self.n_steps, "tree_depth": self.tree_depth}
        for name, v in shared.items():  # one tree for all datapoints: shared along N
            if v is not None:
                stats[name] = v.unsqueeze(-1).expand(c, s, n)
        if self.lp is not None:
            stats["lp"] = self.lp
        if self.energy is not None:
            stats["energy"] = self.energy
        loglik = None if self.log_likelihood is None else {self.observed: self.log_likelihood}
        return to_inference_data(self.samples, stats, datapoints, log_likelihood=loglik)

    def to_dataframe(self):
        """Per-datapoint results, one row per datapoint (pandas).

        Columns: ``mean_log_likelihood`` (nats) and with diagnostics ``max_rhat``,
        ``min_ess_bulk``, ``min_ess_tail``. The sampler's own statistics are per chain and draw
        (shared by the datapoints): :attr:`step_size`, :attr:`divergences` and the
        ``sample_stats`` of :meth:`to_inference_data`.
        """
        cols: dict[str, Any] = {}
        if self.log_likelihood is not None:
            cols["mean_log_likelihood"] = self.log_likelihood.mean((0, 1))
        if self.diagnostics is not None:
            d = self.diagnostics
            cols.update(max_rhat=d.max_rhat, min_ess_bulk=d.min_ess_bulk,
                        min_ess_tail=d.min_ess_tail)
        if not cols:
            raise ValueError("this NUTSResult has no per-datapoint values (run nuts with "
                             "diagnose=True or log_likelihood=True)")
        return frame(cols)


class _RecordingNUTS(NUTS):
    """Pyro's NUTS kernel, recording the statistics of every transition (module docstring)."""

    def __init__(self, model, num_warmup: int, **kwargs):
        super().__init__(model, **kwargs)
        self.num_warmup, self.calls = num_warmup, 0
        self.stats: dict[str, list[float]] = {k: [] for k in _STATS}
        self.leaves, self.leaf_accept, self.start_energy = 0, 0.0, math.nan
        self.last_accept = math.nan  # of the latest transition (warm-up too), for the bar

    def _build_basetree(self, *args, **kwargs):  # one leapfrog step of the tree
        tree = super()._build_basetree(*args, **kwargs)
        self.leaves += 1
        self.leaf_accept += float(tree.sum_accept_probs)
        return tree

    def _sample_r(self, name):  # the momentum of a transition (also of step-size searches)
        r, r_unscaled = super()._sample_r(name)
        pe = getattr(self, "_potential_energy_last", None)
        if math.isnan(self.start_energy) and pe is not None:  # the transition's first draw
            self.start_energy = float(pe + self._kinetic_energy(r_unscaled))
        return r, r_unscaled

    def sample(self, params):
        self.leaves, self.leaf_accept, self.start_energy = 0, 0.0, math.nan
        out = super().sample(params)
        self.calls += 1
        n = self.leaves
        self.last_accept = self.leaf_accept / n if n else math.nan
        if self.calls > self.num_warmup:  # a kept draw
            for key, v in zip(_STATS, (self.last_accept, n, math.ceil(math.log2(n + 1)),
                                       self.start_energy), strict=True):
                self.stats[key].append(v)
        return out


def _run_chain(pot: Potential, model, x, kwargs, bar, chain: int, num_chains: int, *,
               num_warmup: int, num_samples: int, nuts_options: dict) -> dict[str, Any]:
    """One chain of NUTS: its draws (site -> ``[S, ...]``), step size and statistics."""
    kernel = _RecordingNUTS(model, num_warmup, max_plate_nesting=pot.info.max_plate_nesting,
                            **nuts_options)

    def hook(k, params, stage_name, i):
        bar.update()
        if not bar.disable:
            bar.set_postfix_str(f"chain {chain + 1}/{num_chains} {stage_name.lower()}, step "
                                f"size {float(k.step_size):.3g}, acceptance "
                                f"{kernel.last_accept:.2f}", refresh=False)

    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup, hook_fn=hook,
                disable_progbar=True)  # ppvae's bar (one for all chains) instead of Pyro's
    mcmc.run(x, **kwargs)
    values = {k: v.detach() for k, v in mcmc.get_samples().items()}  # site -> [S, ...]
    div = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
    divergent = torch.zeros(num_samples, dtype=torch.bool)
    divergent[[i for i in div if 0 <= i < num_samples]] = True  # indices after warm-up
    stats = {k: v for k, v in kernel.stats.items() if len(v) == num_samples}
    return {"values": values, "step_size": float(kernel.step_size), "divergences": len(div),
            "divergent": divergent, "stats": stats}


@evaluates
def nuts(model, x: torch.Tensor, *, num_chains: int = 4, num_warmup: int = 300,
         num_samples: int = 300, target_accept: float = 0.8, max_tree_depth: int = 10,
         full_mass: bool = False, diagnose: bool = True,
         model_kwargs: Mapping[str, Any] | None = None, log_likelihood: bool = True,
         progress: bool | None = None) -> NUTSResult:
    """Run Pyro's NUTS on ``model(x, **kwargs)`` for ``num_chains`` chains.

    Args:
        model: a model keeping the ppvae contract (checked first; continuous latents).
        x: data ``[N, ...]``.
        num_chains: chains, run sequentially.
        num_warmup: warm-up iterations per chain.
        num_samples: kept draws per chain.
        target_accept: passed to :class:`pyro.infer.mcmc.NUTS` as ``target_accept_prob``.
        max_tree_depth: passed to :class:`pyro.infer.mcmc.NUTS`.
        full_mass: passed to :class:`pyro.infer.mcmc.NUTS` (diagonal mass matrix by default).
        diagnose: compute ArviZ's R-hat, ESS and MCSE per datapoint into the result and raise
            an :class:`ppvae.MCMCWarning` when they, or divergences, fail their thresholds.
        model_kwargs: passed to the model.
        log_likelihood: evaluate ``log p(x_n | z)`` and ``lp`` at every draw (one batched
            model evaluation) for ArviZ's ``log_likelihood`` group.
        progress: one bar over all chains' iterations with the chain, its stage, step size
            and acceptance (:mod:`ppvae.core.progress`; None: only on a terminal). Pyro's own
            bars stay off: they ignore ``progress=True`` under CI and leave one bar per chain.
    """
    kwargs = dict(model_kwargs or {})
    if num_chains < 1 or num_samples < 1:
        raise ValueError(f"num_chains and num_samples must be >= 1, got {num_chains}, "
                         f"{num_samples}")
    pot = Potential(model, x, model_kwargs=kwargs)  # checks the contract and learns the site layout
    options = {"target_accept_prob": target_accept, "max_tree_depth": max_tree_depth,
               "full_mass": full_mass}
    t0 = time.perf_counter()
    with stage(progress, "nuts", total=num_chains * (num_warmup + num_samples)) as bar:
        chains = [_run_chain(pot, model, x, kwargs, bar, c, num_chains, num_warmup=num_warmup,
                             num_samples=num_samples, nuts_options=options)
                  for c in range(num_chains)]
    seconds = time.perf_counter() - t0
    res = _result(pot, chains, seconds, log_likelihood)
    if diagnose:
        diag = diagnostics(res.to_inference_data())
        check_mcmc(diag, num_chains, "nuts")
        divs = [c["divergences"] for c in chains]
        if sum(divs):  # Pyro counts divergences per chain, not per datapoint: all share one tree
            from ..core.diagnostic_warnings import MCMCWarning, warn

            warn(MCMCWarning, f"nuts: {sum(divs)} divergent transitions after warm-up "
                 f"(per chain: {divs}); the draws may miss parts of the posterior: raise "
                 "target_accept (smaller steps) or reparameterize the model", stacklevel=2)
        res = res._replace(diagnostics=diag)
    return res


def _result(pot: Potential, chains: list[dict[str, Any]], seconds: float,
            log_likelihood: bool) -> NUTSResult:
    """The :class:`NUTSResult` of the chains' draws and statistics."""
    per = [pot.per_datapoint_values(ch["values"]) for ch in chains]  # site -> [S, N, size]
    samples = {k: torch.stack([p[k] for p in per]) for k in per[0]}  # site -> [C, S, N, size]
    c, s = len(chains), next(iter(samples.values())).shape[1]
    stats: dict[str, torch.Tensor | None] = {}
    for key in _STATS:
        have = all(key in ch["stats"] for ch in chains)
        dtype = torch.long if key in ("n_steps", "tree_depth") else torch.float64
        stats[key] = (torch.tensor([ch["stats"][key] for ch in chains], dtype=dtype) if have
                      else None)
    ll = lp = None
    if log_likelihood:
        flat_u = torch.cat([pot.flatten(ch["values"]) for ch in chains])  # [C*S, N, D]
        ll, lp = (t.reshape(c, s, -1) for t in pointwise_log_density(pot, flat_u))
    return NUTSResult(samples, torch.tensor([ch["step_size"] for ch in chains]),
                      torch.tensor([ch["divergences"] for ch in chains]), seconds,
                      divergent=torch.stack([ch["divergent"] for ch in chains]),
                      accept_prob=stats["acceptance_rate"], n_steps=stats["n_steps"],
                      tree_depth=stats["tree_depth"], energy=stats["energy"], lp=lp,
                      log_likelihood=ll, observed=likelihood_name(pot))
