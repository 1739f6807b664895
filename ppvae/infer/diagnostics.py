"""MCMC diagnostics per datapoint through ArviZ, and conversion of draws to InferenceData.

Samples ``site -> [C, S, N, size]`` (chains, draws, datapoints, coordinates) become ArviZ
``InferenceData`` with ``az.from_dict`` and dims (chain, draw, datapoint, latent_dim);
:func:`diagnostics` gives rank-normalized split R-hat, bulk and tail ESS and MCSE (Vehtari,
Gelman, Simpson, Carpenter and Bürkner 2021, "Rank-normalization, folding, and localization")
per datapoint and coordinate, as ArviZ computes them.

The InferenceData of :func:`ppvae.hmc`, :func:`ppvae.nuts` and :func:`ppvae.guide_inference_data`
follows ArviZ's schema:

* ``posterior``: the latent sites, constrained, dims (chain, draw, datapoint, latent_dim).
* ``sample_stats`` (MCMC only), with ArviZ's names: ``lp``, ``acceptance_rate``, ``step_size``,
  ``diverging``, ``n_steps``, ``tree_depth`` (NUTS), ``energy``. Per-transition statistics have
  dims (chain, draw, datapoint); ``energy`` has dims (chain, draw), as ``az.bfmi`` and
  ``az.plot_energy`` expect (what it sums is said by each sampler).
* ``log_likelihood``: ``log p(x_n | z)`` in nats at every draw, summed over the model's observed
  sites, dims (chain, draw, datapoint), named after the observed site; :func:`pointwise_log_density`
  computes it. ``az.loo`` and ``az.waic`` run on it. What they estimate here: the latents are
  local (one z_n per datapoint, the model's parameters fixed), so leaving x_n out returns z_n to
  its prior and the leave-one-out predictive density of x_n is its marginal likelihood p(x_n).
  PSIS-LOO estimates it from posterior draws with weights 1 / p(x_n | z), a Pareto-smoothed
  harmonic-mean estimator: reliable only where its Pareto k̂ is below 0.7, which fails when
  the posterior is much narrower than the prior (most VAEs on images); :func:`ppvae.iwae` and
  :func:`ppvae.ais` are the estimators of log p(x) to trust. WAIC's ``lppd`` term is the
  in-sample posterior predictive ``log E_post[p(x_n | z)]``. For guide draws (not posterior
  draws) the mean of the group over draws is the ELBO's reconstruction term
  ``E_q[log p(x_n | z)]``, and LOO / WAIC inherit the guide's error.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ..core.records import frame

if TYPE_CHECKING:
    from ..core.potential import Potential

__all__ = ["Diagnostics", "check_mcmc", "diagnostics", "e_bfmi", "import_arviz",
           "likelihood_name", "pointwise_log_density", "to_inference_data"]

_MAX_ROWS = 1 << 16  # draws x datapoints evaluated at once by pointwise_log_density


def import_arviz():
    """The ``arviz`` module, imported without the FutureWarning arviz 0.x prints on import."""
    with warnings.catch_warnings():  # arviz 0.x announces its 1.x refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def to_inference_data(samples: Mapping[str, torch.Tensor], sample_stats: Mapping | None = None,
                      datapoints=None, *, log_likelihood: Mapping | None = None):
    """``site -> [C, S, N, size]`` samples as ArviZ InferenceData (built with ``az.from_dict``).

    Args:
        samples: site -> draws ``[C, S, N, size]``; dims (chain, draw, datapoint, latent_dim)
            for a single site, ``<site>_dim`` for the last one with several.
        sample_stats: name -> ``[C, S, N]`` (dims chain, draw, datapoint) or ``[C, S]``
            (chain, draw); ArviZ's names (``diverging``, ``step_size``, ``energy``, ...).
        datapoints: labels of the datapoint dim (default 0..N-1), e.g. rows of a split.
        log_likelihood: name -> ``[C, S, N]`` pointwise log-likelihoods (nats), for
            ``az.loo`` / ``az.waic`` (see the module docstring for what they mean here).
    """
    az = import_arviz()
    posterior = {k: _numpy(v) for k, v in samples.items()}
    dims = {k: ["datapoint", "latent_dim" if len(samples) == 1 else f"{k}_dim"]
            for k in samples}
    stats = {k: _numpy(v) for k, v in (sample_stats or {}).items()}
    for k, v in stats.items():
        if v.ndim not in (2, 3):
            raise ValueError(f"sample_stats[{k!r}] has shape {v.shape}; expected [C, S] or "
                             "[C, S, N]")
        dims[k] = ["datapoint"] if v.ndim == 3 else []
    loglik = {k: _numpy(v) for k, v in (log_likelihood or {}).items()}
    for k, v in loglik.items():
        if v.ndim != 3:
            raise ValueError(f"log_likelihood[{k!r}] has shape {v.shape}; expected [C, S, N]")
        dims[k] = ["datapoint"]
    coords = None if datapoints is None else {"datapoint": [int(i) for i in datapoints]}
    return az.from_dict(posterior=posterior, sample_stats=stats or None,
                        log_likelihood=loglik or None, dims=dims, coords=coords)


def likelihood_name(pot: Potential) -> str:
    """The log_likelihood variable's name: the model's observed site (several: joined by '__')."""
    return "__".join(pot.info.observed) or "x"


def pointwise_log_density(pot: Potential, u: torch.Tensor,
                          max_rows: int = _MAX_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood and log target of every draw, each ``[K, N]`` in nats.

    ``u [K, N, D]`` are K unconstrained draws for each of the N datapoints of ``pot``. Returns
    ``log p(x_n | z)`` (summed over the model's observed sites; discrete latents the potential
    sums out are summed out of it) and ``log p(x_n, z) + log |J|``, the density HMC samples in
    unconstrained coordinates (Stan's ``lp__``). Evaluated in chunks of at most ``max_rows``
    draws x datapoints, without gradients.
    """
    k, n = u.shape[:2]
    step = max(1, max_rows // max(n, 1))
    ll, lt = [], []
    with torch.no_grad():
        for i in range(0, k, step):
            prior, lik, ldj = pot.log_parts(u[i:i + step])
            ll.append(lik)
            lt.append(prior + lik + ldj)
    return torch.cat(ll), torch.cat(lt)


def e_bfmi(energy: torch.Tensor) -> torch.Tensor:
    """E-BFMI, the energy Bayesian fraction of missing information: ``[C, S, ...]`` -> ``[C, ...]``.

    ``E[(E_s - E_{s-1})^2] / Var(E_s)`` over the draws of each chain, ArviZ's ``az.bfmi``
    (Betancourt 2016, "Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
    Carlo"); values below 0.3 say momentum resampling explores the energy distribution poorly.
    """
    e = energy.double()
    return e.diff(dim=1).pow(2).mean(1) / e.var(1)  # ArviZ: variance with ddof 1


def _extreme(a, largest: bool) -> str:
    """The largest (or smallest) non-NaN value of ``a``, formatted; "n/a" when all are NaN."""
    v = np.asarray(a, dtype=float)
    v = v[~np.isnan(v)]
    if not v.size:
        return "n/a"
    return f"{float(v.max() if largest else v.min()):.4g}"


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

    def __repr__(self) -> str:
        """The worst values over datapoints and coordinates, on one line."""
        n, d = self.rhat.shape
        return f"Diagnostics({n} datapoints x {d} coordinates: {self.headline()})"

    def headline(self) -> str:
        """The worst R-hat, ESS and MCSE over datapoints and coordinates, as one phrase."""
        return (f"max R-hat {_extreme(self.rhat, True)}, min bulk ESS "
                f"{_extreme(self.ess_bulk, False)}, min tail ESS {_extreme(self.ess_tail, False)}"
                f", max MCSE of the mean {_extreme(self.mcse_mean, True)}")

    def to_dataframe(self, datapoints=None, coordinates=None):
        """One row per (datapoint, coordinate): ``rhat``, ``ess_bulk``, ``ess_tail``, ``mcse_*``.

        A pandas DataFrame with a MultiIndex (``datapoint``, ``coordinate``); ``datapoints``
        (default 0..N-1) and ``coordinates`` (default 0..D-1, e.g. ``"z[0]"``) label them.
        ``df.groupby("datapoint").rhat.max()`` is :attr:`max_rhat`.
        """
        n, d = self.rhat.shape
        rows = list(range(n)) if datapoints is None else [int(i) for i in datapoints]
        cols = list(range(d)) if coordinates is None else list(coordinates)
        if len(rows) != n or len(cols) != d:
            raise ValueError(f"these diagnostics are [{n}, {d}] (datapoints, coordinates); got "
                             f"{len(rows)} datapoint and {len(cols)} coordinate labels")
        labels = {"datapoint": np.repeat(np.asarray(rows), d),
                  "coordinate": np.asarray(cols * n)}
        values = {f: np.asarray(getattr(self, f)).reshape(-1) for f in self._fields}
        return frame({**labels, **values}).set_index(["datapoint", "coordinate"])


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
