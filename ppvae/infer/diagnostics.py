"""MCMC diagnostics per datapoint through ArviZ, and conversion of samples to InferenceData.

Samples ``site -> [C, S, N, size]`` (chains, draws, datapoints, coordinates) become ArviZ
``InferenceData`` with ``az.from_dict`` and dims (chain, draw, datapoint, latent_dim);
:func:`diagnostics` gives rank-normalized split R-hat, bulk and tail ESS and MCSE (Vehtari,
Gelman, Simpson, Carpenter and Bürkner 2021, "Rank-normalization, folding, and localization")
per datapoint and coordinate, as ArviZ computes them.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Diagnostics", "check_mcmc", "diagnostics", "import_arviz", "to_inference_data"]


def import_arviz():
    """The ``arviz`` module, imported without the FutureWarning arviz 0.x prints on import."""
    with warnings.catch_warnings():  # arviz 0.x announces its 1.x refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def to_inference_data(samples: dict[str, torch.Tensor], sample_stats: dict | None = None,
                      datapoints=None):
    """``site -> [C, S, N, size]`` samples as ArviZ InferenceData (built with ``az.from_dict``).

    Dims (chain, draw, datapoint, latent_dim) for a single site; with several sites each gets
    its own ``<site>_dim``. ``sample_stats`` entries ``[C, S, N]`` get dims (datapoint,).
    ``datapoints``: coordinate labels of the datapoint dim (default 0..N-1).
    """
    az = import_arviz()
    posterior = {k: v.detach().cpu().numpy() for k, v in samples.items()}
    dims = {k: ["datapoint", "latent_dim" if len(samples) == 1 else f"{k}_dim"]
            for k in samples}
    stats = {k: v.detach().cpu().numpy() for k, v in (sample_stats or {}).items()}
    dims.update({k: ["datapoint"] for k in stats})
    coords = None if datapoints is None else {"datapoint": [int(i) for i in datapoints]}
    return az.from_dict(posterior=posterior, sample_stats=stats or None, dims=dims,
                        coords=coords)


class Diagnostics(NamedTuple):
    """ArviZ convergence diagnostics, each ``[N, D]`` (sites concatenated along D)."""

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    mcse_mean: np.ndarray
    mcse_sd: np.ndarray

    @property
    def max_rhat(self) -> np.ndarray:
        """Worst R-hat per datapoint ``[N]``."""
        return self.rhat.max(axis=1)

    @property
    def min_ess_bulk(self) -> np.ndarray:
        """Smallest bulk ESS per datapoint ``[N]``."""
        return self.ess_bulk.min(axis=1)

    @property
    def min_ess_tail(self) -> np.ndarray:
        """Smallest tail ESS per datapoint ``[N]``."""
        return self.ess_tail.min(axis=1)


def diagnostics(idata) -> Diagnostics:
    """R-hat (rank), bulk and tail ESS, and MCSE of mean and sd per datapoint and coordinate."""
    az = import_arviz()
    post = idata.posterior
    names = list(post.data_vars)

    def grab(ds) -> np.ndarray:
        return np.concatenate([np.asarray(ds[n].values).reshape(ds[n].shape[0], -1)
                               for n in names], axis=1)

    return Diagnostics(
        rhat=grab(az.rhat(post)),
        ess_bulk=grab(az.ess(post, method="bulk")),
        ess_tail=grab(az.ess(post, method="tail")),
        mcse_mean=grab(az.mcse(post, method="mean")),
        mcse_sd=grab(az.mcse(post, method="sd")),
    )


def _where_worst(per_datapoint: np.ndarray, bad: np.ndarray, worst: int) -> str:
    return f"{int(bad.sum())}/{bad.size} datapoints (worst {per_datapoint[worst]:.3g} at " \
        f"datapoint {worst})"


def check_mcmc(diag: Diagnostics, num_chains: int, sampler: str, *,
               divergent: np.ndarray | None = None) -> list[str]:
    """Warn (:class:`ppvae.MCMCWarning`) where MCMC diagnostics fail their thresholds.

    The checks and their sources are in :mod:`ppvae.core.diagnostic_warnings`: rank-normalized
    split R-hat above 1.01 (only with several chains), bulk or tail ESS below 100 per chain,
    and any divergent transition (``divergent [N]``: counts per datapoint). Returns the
    messages it raised (empty when every datapoint passes).
    """
    from ..core.diagnostic_warnings import ESS_MIN_PER_CHAIN, RHAT_MAX, MCMCWarning, warn

    messages = []
    advice = (f"run {sampler} longer (num_warmup, num_samples) or with more chains, and check "
              "the posterior for strong correlations or several modes")
    if num_chains > 1:
        rhat = np.nan_to_num(diag.max_rhat, nan=np.inf)
        bad = rhat > RHAT_MAX
        if bad.any():
            messages.append(f"{sampler}: R-hat above {RHAT_MAX} on "
                            f"{_where_worst(rhat, bad, int(rhat.argmax()))}; the chains have "
                            f"not mixed: {advice}")
    min_ess = ESS_MIN_PER_CHAIN * num_chains
    for kind, ess in (("bulk", diag.min_ess_bulk), ("tail", diag.min_ess_tail)):
        ess = np.nan_to_num(ess, nan=0.0)
        bad = ess < min_ess
        if bad.any():
            messages.append(f"{sampler}: {kind} ESS below {min_ess} ({ESS_MIN_PER_CHAIN} per "
                            f"chain) on {_where_worst(ess, bad, int(ess.argmin()))}; its "
                            f"Monte Carlo errors are large: {advice}")
    if divergent is not None and divergent.sum() > 0:
        bad = divergent > 0
        messages.append(f"{sampler}: {int(divergent.sum())} divergent transitions on "
                        f"{_where_worst(divergent, bad, int(divergent.argmax()))}; the draws "
                        "may miss parts of the posterior: raise target_accept (smaller steps) "
                        "or reparameterize the model")
    for m in messages:
        warn(MCMCWarning, m, stacklevel=4)
    return messages
