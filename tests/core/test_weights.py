"""log_weights and the ELBO/IWAE bounds against PPCA's closed forms (float64)."""

import itertools
import math

import pyro
import pytest
import torch

import ppvae
import ppvae.analysis.ppca
import ppvae.core.bounds
import ppvae.core.weights
from ppvae.guides import AmortizedLinearGaussian, MLPEncoder
from ppvae.models import PPCA

Z99 = 2.576  # two-sided 99% normal quantile


@pytest.fixture
def ppca(float64):
    d = ppvae.data.ppca_dataset(200, 10, 3, 0.5, seed=1)
    model = PPCA(10, 3, W=d.W, b=d.b, sigma=d.sigma, fixed=True)
    return d, model, ppvae.ppca_log_marginal(d.W, d.b, d.sigma, d.x)


def _perturbed_guide(d, covariance, scale_factor):
    g = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma, covariance)
    with torch.no_grad():  # move it away from the optimum in a fixed, seeded way
        g.bias = g.bias + 0.1 * torch.randn(3, dtype=d.x.dtype)
        if covariance == "full":
            g.scale_tril = g.scale_tril * scale_factor
        else:
            g.scale = g.scale * scale_factor
    return g


def test_exact_posterior_weights_are_constant_and_exact(ppca):
    d, model, log_px = ppca
    guide = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma)
    with torch.no_grad():
        lw = ppvae.log_weights(model, guide, d.x, 64, chunk_size=10)  # [64, N]
    assert lw.shape == (64, 200)
    assert (lw - log_px).abs().max() < 1e-8


@pytest.mark.parametrize("covariance,scale_factor", [("full", 1.7), ("diag", 0.6)])
def test_elbo_equals_log_px_minus_exact_kl(ppca, covariance, scale_factor):
    d, model, log_px = ppca
    guide = _perturbed_guide(d, covariance, scale_factor)
    with torch.no_grad():
        e = ppvae.elbo(model, guide, d.x, 2000)
        q = guide.distribution(d.x)
        scale = q.scale_tril if covariance == "full" else q.base_dist.scale
        kl = ppvae.analysis.ppca.ppca_kl_to_posterior(d.W, d.b, d.sigma, d.x, q.mean, scale)
    z = (e.per_datapoint - (log_px - kl)) / e.stderr  # [N] standardized errors
    assert z.abs().max() < 4.5  # 200 datapoints: P(max |z| > 4.5) ~ 1e-3 under the null
    assert abs(float(z.mean())) * math.sqrt(200) < 4  # no systematic bias


def test_elbo_of_an_mlp_encoder_matches_closed_form_kl(ppca):
    d, model, log_px = ppca
    enc = MLPEncoder(10, 3, (16,)).to(torch.float64)
    with torch.no_grad():
        e = ppvae.elbo(model, enc, d.x, 2000)
        q = enc.distribution(d.x)
        kl = ppvae.analysis.ppca.ppca_kl_to_posterior(d.W, d.b, d.sigma, d.x, q.mean,
                                                     q.base_dist.scale)
    z = (e.per_datapoint - (log_px - kl)) / e.stderr
    assert z.abs().max() < 4.5


def test_bound_ordering_and_iwae_convergence(ppca):
    d, model, log_px = ppca
    guide = _perturbed_guide(d, "full", 1.5)  # over-dispersed: IWAE converges quickly
    exact = float(log_px.mean())
    with torch.no_grad():
        bounds = [ppvae.elbo(model, guide, d.x, 2000)] + [
            ppvae.iwae(model, guide, d.x, k, num_estimates=max(2, 2000 // k)) for k in
            (5, 50, 500)
        ]
    for lo, hi in itertools.pairwise(bounds):
        se = math.hypot(lo.mean_stderr, hi.mean_stderr)
        assert hi.mean > lo.mean - Z99 * se, (lo, hi)
    for b in bounds:
        assert b.mean < exact + Z99 * b.mean_stderr
    gaps = [exact - b.mean for b in bounds]
    assert gaps[0] > 0.5  # the perturbed guide is poor...
    assert gaps[-1] < 0.02  # ...and IWAE_500 is within 0.02 nats of the exact log p(x)


def test_streaming_iwae_matches_materialized_log_weights(ppca):
    d, model, _ = ppca
    guide = _perturbed_guide(d, "full", 1.5)
    with torch.no_grad():
        pyro.set_rng_seed(3)
        streamed = ppvae.iwae(model, guide, d.x, 300, chunk_size=64,  # k > chunk: running lse
                              num_estimates=1)
        pyro.set_rng_seed(3)
        lw = ppvae.log_weights(model, guide, d.x, 300, chunk_size=64)
    held = ppvae.iwae_from_log_weights(lw, 300)
    assert torch.allclose(streamed.per_datapoint, held.per_datapoint, atol=1e-10)
    assert torch.allclose(streamed.stderr, held.stderr, atol=1e-10)
    assert streamed.num_samples == 300 and streamed.k == 300


def test_delta_method_stderr_is_calibrated(ppca):
    """The single-estimate IWAE error bar matches the spread of independent estimates (for an
    over-dispersed proposal; heavy-tailed weights make it an underestimate: see
    docs/reading-numbers.md)."""
    d, model, _ = ppca
    guide = _perturbed_guide(d, "full", 1.5)
    with torch.no_grad():
        many = ppvae.iwae(model, guide, d.x[:20], 200, num_estimates=100)
        lw = ppvae.log_weights(model, guide, d.x[:20], 200 * 100).reshape(100, 200, 20)
    spread = ppvae.core.bounds.logmeanexp(lw, dim=1).std(0)  # [20] sd of single IWAE_200 estimates
    deltas = torch.stack([ppvae.iwae_from_log_weights(lw[i], 200).stderr for i in range(100)])
    ratio = deltas.mean(0) / spread  # [20]
    assert 0.85 < float(ratio.median()) < 1.15
    # the num_estimates path reports the spread of its own estimates over sqrt(100); on fresh
    # draws it matches the spread above up to the ~7% sampling error of a 100-sample sd
    assert 0.8 < float((many.stderr * 10 / spread).median()) < 1.2


def test_gradients_flow_and_no_grad_builds_no_graph(ppca):
    d, model, _ = ppca
    guide = _perturbed_guide(d, "full", 1.3)
    lw = ppvae.log_weights(model, guide, d.x, 8)
    lw.mean().backward()
    grads = [p.grad for p in guide.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    with torch.no_grad():
        assert not ppvae.log_weights(model, guide, d.x, 8).requires_grad


def test_chunk_size_bounds_the_traced_batch(ppca, monkeypatch):
    d, model, _ = ppca
    guide = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma)
    sizes = []
    real = ppvae.core.weights._chunk

    def spy(model, guide, x, size, info, kwargs):
        sizes.append(size)
        return real(model, guide, x, size, info, kwargs)

    monkeypatch.setattr(ppvae.core.weights, "_chunk", spy)
    with torch.no_grad():
        ppvae.iwae(model, guide, d.x, 1000, chunk_size=128, num_estimates=1)
    assert max(sizes) <= 128 and sum(sizes) == 1000


def test_bad_arguments_are_rejected(ppca):
    d, model, _ = ppca
    guide = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        ppvae.log_weights(model, guide, d.x, 0)
    with pytest.raises(ValueError, match="k must be in"):
        ppvae.iwae_from_log_weights(torch.zeros(10, 3), 20)
    with pytest.raises(ValueError, match="PPCA expects x of shape"):
        model(torch.zeros(4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_weights_follow_the_data_to_cuda(float64):
    d = ppvae.data.ppca_dataset(100, 10, 3, 0.5, device="cuda")
    model = PPCA(10, 3, W=d.W, b=d.b, sigma=d.sigma, fixed=True).cuda()
    guide = AmortizedLinearGaussian.from_ppca(d.W.cpu(), d.b.cpu(), d.sigma.cpu()).cuda()
    with torch.no_grad():
        lw = ppvae.log_weights(model, guide, d.x, 16)
        b = ppvae.iwae(model, guide, d.x, 100)
    assert lw.device.type == "cuda" and b.per_datapoint.device.type == "cuda"
    exact = ppvae.ppca_log_marginal(d.W, d.b, d.sigma, d.x)
    assert (lw - exact).abs().max() < 1e-8
