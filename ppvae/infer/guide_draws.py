"""Independent draws of a guide as ArviZ InferenceData with several chains.

A guide q(z | x) is sampled directly, so its draws are independent; :func:`guide_inference_data`
splits ``num_chains * num_draws`` of them per datapoint into ``num_chains`` chains. ArviZ then
computes a finite rank-normalized split R-hat (close to 1, as for any independent draws) and
ESS close to the number of draws, where a single chain gives NaN and a "Shape validation
failed" warning. The draws come from :class:`ppvae.core.potential.Potential` with the guide as
its initial distribution (the guide's own reparameterization, the model's supports), in
the layout of :func:`ppvae.hmc`: posterior dims (chain, draw, datapoint, latent_dim), so a guide's
InferenceData compares with MCMC's variable by variable (``az.plot_density([mcmc, q])``).

The ``log_likelihood`` group holds ``log p(x_n | z)`` at every draw; its mean over draws is the
ELBO's reconstruction term E_q[log p(x_n | z)] (nats). ArviZ's ``az.loo`` and ``az.waic`` treat
the draws as posterior draws: for a guide they inherit its error (see
:mod:`ppvae.infer.diagnostics` for what they estimate with local latents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.modes import evaluates
from ..core.potential import Potential
from .diagnostics import likelihood_name, pointwise_log_density, to_inference_data

__all__ = ["guide_inference_data"]

_MAX_ROWS = 1 << 16  # draws x datapoints sampled at once


@evaluates
def guide_inference_data(model, guide, x: torch.Tensor, *, num_chains: int = 4,
                         num_draws: int = 500, model_kwargs: Mapping[str, Any] | None = None,
                         datapoints: Sequence[int] | None = None,
                         log_likelihood: bool = True):
    """Independent draws of ``guide`` for every row of ``x``, as ArviZ InferenceData.

    Args:
        model: the model keeping the ppvae contract (it gives the latent sites' supports and,
            with ``log_likelihood``, ``log p(x_n | z)``).
        guide: a guide of ``model`` keeping the contract, with continuous latents (a
            point-mass or discrete guide has no draws to show: :class:`ppvae.ContractError`).
        x: data ``[N, ...]``.
        num_chains: the chains the draws are split into (at least 2 for R-hat).
        num_draws: draws per chain and datapoint.
        model_kwargs: the model's and guide's keyword arguments (e.g. labels ``y``).
        datapoints: labels of the datapoint dim (e.g. the rows' indices in their split;
            default 0..N-1).
        log_likelihood: add the ``log_likelihood`` group (one more model evaluation per draw).

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (each latent site, constrained, dims chain,
        draw, datapoint, latent_dim) and ``log_likelihood`` (the observed site's
        ``log p(x_n | z)`` in nats, dims chain, draw, datapoint).
    """
    if num_chains < 1 or num_draws < 1:
        raise ValueError(f"num_chains and num_draws must be >= 1, got {num_chains}, {num_draws}")
    n = int(x.shape[0])
    if datapoints is not None and len(datapoints) != n:
        raise ValueError(f"datapoints has {len(datapoints)} labels for the {n} rows of x")
    pot = Potential(model, x, guide=guide, model_kwargs=dict(model_kwargs or {}))
    total = num_chains * num_draws
    step = max(1, _MAX_ROWS // max(n, 1))
    draws: dict[str, list[torch.Tensor]] = {s.name: [] for s in pot.sites}
    loglik: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, total, step):
            u = pot.sample_init(min(step, total - start))  # [K, N, D] unconstrained
            values, _ = pot.unflatten(u)
            for name, v in pot.per_datapoint_values(values).items():  # [K, N, size]
                draws[name].append(v)
            if log_likelihood:
                loglik.append(pointwise_log_density(pot, u)[0])  # [K, N]
    samples = {k: torch.cat(v).reshape(num_chains, num_draws, n, -1) for k, v in draws.items()}
    ll = ({likelihood_name(pot): torch.cat(loglik).reshape(num_chains, num_draws, n)}
          if log_likelihood else None)
    return to_inference_data(samples, datapoints=datapoints, log_likelihood=ll)
