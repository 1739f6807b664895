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

__all__ = ["Diagnostics", "diagnostics", "import_arviz", "to_inference_data"]


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
