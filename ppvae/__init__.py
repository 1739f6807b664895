"""ppvae: honest inference for deep latent-variable models written in Pyro.

Models are Pyro model functions, guides are Pyro guides; the engine checks their contract
(:func:`check_pair`), computes per-datapoint log weights from traces (:func:`log_weights`), and
builds bounds (:func:`elbo`, :func:`iwae`) and exact references (:mod:`ppvae.ppca`) on them.
"""

from . import data, distributed
from .analysis.compare import PosteriorComparison, PosteriorSummary, compare_posteriors
from .analysis.gaps import gaps, register_log_px
from .analysis.ppca import (
    PPCAParams,
    gaussian_kl,
    mean_field_gap,
    ppca_kl_to_posterior,
    ppca_log_marginal,
    ppca_mle,
    ppca_posterior,
)
from .analysis.report import GapReport, GapRow, LogPx
from .core.bounds import Bound, elbo, elbo_from_log_weights, iwae, iwae_from_log_weights, logmeanexp
from .core.contract import ContractError, PairInfo, check_pair
from .core.device import resolve_device
from .core.globals import fix_globals, global_latent_names, global_values
from .core.potential import Potential
from .core.weights import iter_log_weights, log_weights
from .distributed.gaps import sharded_gaps
from .distributed.sharded import (
    sharded_ais,
    sharded_elbo,
    sharded_fit_local,
    sharded_iwae,
    sharded_log_weights,
)
from .infer.ais import AISResult, ais, ais_log_px
from .infer.bdmc import BDMCResult, bdmc
from .infer.hmc import Diagnostics, HMCResult, diagnostics, hmc, to_inference_data
from .infer.local.vi import LocalFit, LocalGuide, fit_local
from .infer.nuts import NUTSResult, nuts
from .train.checkpoint import CheckpointError
from .train.fit import FitResult, fit
from .train.objectives import ELBO, IWAE, PyroObjective, beta_vae, kl_warmup, mean_field
from .train.speedup.capture import CaptureError

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
