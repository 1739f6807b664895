"""Pyro's NUTS on the same conditioned model: the reference sampler for per-datapoint posteriors.

The No-U-Turn sampler (Hoffman and Gelman 2014) as implemented in ``pyro.infer.mcmc`` runs on
the model itself (``model(x, **kwargs)`` with its ``obs=x`` site), so its target is exactly the
one of :func:`ppvae.hmc` and :func:`ppvae.ais`: the joint posterior of all latents of ``x``,
which factorizes over datapoints. NUTS treats it as one ``N * D``-dimensional problem with one
step size and mass matrix, so it suits small problems and serves as the reference
implementation; :func:`ppvae.hmc` is the batched sampler for many datapoints. Chains run one
after another in this process (Pyro's parallel chains need one CPU process per chain). Results
use the same layout and ArviZ conversion as :func:`ppvae.hmc`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro.infer.mcmc import MCMC, NUTS

from ..core.modes import evaluates
from ..core.potential import Potential
from .diagnostics import Diagnostics, check_mcmc, diagnostics, to_inference_data

__all__ = ["NUTSResult", "nuts"]


class NUTSResult(NamedTuple):
    """Draws of Pyro's NUTS with each chain's step size and divergence count."""
    samples: dict[str, torch.Tensor]  # site -> [C, S, N, size], constrained, per datapoint
    step_size: torch.Tensor  # [C] adapted step size of each chain
    divergences: torch.Tensor  # [C] divergent transitions after warm-up
    seconds: float  # wall time of all chains (warm-up and sampling)
    diagnostics: Diagnostics | None = None  # ArviZ R-hat/ESS/MCSE (``diagnose=True``)
    divergent: torch.Tensor | None = None  # [C, S] bool: divergent kept transitions

    def to_inference_data(self):
        """The draws as ArviZ ``InferenceData``, with step sizes and divergences."""
        c, s, n = next(iter(self.samples.values())).shape[:3]
        stats = {"step_size": self.step_size.to(torch.float64).reshape(c, 1, 1).expand(c, s, n)}
        if self.divergent is not None:  # one tree for all datapoints: shared along N
            stats["diverging"] = self.divergent.unsqueeze(-1).expand(c, s, n)
        return to_inference_data(self.samples, stats)


@evaluates
def nuts(model, x: torch.Tensor, *, num_chains: int = 4, num_warmup: int = 300,
         num_samples: int = 300, target_accept: float = 0.8, max_tree_depth: int = 10,
         full_mass: bool = False, diagnose: bool = True,
         model_kwargs: Mapping[str, Any] | None = None) -> NUTSResult:
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
    """
    kwargs = dict(model_kwargs or {})
    if num_chains < 1 or num_samples < 1:
        raise ValueError(f"num_chains and num_samples must be >= 1, got {num_chains}, "
                         f"{num_samples}")
    pot = Potential(model, x, model_kwargs=kwargs)  # checks the contract and learns the site layout
    draws: dict[str, list[torch.Tensor]] = {s.name: [] for s in pot.sites}
    steps, divs = [], []
    divergent = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    t0 = time.perf_counter()
    for chain in range(num_chains):
        kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                      full_mass=full_mass, max_plate_nesting=pot.info.max_plate_nesting)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                    disable_progbar=True)
        mcmc.run(x, **kwargs)
        got = pot.per_datapoint_values(mcmc.get_samples())  # site -> [S, N, size]
        for name, v in got.items():
            draws[name].append(v.detach())
        steps.append(float(kernel.step_size))
        div = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
        divs.append(len(div))
        kept = [i for i in div if 0 <= i < num_samples]  # indices counted after warm-up
        divergent[chain, kept] = True
    seconds = time.perf_counter() - t0
    samples = {k: torch.stack(v, dim=0) for k, v in draws.items()}  # [C, S, N, size]
    res = NUTSResult(samples, torch.tensor(steps), torch.tensor(divs), seconds,
                     divergent=divergent)
    if diagnose:
        diag = diagnostics(res.to_inference_data())
        check_mcmc(diag, num_chains, "nuts")
        if sum(divs):  # Pyro counts divergences per chain, not per datapoint: all share one tree
            from ..core.diagnostic_warnings import MCMCWarning, warn

            warn(MCMCWarning, f"nuts: {sum(divs)} divergent transitions after warm-up "
                 f"(per chain: {divs}); the draws may miss parts of the posterior: raise "
                 "target_accept (smaller steps) or reparameterize the model", stacklevel=2)
        res = res._replace(diagnostics=diag)
    return res
