"""PPCA closed forms checked against independent computations, and Pyro SVI against them."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from sklearn.decomposition import PCA

import ppvae
import ppvae.analysis.ppca
from ppvae.guides import AmortizedLinearGaussian
from ppvae.models import PPCA


@pytest.fixture
def data(float64):
    return ppvae.data.ppca_dataset(300, 8, 3, 0.5, seed=2)


def test_posterior_matches_gaussian_conditioning(data):
    W, b, s, x = data.W, data.b, data.sigma, data.x[:5]
    # joint Gaussian of (z, x): condition z on x with the D x D formulas
    cov_x = W @ W.T + s**2 * torch.eye(8)
    gain = W.T @ torch.linalg.inv(cov_x)  # [K, D]
    mean_ref = (x - b) @ gain.T
    cov_ref = torch.eye(3) - gain @ W
    mean, cov = ppvae.ppca_posterior(W, b, s, x)
    assert torch.allclose(mean, mean_ref, atol=1e-10)
    assert torch.allclose(cov, cov_ref, atol=1e-10)


def test_log_marginal_matches_full_covariance_gaussian(data):
    W, b, s, x = data.W, data.b, data.sigma, data.x
    ref = torch.distributions.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(8)).log_prob(x)
    assert torch.allclose(ppvae.ppca_log_marginal(W, b, s, x), ref, atol=1e-9)


def test_mle_matches_scikit_learn_probabilistic_pca(data):
    W, b, s = ppvae.ppca_mle(data.x, 3)
    pca = PCA(n_components=3).fit(data.x.numpy())
    # scikit-learn uses the unbiased covariance (1 / (N - 1)); Tipping-Bishop's MLE uses 1 / N
    c = (300 / 299) ** 0.5
    assert np.isclose(float((c * s) ** 2), pca.noise_variance_, rtol=1e-8)
    ours = ppvae.ppca_log_marginal(c * W, b, c * s, data.x).numpy()
    assert np.allclose(ours, pca.score_samples(data.x.numpy()), atol=1e-8)


def test_mle_is_a_maximum(data):
    W, b, s = ppvae.ppca_mle(data.x, 3)
    best = ppvae.ppca_log_marginal(W, b, s, data.x).mean()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        dW = 0.02 * torch.randn(W.shape, generator=g, dtype=W.dtype)
        assert ppvae.ppca_log_marginal(W + dW, b, s, data.x).mean() < best
    assert ppvae.ppca_log_marginal(W, b, s * 1.01, data.x).mean() < best
    assert ppvae.ppca_log_marginal(W, b + 0.01, s, data.x).mean() < best


def test_mean_field_gap_is_the_best_diagonal_kl(data):
    W, b, s, x = data.W, data.b, data.sigma, data.x[:3]
    mean, cov = ppvae.ppca_posterior(W, b, s, x)
    prec = torch.linalg.inv(cov)
    opt = torch.diagonal(prec).rsqrt()  # [K] optimal diagonal standard deviations
    kl = ppvae.analysis.ppca.gaussian_kl(mean, opt.expand_as(mean), mean, cov)
    gap = ppvae.analysis.ppca.mean_field_gap(W, s)
    assert gap > 0.05  # the generating W is not orthogonal: a real gap
    assert torch.allclose(kl, gap.expand(3), atol=1e-10)
    for f in (0.95, 1.05):
        worse = ppvae.analysis.ppca.gaussian_kl(mean, (opt * f).expand_as(mean), mean, cov)
        assert (worse > kl).all()


def test_bad_parameters_are_rejected(data):
    with pytest.raises(ValueError, match="sigma must be a positive scalar"):
        ppvae.ppca_log_marginal(data.W, data.b, -1.0, data.x)
    with pytest.raises(ValueError, match="b must be"):
        ppvae.ppca_posterior(data.W, data.b[:3], data.sigma, data.x)
    with pytest.raises(ValueError, match="latent_dim must be in"):
        ppvae.ppca_mle(data.x, 8)


def _svi(model, guide, x, steps=1000, lr=0.1, particles=8):
    opt = ClippedAdam({"lr": lr, "lrd": 0.001 ** (1 / steps)})  # decay to lr / 1000
    svi = SVI(model, guide, opt, Trace_ELBO(num_particles=particles, vectorize_particles=True,
                                            max_plate_nesting=1))
    for _ in range(steps):
        svi.step(x)


def _kl(data, guide, W=None, b=None, s=None):
    W = data.W if W is None else W
    b = data.b if b is None else b
    s = data.sigma if s is None else s
    q = guide.distribution(data.x)
    scale = q.scale_tril if guide.covariance == "full" else q.base_dist.scale
    return ppvae.analysis.ppca.ppca_kl_to_posterior(W, b, s, data.x, q.mean, scale)


def test_svi_full_covariance_guide_closes_the_gap(data):
    model = PPCA(8, 3, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    guide = AmortizedLinearGaussian(8, 3, "full").double()
    _svi(model, guide, data.x)
    with torch.no_grad():
        assert _kl(data, guide).mean() < 1e-3  # exact gap, closed form
        e = ppvae.elbo(model, guide, data.x, 2000)
        exact = ppvae.ppca_log_marginal(data.W, data.b, data.sigma, data.x).mean()
    assert abs(float(exact) - e.mean) < 1e-3 + 3 * e.mean_stderr  # and the estimated one


def test_svi_diagonal_guide_reaches_the_mean_field_optimum(data):
    model = PPCA(8, 3, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    guide = AmortizedLinearGaussian(8, 3, "diag").double()
    _svi(model, guide, data.x)
    with torch.no_grad():
        kl = _kl(data, guide)
    gap = float(ppvae.analysis.ppca.mean_field_gap(data.W, data.sigma))
    assert gap > 0.05
    assert abs(float(kl.mean()) - gap) < 1e-3


def test_svi_learning_ppca_agrees_with_tipping_bishop_mle(data):
    W, b, s = ppvae.ppca_mle(data.x, 3)
    mle_ll = ppvae.ppca_log_marginal(W, b, s, data.x).mean()
    pyro.set_rng_seed(0)
    model = PPCA(8, 3).double()  # learn W, b, sigma
    guide = AmortizedLinearGaussian(8, 3, "full").double()
    _svi(model, guide, data.x)
    p = model.params()
    svi_ll = ppvae.ppca_log_marginal(p.W, p.b, p.sigma, data.x).mean()
    assert svi_ll <= mle_ll + 1e-9  # the MLE is the maximum...
    assert mle_ll - svi_ll < 1e-2  # ...and SVI gets within 0.01 nats per datapoint of it
