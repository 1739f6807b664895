"""ppvae: honest inference for deep latent-variable models written in Pyro.

Models are Pyro model functions, guides are Pyro guides; the engine checks their contract
(:func:`check_pair`), computes per-datapoint log weights from traces (:func:`log_weights`), and
builds bounds (:func:`elbo`, :func:`iwae`), reference inference (:func:`ais`, :func:`hmc`,
:func:`nuts`, :func:`fit_local`) and the gap decomposition (:func:`gaps`) on them, with the
figures that show them (:func:`gap_bars`, :func:`posterior_pairs`, ...) and a trained run
directory reopened for all of these (:func:`open_run`). This module
re-exports what a user calls; everything else stays importable from its subpackage
(``ppvae.core``, ``ppvae.infer``, ``ppvae.train``, ``ppvae.analysis``, ``ppvae.distributed``).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (open_run and Trained are left out: ppvae.app imports ppvae.models)
    from . import data, distributed
    from .analysis.compare import PosteriorComparison, compare_posteriors
    from .analysis.disentangle import DisentanglementReport, disentanglement
    from .analysis.figures import (
        elbo_scatter,
        gap_bars,
        gap_histogram,
        local_vi_curves,
        training_curves,
    )
    from .analysis.gaps import gaps
    from .analysis.posterior_figures import mcmc_ranks, mcmc_traces, posterior_pairs
    from .analysis.ppca import ppca_log_marginal, ppca_mle, ppca_posterior
    from .analysis.reconstruction import Reconstruction, reconstruction_error
    from .analysis.report import GapReport, GapRow, LogPx
    from .analysis.sample_quality import BernoulliMixture, SampleScore, prior_sample_score
    from .analysis.sparsity import SparsityReport, code_sparsity
    from .analysis.study import GapStudy, StudySettingsError, gap_study, read_gap_study
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
    from .infer.guide_draws import guide_inference_data
    from .infer.hmc import HMCResult, hmc
    from .infer.local.vi import LocalFit, LocalGuide, fit_local
    from .infer.nuts import NUTSResult, nuts
    from .train.callbacks import Callback, MLflowLogger, TensorBoardLogger
    from .train.checkpoint import CheckpointError
    from .train.corruption import Corruption, denoising
    from .train.fit import FitResult, fit
    from .train.objectives import ELBO, IWAE, PyroObjective, beta_vae, kl_warmup, mean_field
    from .train.sparsity import sparsity_kl
    from .train.speedup.capture import CaptureError
    from .train.wae import WAE, LatentMMD, latent_mmd, mmd

_LAZY = {  # public name: the submodule (under ppvae) that defines it
    "PosteriorComparison": "analysis.compare",
    "compare_posteriors": "analysis.compare",
    "elbo_scatter": "analysis.figures",
    "gap_bars": "analysis.figures",
    "gap_histogram": "analysis.figures",
    "local_vi_curves": "analysis.figures",
    "training_curves": "analysis.figures",
    "mcmc_ranks": "analysis.posterior_figures",
    "mcmc_traces": "analysis.posterior_figures",
    "posterior_pairs": "analysis.posterior_figures",
    "gaps": "analysis.gaps",
    "ppca_log_marginal": "analysis.ppca",
    "ppca_mle": "analysis.ppca",
    "ppca_posterior": "analysis.ppca",
    "GapReport": "analysis.report",
    "GapRow": "analysis.report",
    "LogPx": "analysis.report",
    "Trained": "app.trained",
    "open_run": "app.trained",
    "guide_inference_data": "infer.guide_draws",
    "Bound": "core.bounds",
    "elbo": "core.bounds",
    "elbo_from_log_weights": "core.bounds",
    "iwae": "core.bounds",
    "iwae_from_log_weights": "core.bounds",
    "ContractError": "core.contract",
    "PairInfo": "core.contract",
    "ParticleFallbackWarning": "core.contract",
    "check_pair": "core.contract",
    "AISWarning": "core.diagnostic_warnings",
    "ConvergenceWarning": "core.diagnostic_warnings",
    "DiagnosticWarning": "core.diagnostic_warnings",
    "ImportanceWeightWarning": "core.diagnostic_warnings",
    "MCMCWarning": "core.diagnostic_warnings",
    "enumerate_sites": "core.enum",
    "fix_globals": "core.globals",
    "log_weights": "core.weights",
    "AISResult": "infer.ais",
    "ais": "infer.ais",
    "BDMCResult": "infer.bdmc",
    "bdmc": "infer.bdmc",
    "Diagnostics": "infer.diagnostics",
    "diagnostics": "infer.diagnostics",
    "to_inference_data": "infer.diagnostics",
    "HMCResult": "infer.hmc",
    "hmc": "infer.hmc",
    "LocalFit": "infer.local.vi",
    "LocalGuide": "infer.local.vi",
    "fit_local": "infer.local.vi",
    "NUTSResult": "infer.nuts",
    "nuts": "infer.nuts",
    "Callback": "train.callbacks",
    "MLflowLogger": "train.callbacks",
    "TensorBoardLogger": "train.callbacks",
    "CheckpointError": "train.checkpoint",
    "FitResult": "train.fit",
    "fit": "train.fit",
    "ELBO": "train.objectives",
    "IWAE": "train.objectives",
    "PyroObjective": "train.objectives",
    "beta_vae": "train.objectives",
    "kl_warmup": "train.objectives",
    "mean_field": "train.objectives",
    "CaptureError": "train.speedup.capture",
    "Corruption": "train.corruption",
    "denoising": "train.corruption",
    "Reconstruction": "analysis.reconstruction",
    "reconstruction_error": "analysis.reconstruction",
    "SparsityReport": "analysis.sparsity",
    "code_sparsity": "analysis.sparsity",
    "sparsity_kl": "train.sparsity",
    "DisentanglementReport": "analysis.disentangle",
    "disentanglement": "analysis.disentangle",
    "WAE": "train.wae",
    "LatentMMD": "train.wae",
    "latent_mmd": "train.wae",
    "mmd": "train.wae",
    "BernoulliMixture": "analysis.sample_quality",
    "SampleScore": "analysis.sample_quality",
    "prior_sample_score": "analysis.sample_quality",
    "gap_study": "analysis.study",
    "read_gap_study": "analysis.study",
    "GapStudy": "analysis.study",
    "StudySettingsError": "analysis.study",
}
_SUBPACKAGES = ("analysis", "app", "core", "data", "distributed", "guides", "infer", "models",
                "nn", "train")

__version__ = "0.1.0"

__all__ = [
    "ELBO",
    "IWAE",
    "WAE",
    "AISResult",
    "AISWarning",
    "BDMCResult",
    "BernoulliMixture",
    "Bound",
    "Callback",
    "CaptureError",
    "CheckpointError",
    "ContractError",
    "ConvergenceWarning",
    "Corruption",
    "DiagnosticWarning",
    "Diagnostics",
    "DisentanglementReport",
    "FitResult",
    "GapReport",
    "GapRow",
    "GapStudy",
    "HMCResult",
    "ImportanceWeightWarning",
    "LatentMMD",
    "LocalFit",
    "LocalGuide",
    "LogPx",
    "MCMCWarning",
    "MLflowLogger",
    "NUTSResult",
    "PairInfo",
    "ParticleFallbackWarning",
    "PosteriorComparison",
    "PyroObjective",
    "Reconstruction",
    "SampleScore",
    "SparsityReport",
    "StudySettingsError",
    "TensorBoardLogger",
    "Trained",
    "__version__",
    "ais",
    "bdmc",
    "beta_vae",
    "check_pair",
    "code_sparsity",
    "compare_posteriors",
    "data",
    "denoising",
    "diagnostics",
    "disentanglement",
    "distributed",
    "elbo",
    "elbo_from_log_weights",
    "elbo_scatter",
    "enumerate_sites",
    "fit",
    "fit_local",
    "fix_globals",
    "gap_bars",
    "gap_histogram",
    "gap_study",
    "gaps",
    "guide_inference_data",
    "hmc",
    "iwae",
    "iwae_from_log_weights",
    "kl_warmup",
    "latent_mmd",
    "local_vi_curves",
    "log_weights",
    "mcmc_ranks",
    "mcmc_traces",
    "mean_field",
    "mmd",
    "nuts",
    "open_run",
    "posterior_pairs",
    "ppca_log_marginal",
    "ppca_mle",
    "ppca_posterior",
    "prior_sample_score",
    "read_gap_study",
    "reconstruction_error",
    "sparsity_kl",
    "to_inference_data",
    "training_curves",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use.

    So ``import ppvae`` (and the command line's start, where Ctrl-C must stay harmless) does
    not import torch and Pyro up front.
    """
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'ppvae' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
