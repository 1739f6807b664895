"""Pareto k̂ of importance weights per datapoint, from the largest log weights only.

Pareto smoothed importance sampling (Vehtari, Simpson, Gelman, Yao and Gabry 2024, "Pareto
smoothed importance sampling", JMLR 25(72)) fits a generalized Pareto distribution to the
``M = ceil(min(S / 5, 3 sqrt(S)))`` largest of S importance weights; its shape k̂ estimates the
tail index of the weights' distribution. For k̂ < 0.5 the weights have a finite variance and
the central limit theorem (and a variance-based standard error) applies; above
:func:`ppvae.core.diagnostic_warnings.khat_threshold` no Monte Carlo standard error computed
from them is reliable (their Section 3).

The fit needs only the ``M + 1`` largest log weights (the ``M``-th largest above the cutoff and
the cutoff itself), so streaming estimators keep those with :func:`merge_top` instead of all S.
:func:`pareto_khat` computes k̂ exactly as ArviZ's :func:`arviz.psislw` (``reff=1``) does,
including its empirical-Bayes fit (Zhang and Stephens 2009) with its weakly informative prior,
but vectorized over datapoints (the test suite checks the two agree to rounding).

When k̂ does not apply: a flat tail (issue 16). The fit is scale-free in the exceedances
``w - u`` over the cutoff u. For weights within a few percent of each other,
``w - u ≈ u (log w - log u)``, so k̂ measures the shape of the log weights' small fluctuations,
not how heavy the weights are: scaling every log weight by λ -> 0 leaves k̂ unchanged while the
importance sampling estimate becomes exact. What the fitted tail can do to the estimate is
bounded by the part of it the tail carries, the **tail share**
``τ = sum over the tail (w_i - u) / sum over all w_i`` (:attr:`ParetoTail.tail_share`): removing
that part entirely moves ``log mean w`` by ``-log(1 - τ) ≈ τ`` nats, and a relative error r in
it by about ``r τ``. So :func:`reported_khat` reports k̂ as NaN ("not applicable") where it is
above the threshold but ``τ <`` :data:`FLAT_TAIL_SHARE` = 0.01; k̂ at or below the threshold is
reported as fitted. posterior's ``pareto_khat`` returns NA for an exactly constant tail (and
ArviZ k̂ = inf for 4 or fewer distinct tail weights, which this also reports as NaN when the tail
is flat); this extends that to tails too flat to matter, which ArviZ, loo and posterior do not
treat specially. Like k̂ itself, τ sees only the weights drawn: a heavy tail that the sample has
not reached yet is invisible to both.

Measured: a semi-supervised M2 model (docs/own-model.md) with a local diagonal q* per datapoint and
S = 2000 weights has sd(log w) about 0.02 per datapoint and its largest weight 1.05-2.6 times the
mean (median 1.25), yet ArviZ's k̂ exceeds 0.7 on 566 of 1500 (datapoint, repetition) fits, up
to 2.2. On its worst datapoint k̂ is 1.06-2.05 in all of 400 repetitions at S = 2000 but
0.10-0.16 at S = 10^4 to 4 * 10^6 (the tail flattens further out), and the estimate moved by
less than 0.001 nats; on the k̂ > 0.7 fits the ±2 s.e. interval covered a 2 * 10^5-draw
reference 94% of the time (96% over all): the estimate and its s.e. were reliable. Their tail
share was at most 0.004. The heavy-tailed cases of tests/core/test_se_coverage.py (PPCA and
factor analysis with under-dispersed or mean-field guides, S = 200 to 2000) have tail share at
least 0.057 wherever k̂ is above the threshold, so they stay flagged; 0.01 lies between the two.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["FLAT_TAIL_SHARE", "MIN_WEIGHTS", "XI_CAP", "ParetoTail", "merge_top", "pareto_khat",
           "pareto_tail", "reported_khat", "tail_length", "top_count"]

# fewest weights for which PSIS fits a tail (ArviZ returns k̂ = inf for 4 or fewer tail weights)
MIN_WEIGHTS = 21

# the largest shape the tail-model variance uses (1 / (1 - 2 xi) = 25): beyond 0.5 the fitted
# tail has no variance; chosen with the coverage measurements of tests/core/test_se_coverage.py
XI_CAP = 0.48

# below this tail share k̂ above the threshold is not applicable (module docstring, issue 16)
FLAT_TAIL_SHARE = 0.01

_ROWS_PER_BLOCK = 256  # datapoints fitted at once: bounds the [rows, grid, M] temporary


def tail_length(num_weights: int) -> int:
    """``M = ceil(min(S / 5, 3 sqrt(S)))``: how many of S weights PSIS fits (ArviZ, reff = 1)."""
    return math.ceil(min(num_weights / 5.0, 3.0 * math.sqrt(num_weights)))


def top_count(num_weights: int) -> int:
    """How many of the largest log weights :func:`pareto_khat` needs: ``M + 1``."""
    return min(tail_length(num_weights) + 1, num_weights)


def merge_top(top: torch.Tensor | None, lw: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` largest of ``top`` (kept so far) and the new log weights ``lw`` along dim 0.

    Both are ``[*, N]``; the result is ``[count, N]`` (fewer while fewer weights were seen).
    """
    pool = lw if top is None else torch.cat([top, lw], dim=0)
    return torch.topk(pool, min(count, pool.shape[0]), dim=0).values


def _gpd_fit(ary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ArviZ's ``_gpdfit`` for each row of ``ary [R, n]`` (ascending, positive): shape, scale."""
    prior_bs, prior_k = 3.0, 10.0
    n = ary.shape[1]
    m_est = 30 + int(n**0.5)
    j = torch.arange(1, m_est + 1, dtype=ary.dtype, device=ary.device)
    b = 1 - torch.sqrt(m_est / (j - 0.5))  # [m]
    b = b / (prior_bs * ary[:, int(n / 4 + 0.5) - 1 : int(n / 4 + 0.5)]) + 1 / ary[:, -1:]
    k = torch.log1p(-b.unsqueeze(-1) * ary.unsqueeze(1)).mean(-1)  # [R, m]
    len_scale = n * (torch.log(-(b / k)) - k - 1)
    weights = torch.softmax(len_scale, dim=-1)  # ArviZ: 1 / sum_j exp(L_j - L_i)
    weights = torch.where(weights >= 10 * torch.finfo(ary.dtype).eps, weights, 0.0)
    weights = weights / weights.sum(-1, keepdim=True)
    b_post = (b * weights).sum(-1, keepdim=True)  # [R, 1]
    k_post = torch.log1p(-b_post * ary).mean(-1)  # [R]
    sigma = -k_post / b_post.squeeze(-1)
    return (n * k_post + prior_k * 0.5) / (n + prior_k), sigma


class ParetoTail(NamedTuple):
    """Per-datapoint results of :func:`pareto_tail`, each ``[N]`` float64 on the CPU."""

    khat: torch.Tensor  # Pareto k̂ (inf: too few distinct tail weights; NaN: no finite weight)
    var_ratio: torch.Tensor  # Var(w) / E[w]^2 of the body + fitted tail (NaN where unknown)
    tail_share: torch.Tensor  # sum of the tail's excesses w - u over sum of all w (NaN: unknown)


def pareto_tail(top: torch.Tensor, num_weights: int, log_sum: torch.Tensor | None = None,
                log_sum_sq: torch.Tensor | None = None) -> ParetoTail:
    """Pareto k̂, and the weights' variance under the fitted tail, from the largest log weights.

    ``top [M + 1, N]`` are the :func:`top_count` largest of ``num_weights`` log weights per
    column (any order). k̂ is ArviZ's (module docstring). With ``log_sum`` and ``log_sum_sq``,
    the log-sum-exps of all S log weights and of twice them (``[N]``), it also returns the
    relative variance ``Var(w) / E[w]^2`` of the weights' distribution modelled as the
    empirical body (weights up to the cutoff) plus the fitted generalized Pareto tail with
    probability ``M / S``, whose moments include weights larger than any drawn; the shape is
    capped at :data:`XI_CAP` there, where the fitted tail's variance would be infinite; and the
    tail share τ (module docstring) that :func:`reported_khat` needs.
    """
    m = tail_length(num_weights)
    if top.shape[0] != min(m + 1, num_weights):
        raise ValueError(f"need the {min(m + 1, num_weights)} largest of {num_weights} log "
                         f"weights per datapoint, got {top.shape[0]}")
    t = torch.sort(top.detach().to(device="cpu", dtype=torch.float64), dim=0).values  # ascending
    khat = torch.full((t.shape[1],), math.inf, dtype=torch.float64)
    ratio = torch.full((t.shape[1],), math.nan, dtype=torch.float64)
    share = torch.full((t.shape[1],), math.nan, dtype=torch.float64)
    if num_weights <= m:  # no cutoff below the tail: too few weights
        return ParetoTail(khat, ratio, share)
    peak = t[-1]
    finite = torch.isfinite(peak)
    khat[~finite] = math.nan
    x = t[:, finite] - peak[finite]  # largest is 0
    cutoff = x[0].clamp(min=math.log(torch.finfo(torch.float64).tiny))
    tail = x[1:]  # [M, R] ascending; PSIS keeps those strictly above the cutoff
    keep = tail > cutoff
    sizes = keep.sum(0)
    ary = (torch.exp(tail) - torch.exp(cutoff)).T  # [R, M]
    shape = torch.full((x.shape[1],), math.inf, dtype=torch.float64)
    scale = torch.full((x.shape[1],), math.nan, dtype=torch.float64)
    for n in sizes.unique().tolist():
        if n <= 4:
            continue
        rows = (sizes == n).nonzero().squeeze(1)
        for block in rows.split(_ROWS_PER_BLOCK):
            shape[block], scale[block] = _gpd_fit(ary[block, m - n:])  # kept: the last n
    khat[finite] = shape
    if log_sum is None or log_sum_sq is None:
        return ParetoTail(khat, ratio, share)
    # moments relative to the largest weight (= 1): body from the totals minus the drawn tail
    peak_f = peak[finite]
    lse1 = log_sum.detach().to(device="cpu", dtype=torch.float64)[finite]
    lse2 = log_sum_sq.detach().to(device="cpu", dtype=torch.float64)[finite]
    tail_w = torch.where(keep, torch.exp(tail), 0.0)
    u = torch.exp(cutoff)
    excess = torch.where(keep, tail_w - u, 0.0).sum(0)
    share[finite] = (excess * torch.exp(peak_f - lse1)).clamp(min=0, max=1)
    body1 = (torch.exp(lse1 - peak_f) - tail_w.sum(0)).clamp(min=0) / num_weights
    body2 = (torch.exp(lse2 - 2 * peak_f) - (tail_w**2).sum(0)).clamp(min=0) / num_weights
    xi = shape.clamp(max=XI_CAP)
    p = sizes / num_weights
    m1 = body1 + p * (u + scale / (1 - xi))
    m2 = body2 + p * (u**2 + 2 * u * scale / (1 - xi) + 2 * scale**2 / ((1 - xi) * (1 - 2 * xi)))
    ratio[finite] = torch.where(torch.isfinite(shape), (m2 / m1**2 - 1).clamp(min=0), math.nan)
    return ParetoTail(khat, ratio, share)


def reported_khat(tail: ParetoTail, limit: float) -> torch.Tensor:
    """k̂ as reported and warned about: NaN where it is above ``limit`` on a flat tail.

    A flat tail has :attr:`ParetoTail.tail_share` below :data:`FLAT_TAIL_SHARE`: the weights
    above the cutoff carry so little of their sum that no tail shape fitted to them moves
    ``log mean w`` by more than about that share (module docstring). Elsewhere, and wherever
    the share is unknown, k̂ is ArviZ's.
    """
    flat = (tail.khat > limit) & (tail.tail_share < FLAT_TAIL_SHARE)
    return torch.where(flat, math.nan, tail.khat)


def pareto_khat(top: torch.Tensor, num_weights: int) -> torch.Tensor:
    """Pareto k̂ per column from the :func:`top_count` largest log weights ``top [M + 1, N]``.

    ``num_weights`` is S, the number of weights the top ones were taken from. Returns ``[N]``
    float64 on the CPU: ``inf`` where the tail has 4 or fewer distinct weights above the cutoff
    (as ArviZ), NaN where the largest log weight is not finite.
    """
    return pareto_tail(top, num_weights).khat
