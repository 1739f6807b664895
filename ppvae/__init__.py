"""ppvae: honest inference for deep latent-variable models written in Pyro.

Models are Pyro model functions, guides are Pyro guides; the engine checks their contract
(:func:`check_pair`), computes per-datapoint log weights from traces (:func:`log_weights`), and
builds bounds (:func:`elbo`, :func:`iwae`) and exact references (:mod:`ppvae.ppca`) on them.
"""

from . import data, distributed
from .ais import AISResult, ais, ais_log_px
from .bdmc import BDMCResult, bdmc
from .bounds import Bound, elbo, elbo_from_log_weights, iwae, iwae_from_log_weights, logmeanexp
from .capture import CaptureError
from .checkpoint import CheckpointError
from .compare import PosteriorComparison, PosteriorSummary, compare_posteriors
from .contract import ContractError, PairInfo, check_pair
from .device import resolve_device
from .fit import FitResult, fit
from .gap_report import GapReport, GapRow, LogPx
from .gaps import gaps, register_log_px
from .globals import fix_globals, global_latent_names, global_values
from .hmc import Diagnostics, HMCResult, diagnostics, hmc, to_inference_data
from .local import LocalFit, LocalGuide, fit_local
from .mcmc import NUTSResult, nuts
from .objectives import ELBO, IWAE, PyroObjective, beta_vae, kl_warmup, mean_field
from .potential import Potential
from .ppca import (
    PPCAParams,
    gaussian_kl,
    mean_field_gap,
    ppca_kl_to_posterior,
    ppca_log_marginal,
    ppca_mle,
    ppca_posterior,
)
from .sharded import (
    sharded_ais,
    sharded_elbo,
    sharded_fit_local,
    sharded_iwae,
    sharded_log_weights,
)
from .sharded_gaps import sharded_gaps
from .weights import iter_log_weights, log_weights

__version__ = "0.1.0"

__all__ = [
    "ELBO",
    "IWAE",
    "AISResult",
    "BDMCResult",
    "Bound",
    "CaptureError",
    "CheckpointError",
    "ContractError",
    "Diagnostics",
    "FitResult",
    "GapReport",
    "GapRow",
    "HMCResult",
    "LocalFit",
    "LocalGuide",
    "LogPx",
    "NUTSResult",
    "PPCAParams",
    "PairInfo",
    "PosteriorComparison",
    "PosteriorSummary",
    "Potential",
    "PyroObjective",
    "__version__",
    "ais",
    "bdmc",
    "beta_vae",
    "check_pair",
    "compare_posteriors",
    "data",
    "diagnostics",
    "distributed",
    "elbo",
    "elbo_from_log_weights",
    "fit",
    "fit_local",
    "fix_globals",
    "gaps",
    "gaussian_kl",
    "global_latent_names",
    "global_values",
    "hmc",
    "iter_log_weights",
    "iwae",
    "iwae_from_log_weights",
    "kl_warmup",
    "log_weights",
    "logmeanexp",
    "mean_field",
    "mean_field_gap",
    "nuts",
    "ppca_kl_to_posterior",
    "ppca_log_marginal",
    "ppca_mle",
    "ppca_posterior",
    "register_log_px",
    "resolve_device",
    "sharded_ais",
    "sharded_elbo",
    "sharded_fit_local",
    "sharded_gaps",
    "sharded_iwae",
    "sharded_log_weights",
    "to_inference_data",
]

register_log_px("ais", ais_log_px)
