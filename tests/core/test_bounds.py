"""The IWAE standard-error rule (spread, delta method, PSIS tail model), Pareto k̂ and its
warning (issue 16).

PPCA (float64) with guides built from the exact posterior: the full-covariance guide scaled by c
has weights with tail index xi = 1 - c^2 (c = 1.5: light tails; c = 0.3: xi = 0.91, heavy). The
coverage of the standard errors is measured in tests/core/test_se_coverage.py (slow).
"""

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppvae
from ppvae.core.bounds import delta_stderr, iwae_from_log_weights
from ppvae.core.diagnostic_warnings import khat_threshold
from ppvae.core.psis import merge_top, pareto_khat, pareto_tail, tail_length, top_count
from ppvae.guides import AmortizedLinearGaussian
from ppvae.infer.diagnostics import import_arviz
from ppvae.models import PPCA


@pytest.fixture
def ppca(float64):
    d = ppvae.data.ppca_dataset(60, 10, 3, 0.5, seed=2)
    return d, PPCA(10, 3, W=d.W, b=d.b, sigma=d.sigma, fixed=True)


def _scaled(d, c):
    g = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma, "full")
    with torch.no_grad():
        g.scale_tril = g.scale_tril * c
    return g


@pytest.mark.parametrize("num_weights", [21, 100, 1000, 5000])
def test_pareto_khat_matches_arviz_psislw(num_weights):
    g = torch.Generator().manual_seed(num_weights)
    lw = torch.randn(num_weights, 40, generator=g, dtype=torch.float64)
    lw = lw * torch.linspace(0.2, 3.0, 40, dtype=torch.float64)  # light to heavy tails
    lw[:, 0] = lw[:, 0].round()  # ties at the cutoff
    _, ref = import_arviz().psislw(lw.T.numpy().copy())
    top = torch.topk(lw, top_count(num_weights), dim=0).values
    ours = pareto_khat(top, num_weights).numpy()
    assert np.array_equal(np.isinf(ours), np.isinf(ref))
    finite = np.isfinite(ref)
    assert np.allclose(ours[finite], ref[finite], rtol=0, atol=1e-10)
    assert tail_length(1000) == 95 and tail_length(100) == 20


def test_pareto_khat_edge_cases():
    lw = torch.randn(100, 3, dtype=torch.float64)
    lw[:, 1] = -math.inf  # all weights zero
    lw[:, 2] = 0.0  # all equal: no tail above the cutoff
    k = pareto_khat(torch.topk(lw, top_count(100), dim=0).values, 100)
    assert math.isfinite(float(k[0])) and math.isnan(float(k[1])) and math.isinf(float(k[2]))
    with pytest.raises(ValueError, match="need the 21 largest of 100"):
        pareto_khat(lw[:5], 100)


@pytest.mark.parametrize("xi", [0.0, 0.25])
def test_tail_model_variance_of_generalized_pareto_weights(xi):
    """w ~ GPD(xi, 1): Var(w) / E[w]^2 = 1 / (1 - 2 xi); the body + fitted tail recovers it
    (and k̂ recovers xi); without the weights' totals only k̂ is computed."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(20000, 30, generator=g, dtype=torch.float64)
    w = -torch.log1p(-u) if xi == 0 else ((1 - u) ** -xi - 1) / xi
    lw = w.log()
    tail = pareto_tail(torch.topk(lw, top_count(20000), 0).values, 20000,
                       torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0))
    assert abs(float(tail.var_ratio.median()) - 1 / (1 - 2 * xi)) < 0.1 / (1 - 2 * xi)
    assert abs(float(tail.khat.median()) - xi) < 0.05
    no_sums = pareto_tail(torch.topk(lw, top_count(20000), 0).values, 20000)
    assert torch.equal(no_sums.khat, tail.khat) and no_sums.var_ratio.isnan().all()


def test_merge_top_streams_to_the_same_top_weights():
    lw = torch.randn(1000, 7, dtype=torch.float64)
    top = None
    for chunk in lw.split(64):
        top = merge_top(top, chunk, top_count(1000))
    assert torch.equal(top, torch.topk(lw, top_count(1000), dim=0).values)


def test_iwae_rule_and_khat_for_an_over_dispersed_guide(ppca):
    d, model = ppca
    guide = _scaled(d, 1.5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", ppvae.ImportanceWeightWarning)  # light tails: no warning
        b = ppvae.iwae(model, guide, d.x, 100)  # default: two estimates
    assert b.num_samples == 200 and b.k == 100 and b.khat is not None and b.ess is not None
    assert float(b.khat.max()) < khat_threshold(100)
    assert float(b.khat.median()) < 0.2  # over-dispersed: bounded weights, k̂ < 0
    assert "k̂ > 0.50 on 0/60" in repr(b)
    # the rule on the same draws: max(spread, largest delta-method s.e., tail-model s.e.) / sqrt(2)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        b = ppvae.iwae(model, guide, d.x, 100)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        lw = ppvae.log_weights(model, guide, d.x, 200).reshape(2, 100, -1)
    l1, l2 = torch.logsumexp(lw, 1), torch.logsumexp(2 * lw, 1)
    est = l1 - math.log(100)  # [2, N]
    delta = delta_stderr(l1, l2, 100)
    flat = lw.reshape(200, -1)
    tail = pareto_tail(torch.topk(flat, top_count(200), 0).values, 200, torch.logsumexp(flat, 0),
                       torch.logsumexp(2 * flat, 0))
    rule = torch.stack([est.std(0), delta.max(0).values, (tail.var_ratio / 100).sqrt()])
    rule = rule.max(0).values / math.sqrt(2)
    assert torch.allclose(b.per_datapoint, est.mean(0), atol=1e-10)
    assert torch.allclose(b.stderr, rule, atol=1e-10)
    assert torch.allclose(b.khat, tail.khat, atol=1e-12)
    one = iwae_from_log_weights(flat, 100)  # the same rule from held weights
    assert torch.allclose(one.stderr, rule, atol=1e-10) and one.num_samples == 200


def test_single_estimate_is_the_delta_method_or_the_tail_model(ppca):
    d, model = ppca
    guide = _scaled(d, 1.5)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        b = ppvae.iwae(model, guide, d.x, 50, num_estimates=1)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        lw = ppvae.log_weights(model, guide, d.x, 50)
    l1, l2 = torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0)
    tail = pareto_tail(torch.topk(lw, top_count(50), 0).values, 50, l1, l2)
    ref = torch.fmax(delta_stderr(l1, l2, 50), (tail.var_ratio / 50).sqrt())
    assert b.num_samples == 50 and torch.allclose(b.stderr, ref, atol=1e-12)
    small = ppvae.iwae(model, guide, d.x, 5)  # too few weights for a tail fit: no k̂
    assert small.khat is None and small.num_samples == 10 and "k̂" not in repr(small)


def test_heavy_tailed_weights_are_flagged_and_warned(ppca):
    d, model = ppca
    guide = _scaled(d, 0.3)  # xi = 1 - 0.09: nearly infinite-mean weights
    with torch.no_grad(), pytest.warns(ppvae.ImportanceWeightWarning,
                                       match=r"IWAE_200: Pareto k̂ .* above 0\.57 on \d+/60 "
                                             r"datapoints \(worst .*AIS"):
        b = ppvae.iwae(model, guide, d.x, 200)
    assert b.khat is not None and float((b.khat > khat_threshold(200)).double().mean()) > 0.8
    assert "k̂ > 0.57 on" in repr(b)


def test_streamed_khat_and_stderr_equal_the_held_ones(ppca):
    d, model = ppca
    guide = _scaled(d, 0.8)
    for estimates in (1, 2):
        pyro.set_rng_seed(3)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ppvae.ImportanceWeightWarning)
            streamed = ppvae.iwae(model, guide, d.x, 300, num_estimates=estimates,
                                  chunk_size=60)  # k > chunk: running sums and top weights
            pyro.set_rng_seed(3)
            lw = ppvae.log_weights(model, guide, d.x, 300 * estimates, chunk_size=60)
            held = iwae_from_log_weights(lw, 300)
        for field in ("per_datapoint", "stderr", "ess", "khat"):
            assert torch.allclose(getattr(streamed, field), getattr(held, field),
                                  atol=1e-10), field
        assert streamed.num_samples == held.num_samples == 300 * estimates


def test_iwae_k1_is_the_elbo_and_bad_arguments(ppca):
    d, model = ppca
    guide = _scaled(d, 1.5)
    b = ppvae.iwae(model, guide, d.x, 1, num_estimates=50)
    assert b.name == "elbo" and b.num_samples == 50 and b.khat is None
    assert torch.isfinite(b.stderr).all()
    with pytest.raises(ValueError, match="num_estimates must be >= 1"):
        ppvae.iwae(model, guide, d.x, 10, num_estimates=0)
