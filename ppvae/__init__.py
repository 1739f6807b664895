"""ppvae: honest inference for deep latent-variable models written in Pyro.

Models are Pyro model functions, guides are Pyro guides; the engine checks their contract
(:func:`check_pair`), computes per-datapoint log weights from traces (:func:`log_weights`), and
builds bounds (:func:`elbo`, :func:`iwae`), reference inference (:func:`ais`, :func:`hmc`,
:func:`nuts`, :func:`fit_local`) and the gap decomposition (:func:`gaps`) on them. This module
re-exports what a user calls; everything else stays importable from its subpackage
(``ppvae.core``, ``ppvae.infer``, ``ppvae.train``, ``ppvae.analysis``, ``ppvae.distributed``).
"""

from . import data, distributed
from .analysis.compare import PosteriorComparison, compare_posteriors
from .analysis.gaps import gaps
from .analysis.ppca import ppca_log_marginal, ppca_mle, ppca_posterior
from .analysis.report import GapReport, GapRow, LogPx
from .core.bounds import Bound, elbo, elbo_from_log_weights, iwae, iwae_from_log_weights
from .core.contract import ContractError, PairInfo, ParticleFallbackWarning, check_pair
from .core.diagnostic_warnings import (
    AISWarning,
    ConvergenceWarning,
    DiagnosticWarning,
    ImportanceWeightWarning,
    MCMCWarning,
)
from .core.enum import enumerate_sites
from .core.globals import fix_globals
from .core.weights import log_weights
from .infer.ais import AISResult, ais
from .infer.bdmc import BDMCResult, bdmc
from .infer.diagnostics import Diagnostics, diagnostics, to_inference_data
from .infer.hmc import HMCResult, hmc
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
    "AISWarning",
    "BDMCResult",
    "Bound",
    "CaptureError",
    "CheckpointError",
    "ContractError",
    "ConvergenceWarning",
    "DiagnosticWarning",
    "Diagnostics",
    "FitResult",
    "GapReport",
    "GapRow",
    "HMCResult",
    "ImportanceWeightWarning",
    "LocalFit",
    "LocalGuide",
    "LogPx",
    "MCMCWarning",
    "NUTSResult",
    "PairInfo",
    "ParticleFallbackWarning",
    "PosteriorComparison",
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
    "enumerate_sites",
    "fit",
    "fit_local",
    "fix_globals",
    "gaps",
    "hmc",
    "iwae",
    "iwae_from_log_weights",
    "kl_warmup",
    "log_weights",
    "mean_field",
    "nuts",
    "ppca_log_marginal",
    "ppca_mle",
    "ppca_posterior",
    "to_inference_data",
]
