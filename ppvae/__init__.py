"""ppvae: honest inference for deep latent-variable models written in Pyro.

Models are Pyro model functions, guides are Pyro guides; the engine checks their contract
(:func:`check_pair`), computes per-datapoint log weights from traces (:func:`log_weights`), and
builds bounds (:func:`elbo`, :func:`iwae`) and exact references (:mod:`ppvae.ppca`) on them.
"""

from . import data
from .bounds import Bound, elbo, elbo_from_log_weights, iwae, iwae_from_log_weights, logmeanexp
from .contract import ContractError, PairInfo, check_pair
from .device import resolve_device
from .ppca import (
    PPCAParams,
    gaussian_kl,
    mean_field_gap,
    ppca_kl_to_posterior,
    ppca_log_marginal,
    ppca_mle,
    ppca_posterior,
)
from .weights import iter_log_weights, log_weights

__version__ = "0.1.0"

__all__ = [
    "Bound",
    "ContractError",
    "PPCAParams",
    "PairInfo",
    "__version__",
    "check_pair",
    "data",
    "elbo",
    "elbo_from_log_weights",
    "gaussian_kl",
    "iter_log_weights",
    "iwae",
    "iwae_from_log_weights",
    "log_weights",
    "logmeanexp",
    "mean_field_gap",
    "ppca_kl_to_posterior",
    "ppca_log_marginal",
    "ppca_mle",
    "ppca_posterior",
    "resolve_device",
]
