"""Per-datapoint ELBO and IWAE bounds with Monte Carlo standard errors, streamed from log weights.

With log weights ``log w = log p(x, z) - log q(z | x)`` from :mod:`ppvae.core.weights`:

* ELBO(x)   = E_q[log w]                                (Kingma and Welling 2014)
* IWAE_k(x) = E[log (1/k) sum_{i<=k} w_i]                (Burda, Grosse and Salakhutdinov 2016)

and ``ELBO = IWAE_1 <= IWAE_k <= IWAE_k' <= log p(x)`` for ``k <= k'``. Estimates stream over
chunks of samples with a running log-sum-exp (memory bounded by the chunk).

Standard errors: each is the Monte Carlo s.e. of the reported number as an estimate of its
expectation (E_q[log w] for the ELBO, E[IWAE_k] for IWAE; the bound's own gap to log p(x) is
not an error of this kind).

* ELBO: the sample standard deviation of log w over sqrt(S) (parallel Welford accumulation).
* IWAE_k, the default (``num_estimates=2``, 2k samples per datapoint: twice the cost of one
  estimate): the mean of E independent estimates, with s.e. ``max(spread, delta, tail) /
  sqrt(E)``, where spread is the standard deviation of the E estimates, delta the largest
  single-estimate delta-method s.e. ``sqrt((mean(w^2) / mean(w)^2 - 1) / (k - 1))``, and tail
  the same delta method with Var(w) / E[w]^2 taken from the PSIS tail model of all E k weights
  (the empirical body plus the fitted generalized Pareto tail, whose moments include weights
  larger than any drawn; shape capped at 0.48, :func:`ppvae.core.psis.pareto_tail`). Each term
  covers a failure of the others: with heavy-tailed weights the sample variance misses the rare
  large weights, so the estimate that missed them reports a small delta s.e. (the other one
  usually does not); two estimates' spread is a one-degree-of-freedom estimate (±2 of it covers
  only 70%); the tail model extrapolates what neither sample saw.
* IWAE_k with ``num_estimates=1``: ``max(delta, tail)``. Cheaper and optimistic for
  heavy-tailed weights.

Measured coverage of the ±2 s.e. interval (``tests/core/test_se_coverage.py``; PPCA and factor
analysis in float64, exact posteriors, 600 (datapoint, repetition) trials per case, k = 100 and
1000, 11 guides from over-dispersed (c = 1.5 times the posterior scale) to heavy-tailed (c = 0.6,
tail index 0.64; mean-field on a strongly correlated posterior, 0.79) and with per-datapoint
amortization errors): ELBO 0.94-0.96 (S = 100); default IWAE 0.94-0.98 in every case; one
estimate 0.90-0.98 (below 0.93 only for heavy-tailed or badly amortized guides, which k̂
flags); the plain delta method of one estimate 0.77-0.97.

When it is unreliable: for every IWAE with k >= 21 the Pareto k̂ of each datapoint's weights is
returned (``Bound.khat``, computed as ArviZ's ``psislw`` on all E k weights) and
:class:`ppvae.ImportanceWeightWarning` is raised where it exceeds ``min(1 - 1/log10(k), 0.7)``
(Vehtari et al. 2024; :func:`ppvae.core.diagnostic_warnings.khat_threshold`). Above it the
weights' variance is effectively infinite at this k: the s.e. rests on the extrapolated tail
model, and the IWAE estimate is far from converged (a better guide, a larger k or AIS is the
remedy). k̂ of one run is itself noisy: it is lower in the runs that missed the large weights,
so treat a warning that names many datapoints as applying to the guide, not only to those
datapoints. k̂ is reported as NaN (not applicable) and not warned about where it is above the
threshold on a flat tail: the weights above the PSIS cutoff carry less than 1% of the weights'
sum, so no fitted tail shape moves the estimate by more than about 0.01 nats (near-constant
weights, e.g. a local q* close to the posterior, whose k̂ measures only the shape of tiny
log-weight fluctuations; :mod:`ppvae.core.psis`, issue 16). The Kish effective sample size
``(sum w)^2 / sum w^2`` (smallest over the estimates) is returned alongside (``Bound.ess``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch

from .contract import check_pair
from .diagnostic_warnings import ImportanceWeightWarning, khat_threshold, warn
from .estimate import record_mean, record_mean_stderr
from .psis import MIN_WEIGHTS, merge_top, pareto_tail, reported_khat, top_count
from .records import per_datapoint_frame
from .weights import iter_log_weights, pair_info, resolve_chunk_size, samples_bar

__all__ = [
    "Bound",
    "delta_stderr",
    "elbo",
    "elbo_from_log_weights",
    "iwae",
    "iwae_from_log_weights",
    "logmeanexp",
]


class Bound(NamedTuple):
    """A per-datapoint bound estimate with its Monte Carlo standard error."""

    name: str  # "elbo" or "iwae"
    k: int  # importance samples inside the log (1 for the ELBO)
    per_datapoint: torch.Tensor  # [N]
    stderr: torch.Tensor  # [N] Monte Carlo standard error of each entry
    num_samples: int  # samples drawn per datapoint in total
    ess: torch.Tensor | None = None  # [N] Kish ESS of k weights (IWAE; smallest over estimates)
    khat: torch.Tensor | None = None  # [N] Pareto k̂ of all the weights (IWAE, k >= 21; NaN: n/a)

    @property
    def mean(self) -> float:
        """Average of ``per_datapoint`` over datapoints."""
        return record_mean(self)

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (independent errors across datapoints)."""
        return record_mean_stderr(self)

    def __repr__(self) -> str:
        label = "ELBO" if self.name == "elbo" else f"IWAE_{self.k}"
        return (
            f"Bound({label}: mean {self.mean:.4f} ± {self.mean_stderr:.4f} over "
            f"{self.per_datapoint.numel()} datapoints, {self.num_samples} samples each"
            f"{self._khat_note()})"
        )

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``).

        Columns ``per_datapoint`` and ``stderr`` (nats), and ``ess`` and ``khat`` where the
        bound has them (IWAE).
        """
        return per_datapoint_frame(self)

    def _khat_note(self) -> str:
        if self.khat is None:
            return ""
        limit = khat_threshold(self.k)
        na = int(self.khat.isnan().sum())
        return (f"; k̂ > {limit:.2f} on {int((self.khat > limit).sum())}/{self.khat.numel()}"
                + (f", n/a on {na}" if na else ""))


def logmeanexp(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``log mean exp`` of ``t`` along ``dim``: logsumexp minus log of that dimension's size."""
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def delta_stderr(lse1: torch.Tensor, lse2: torch.Tensor, k: int) -> torch.Tensor:
    """Delta-method s.e. of ``log mean w`` from two log-sum-exps over ``k`` weights.

    They are ``lse1 = logsumexp(log w)`` and ``lse2 = logsumexp(2 log w)``; the result is NaN
    for ``k < 2``.
    """
    # mean(w^2) / mean(w)^2 = exp(lse2 - 2 lse1) * k; unbiased variance factor k / (k - 1)
    if k < 2:
        return torch.full_like(lse1, float("nan"))
    ratio = torch.exp(lse2 - 2 * lse1) * k
    return ((ratio - 1).clamp(min=0) / (k - 1)).sqrt()


def elbo_from_log_weights(lw: torch.Tensor) -> Bound:
    """ELBO per datapoint from log weights ``[S, N]``."""
    s = lw.shape[0]
    se = lw.std(0) / math.sqrt(s) if s > 1 else torch.full_like(lw[0], float("nan"))
    return Bound("elbo", 1, lw.mean(0), se, s)


def iwae_from_log_weights(lw: torch.Tensor, k: int) -> Bound:
    """IWAE_k per datapoint from log weights ``[S, N]``: S // k independent estimates averaged.

    The standard error and Pareto k̂ follow :func:`iwae` (module docstring), with the groups as
    its estimates; k̂ above the threshold is warned about.
    """
    s = lw.shape[0]
    if k < 1 or k > s:
        raise ValueError(f"k must be in [1, {s}] for {s} log weights per datapoint, got {k}")
    if k == 1:
        return elbo_from_log_weights(lw)  # IWAE_1 is the ELBO, named so as iwae(k=1) does
    groups = s // k
    used = lw[: groups * k]
    top = torch.topk(used, top_count(groups * k), dim=0).values if k >= MIN_WEIGHTS else None
    lw = used.reshape(groups, k, -1)  # [G, k, N]
    b = _combine(k, torch.logsumexp(lw, 1), torch.logsumexp(2 * lw, 1), top)
    _warn_khat(b, stacklevel=4)
    return b


def elbo(
    model, guide, x: torch.Tensor, num_samples: int = 100, *, chunk_size: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None, progress: bool | None = None,
) -> Bound:
    """Per-datapoint ELBO ``E_q[log p(x, z) - log q(z | x)]`` from ``num_samples`` samples each.

    In nats, with the Monte Carlo s.e. of each datapoint's mean (module docstring). The
    samples stream in chunks of ``chunk_size`` (default: :func:`ppvae.core.weights.
    default_chunk_size`, measured per device);
    ``progress`` shows a bar over them when they take several chunks (True, False, or None for
    one only on a terminal: :mod:`ppvae.core.progress`).
    """
    kwargs = dict(model_kwargs or {})
    if num_samples < 2:
        raise ValueError("num_samples must be >= 2 to estimate a standard error")
    info = pair_info(model, guide, x, None, kwargs)
    chunk = resolve_chunk_size(chunk_size, info.num_data, x)
    # the estimate is a number, not a loss: no autograd graph (1.3x faster; a guide that
    # differentiates inside, as semi-amortized refinement does, opens its own enable_grad)
    with samples_bar(progress, num_samples, chunk, "elbo") as bar, torch.no_grad():
        n_tot, mean, m2 = _welford(iter_log_weights(model, guide, x, num_samples,
                                                    chunk_size=chunk, info=info,
                                                    model_kwargs=kwargs, bar=bar))
    se = (m2 / (n_tot - 1)).sqrt() / math.sqrt(n_tot)
    return Bound("elbo", 1, mean, se, n_tot)


def _welford(chunks) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(count, mean ``[N]``, sum of squared deviations ``[N]``) over chunks ``[S_i, N]``."""
    mean: torch.Tensor | None
    m2: torch.Tensor | None
    n_tot, mean, m2 = 0, None, None
    for lw in chunks:
        lw = lw.detach()
        nb = lw.shape[0]
        mb = lw.mean(0)
        m2b = ((lw - mb) ** 2).sum(0)
        if mean is None:
            n_tot, mean, m2 = nb, mb, m2b
            continue
        assert m2 is not None  # set with mean
        delta = mb - mean  # Chan et al.'s parallel variance update
        tot = n_tot + nb
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n_tot * nb / tot
        n_tot = tot
    assert mean is not None and m2 is not None  # num_samples >= 2: at least one chunk
    return n_tot, mean, m2


def _combine(k: int, lse1: torch.Tensor, lse2: torch.Tensor,
             top: torch.Tensor | None) -> Bound:
    """The IWAE_k record from E estimates' log-sum-exps ``lse1, lse2 [E, N]``.

    ``top [M + 1, N]`` are the largest of all E * k log weights (for Pareto k̂) or None.
    """
    e = lse1.shape[0]
    est = lse1 - math.log(k)  # [E, N]
    if k == 1:  # the ELBO from E draws
        se = est.std(0) / math.sqrt(e) if e > 1 else torch.full_like(est[0], float("nan"))
        return Bound("elbo", 1, est.mean(0), se, e)
    delta = delta_stderr(lse1, lse2, k)  # [E, N]
    se = delta.max(0).values
    if e > 1:
        se = torch.maximum(est.std(0), se)
    ess = torch.exp(2 * lse1 - lse2).min(0).values  # Kish ESS, smallest over the estimates
    khat = None
    if top is not None:
        tail = pareto_tail(top, k * e, torch.logsumexp(lse1, 0), torch.logsumexp(lse2, 0))
        khat = reported_khat(tail, khat_threshold(k)).to(device=est.device, dtype=est.dtype)
        tail_se = (tail.var_ratio / k).sqrt().to(device=est.device, dtype=est.dtype)
        se = torch.fmax(se, tail_se)  # NaN (no tail fit) leaves se alone
    se = se / math.sqrt(e)
    return Bound("iwae", k, est.mean(0), se, k * e, ess, khat)


def _warn_khat(b: Bound, *, stacklevel: int) -> None:
    """Raise an :class:`ImportanceWeightWarning` if any datapoint's k̂ is above the threshold."""
    if b.khat is None:
        return
    limit = khat_threshold(b.k)
    bad = b.khat > limit
    if not bool(bad.any()):
        return
    worst = int(torch.nan_to_num(b.khat, nan=-math.inf).argmax())
    warn(ImportanceWeightWarning,
         f"IWAE_{b.k}: Pareto k̂ of the importance weights above {limit:.2f} on "
         f"{int(bad.sum())}/{bad.numel()} datapoints (worst {float(b.khat[worst]):.2f} at "
         f"datapoint {worst}); their weights are so heavy-tailed that the estimate and its "
         "standard error are unreliable there: use a guide closer to the posterior (or wider), "
         "a larger k, or AIS (ppvae.ais)", stacklevel=stacklevel)


def iwae(
    model,
    guide,
    x: torch.Tensor,
    k: int,
    *,
    num_estimates: int = 2,
    chunk_size: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> Bound:
    """Per-datapoint IWAE_k bound ``log (1/k) sum_i w_i``, streamed (memory bounded by the chunk).

    ``num_estimates`` independent IWAE_k estimates (``k * num_estimates`` samples per
    datapoint; the default 2 doubles the cost of one) are averaged. The standard error is the
    largest of their spread, the largest single-estimate delta-method error and the PSIS
    tail-model error, over sqrt(num_estimates); ``num_estimates=1`` drops the spread and is
    optimistic for heavy-tailed weights (module docstring, with measured coverage). For k >= 21 the
    Pareto k̂ of each datapoint's ``k * num_estimates`` weights is returned as
    ``khat`` and an :class:`ppvae.ImportanceWeightWarning` is raised where it exceeds
    :func:`ppvae.core.diagnostic_warnings.khat_threshold` (NaN, and no warning, where the
    weights' tail is too flat to matter: module docstring). k = 5000 over 1000 MNIST-sized
    datapoints needs only one chunk of activations in memory (plus the largest
    ``3 sqrt(k) + 1`` log weights per datapoint for k̂). ``progress`` shows a bar over the
    ``k * num_estimates`` samples when they take several chunks (True, False, or None for one
    only on a terminal: :mod:`ppvae.core.progress`).
    """
    kwargs = dict(model_kwargs or {})
    if k < 1 or num_estimates < 1:
        raise ValueError(f"k and num_estimates must be >= 1, got k={k}, "
                         f"num_estimates={num_estimates}")
    info = check_pair(model, guide, x, model_kwargs=kwargs)
    chunk = resolve_chunk_size(chunk_size, info.num_data, x)
    with samples_bar(progress, k * num_estimates, chunk, "iwae") as bar, torch.no_grad():
        def draw(num: int, size: int) -> Iterator[torch.Tensor]:
            for lw in iter_log_weights(model, guide, x, num, chunk_size=size, info=info,
                                       model_kwargs=kwargs, bar=bar):
                yield lw.detach()

        # whole estimates per chunk, or each estimate streamed over several chunks
        lse1, lse2, top = (_whole_estimates if k <= chunk else _streamed_estimates)(
            draw, k, num_estimates, chunk)
    b = _combine(k, lse1, lse2, top)
    _warn_khat(b, stacklevel=4)
    return b


def _whole_estimates(draw, k: int, num_estimates: int, chunk: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """IWAE's log-sum-exps ``[E, N]`` (and top weights) with ``chunk // k`` estimates a chunk.

    ``draw(num, size)`` yields log weights ``[<= size, N]``; chunks ``[m * k, N]`` are viewed
    as ``[m, k, N]``.
    """
    count, want_top = top_count(k * num_estimates), k >= MIN_WEIGHTS
    per_chunk, done = max(1, chunk // k), 0
    lse1s: list[torch.Tensor] = []
    lse2s: list[torch.Tensor] = []
    top: torch.Tensor | None = None  # the largest log weights over all estimates, for k̂
    while done < num_estimates:
        m = min(per_chunk, num_estimates - done)
        lw = torch.cat(list(draw(m * k, m * k))).reshape(m, k, -1)  # [m, k, N]
        lse1s.append(torch.logsumexp(lw, 1))
        lse2s.append(torch.logsumexp(2 * lw, 1))
        if want_top:
            top = merge_top(top, lw.reshape(m * k, -1), count)
        done += m
    return torch.cat(lse1s), torch.cat(lse2s), top


def _streamed_estimates(draw, k: int, num_estimates: int, chunk: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """IWAE's log-sum-exps ``[E, N]`` (and top weights), each estimate over several chunks.

    Running log-sum-exps and top weights keep one chunk ``[chunk, N]`` alive at a time.
    """
    count, want_top = top_count(k * num_estimates), k >= MIN_WEIGHTS
    lse1s: list[torch.Tensor] = []
    lse2s: list[torch.Tensor] = []
    top: torch.Tensor | None = None
    for _ in range(num_estimates):
        lse1 = lse2 = None
        for lw in draw(k, chunk):
            c1, c2 = torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0)
            lse1 = c1 if lse1 is None else torch.logaddexp(lse1, c1)
            lse2 = c2 if lse2 is None else torch.logaddexp(lse2, c2)
            if want_top:
                top = merge_top(top, lw, count)
        assert lse1 is not None and lse2 is not None  # k >= 1: at least one chunk
        lse1s.append(lse1.unsqueeze(0))
        lse2s.append(lse2.unsqueeze(0))
    return torch.cat(lse1s), torch.cat(lse2s), top
