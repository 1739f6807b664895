"""Diagnostics that speak up: one warning class per kind of unreliable number, with thresholds.

Every estimator that can tell its own number is unreliable says so with a Python warning of a
subclass of :class:`DiagnosticWarning`. The API raises them (filter them with the standard
:mod:`warnings` machinery); the CLI collects them with :func:`collect`, prints them at the end of
the command and writes them to the report's "Warnings" section.

Thresholds, each with its source:

* :data:`RHAT_MAX` = 1.01: rank-normalized split R-hat (Vehtari, Gelman, Simpson, Carpenter and
  Bürkner 2021, "Rank-normalization, folding, and localization", Bayesian Analysis 16(2)).
* :data:`ESS_MIN_PER_CHAIN` = 100: bulk and tail ESS of at least 100 per chain (same paper,
  Section 4.3: "we recommend requiring that the bulk-ESS is greater than 100 times the number of
  chains").
* :func:`khat_threshold`: Pareto k̂ of importance weights above min(1 - 1/log10(S), 0.7) for S
  weights (Vehtari, Simpson, Gelman, Yao and Gabry 2024, "Pareto smoothed importance sampling",
  JMLR 25(72), Section 3): above it the weights' variance is effectively infinite for that
  sample size and no Monte Carlo standard error computed from them is reliable.
* divergent transitions: any (Betancourt 2017, "A conceptual introduction to Hamiltonian Monte
  Carlo", Section 6.2; Stan's default warning).
* AIS acceptance outside [0.4, 0.9] for a target of 0.65: the HMC transitions are then far from
  the efficient regime (Neal 2011, "MCMC using Hamiltonian dynamics", Section 4.4, optimal
  acceptance ≈ 0.65); too low means the chains barely move between temperatures, too high means
  the step size is needlessly small.
* local VI not converged: the per-datapoint optimum q* was not reached by the convergence rule
  of :func:`ppvae.fit_local` (Cremer, Li and Duvenaud 2018, Section 5: no improvement over the
  last checks), so ELBO[q*] and the gaps built on it are bounds, not estimates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "AIS_ACCEPT_RANGE",
    "ESS_MIN_PER_CHAIN",
    "RHAT_MAX",
    "AISWarning",
    "ConvergenceWarning",
    "DiagnosticWarning",
    "ImportanceWeightWarning",
    "MCMCWarning",
    "collect",
    "khat_threshold",
    "warn",
]

RHAT_MAX = 1.01
ESS_MIN_PER_CHAIN = 100
AIS_ACCEPT_RANGE = (0.4, 0.9)


class DiagnosticWarning(UserWarning):
    """A number ppvae computed is less reliable than its standard error suggests."""


class ConvergenceWarning(DiagnosticWarning):
    """An optimization (per-datapoint VI, q*) stopped before its convergence rule was met."""


class MCMCWarning(DiagnosticWarning):
    """An MCMC run's diagnostics (R-hat, bulk/tail ESS, divergences) fail their thresholds."""


class ImportanceWeightWarning(DiagnosticWarning):
    """Importance weights so heavy-tailed (Pareto k̂) that their standard errors are unreliable."""


class AISWarning(DiagnosticWarning):
    """AIS transitions far from their target acceptance, or AIS that BDMC does not certify."""


def khat_threshold(num_weights: int) -> float:
    """Pareto k̂ above which ``num_weights`` importance weights give no reliable estimate.

    It is ``min(1 - 1/log10(S), 0.7)`` (Vehtari et al. 2024, Section 3): 0.5 for 100 weights,
    0.67 for 1000, 0.7 from about 2200 on.
    """
    if num_weights < 10:
        return 0.0  # too few weights for a tail fit: any k̂ is unreliable
    return min(1.0 - 1.0 / math.log10(num_weights), 0.7)


def warn(category: type[DiagnosticWarning], message: str, *, stacklevel: int = 3) -> None:
    """Raise ``message`` as a ``category`` warning, attributed to the caller's caller."""
    warnings.warn(message, category, stacklevel=stacklevel)


@contextmanager
def collect() -> Iterator[list[str]]:
    """Collect the :class:`DiagnosticWarning` messages raised inside the block (deduplicated).

    Other warnings pass through unchanged. The yielded list fills as warnings arrive and is
    complete when the block exits; the CLI prints it and writes it to the report.
    """
    found: list[str] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DiagnosticWarning)
            yield found
    finally:
        others = []
        for w in caught:
            if issubclass(w.category, DiagnosticWarning):
                text = f"{w.category.__name__}: {w.message}"
                if text not in found:
                    found.append(text)
            else:
                others.append(w)
        for w in others:  # outside the recording context: re-raised under the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
