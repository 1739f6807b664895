"""Batched HMC and Pyro NUTS against the exact PPCA posterior (Tipping and Bishop 1999).

Tolerances: posterior means within 4 ArviZ MCSEs (for 30-60 coordinates, a family-wise false
alarm rate under 1%); the covariance, shared by all datapoints in PPCA, averaged over datapoints
and compared within 4 standard errors of that average (the Gaussian sample-covariance variance at
the bulk ESS, not the spread over a handful of datapoints, which is a t statistic with N - 1
degrees of freedom); R-hat < 1.01; ESS above stated floors.
"""

import types

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.core.potential import Potential
from ppvae.infer.diagnostics import diagnostics
from ppvae.infer.hmc import hmc, hmc_step
from ppvae.infer.nuts import nuts
from ppvae.models.ppca import PPCA

ESS_BULK_FLOOR = 400  # per coordinate and datapoint, out of 4 chains x 600 draws (HMC)
ESS_TAIL_FLOOR = 300
NUTS_ESS_FLOOR = 200  # out of 4 chains x 250 draws


@pytest.fixture(autouse=True)
def _one_thread():
    """Samplers run thousands of tiny sequential evaluations: intra-op threads only add
    synchronization (30x slower on a busy 2-core machine), so these tests use one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _ppca(n, d, k):
    data = ppvae.data.ppca_dataset(n, d, k, 0.5, seed=1)
    return data, PPCA(d, k, W=data.W, b=data.b, sigma=data.sigma, fixed=True)


def _check_against_exact(samples, data, diag):
    mean, cov = ppvae.ppca_posterior(data.W, data.b, data.sigma, data.x)
    z = samples["z"]  # [C, S, N, K]
    err = (z.mean((0, 1)) - mean).numpy() / diag.mcse_mean
    assert abs(err).max() < 4, abs(err).max()
    zc = z - z.mean((0, 1))
    covs = torch.einsum("csnk,csnl->nkl", zc, zc) / (z.shape[0] * z.shape[1] - 1)  # [N, K, K]
    # s.e. of a Gaussian sample covariance from ESS draws: var(s_ij) = (c_ii c_jj + c_ij^2) / ESS
    # (per datapoint, the pairwise-smaller bulk ESS), averaged over the N datapoints
    ess = torch.as_tensor(diag.ess_bulk, dtype=cov.dtype)  # [N, K]
    pair_ess = torch.minimum(ess[:, :, None], ess[:, None, :])  # [N, K, K]
    var = (cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / pair_ess
    se = var.sum(0).sqrt() / covs.shape[0]
    cz = (covs.mean(0) - cov) / se
    assert cz.abs().max() < 4, cz
    assert diag.rhat.max() < 1.01, diag.rhat.max()


def test_hmc_matches_exact_ppca_posterior(float64):
    data, model = _ppca(10, 10, 3)
    res = hmc(model, data.x, num_chains=4, num_warmup=300, num_samples=600, num_leapfrog=8)
    idata = res.to_inference_data()
    assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "latent_dim")
    assert idata.posterior["z"].shape == (4, 600, 10, 3)
    diag = diagnostics(idata)
    assert diag.rhat.shape == (10, 3) and diag.max_rhat.shape == (10,)
    _check_against_exact(res.samples, data, diag)
    assert diag.ess_bulk.min() > ESS_BULK_FLOOR, diag.ess_bulk.min()
    assert diag.ess_tail.min() > ESS_TAIL_FLOOR, diag.ess_tail.min()
    assert 0.6 < float(res.accept_prob.mean()) < 0.99


def test_nuts_matches_exact_ppca_posterior(float64):
    data, model = _ppca(3, 6, 2)
    res = nuts(model, data.x, num_chains=4, num_warmup=150, num_samples=250)
    assert res.samples["z"].shape == (4, 250, 3, 2)
    diag = diagnostics(res.to_inference_data())
    _check_against_exact(res.samples, data, diag)
    assert diag.ess_bulk.min() > NUTS_ESS_FLOOR, diag.ess_bulk.min()
    assert int(res.divergences.sum()) == 0


def test_hmc_handles_constrained_latents(float64):
    # z ~ Gamma(3, 2), x_i ~ Poisson(z): conjugate posterior Gamma(3 + sum x, 2 + m)
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(x.new_tensor(3.0), 2.0))  # [..., N]
            pyro.sample("x", dist.Poisson(z.unsqueeze(-1).expand(*z.shape, 4)).to_event(1),
                        obs=x)

    x = torch.tensor([[0.0, 1, 0, 2], [3, 4, 2, 5]])
    res = hmc(model, x, num_chains=4, num_warmup=200, num_samples=400, num_leapfrog=5)
    z = res.samples["z"][..., 0]  # [C, S, N]
    assert bool((z > 0).all())
    exact = (3 + x.sum(1)) / (2 + 4)
    diag = diagnostics(res.to_inference_data())
    err = (z.mean((0, 1)) - exact).numpy() / diag.mcse_mean[:, 0]
    assert abs(err).max() < 4, err


def test_discrete_latents_are_summed_out_or_refused():
    def mixture(x):  # a per-datapoint assignment only: summed out, nothing left to move
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5 * x.new_ones(())))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1), 1.0).to_event(1), obs=x)

    with pytest.raises(ppvae.ContractError, match=r"no continuous latent sites \(its discrete "
                                                  r"ones \['c'\] are summed out\)"):
        hmc(mixture, torch.zeros(3, 2), num_warmup=20, num_samples=1)

    def counts(x):  # a Poisson latent has no finite support to sum over
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Poisson(3.0 * x.new_ones(())))
            pyro.sample("x", dist.Normal(k.unsqueeze(-1), 1.0).to_event(1), obs=x)

    with pytest.raises(ppvae.ContractError, match=r"'k' has discrete support.*enumerate"):
        hmc(counts, torch.zeros(3, 2), num_warmup=20, num_samples=1)


def _correlated_ppca(n=6):
    """x_n = z_1 + z_2 + noise (sigma 0.3): the posterior of z_n has correlation -0.92 and
    condition number 23, which a diagonal mass matrix cannot remove."""
    W = torch.tensor([[1.0, 1.0]])
    b, sigma = torch.zeros(1), torch.tensor(0.3)
    x = torch.linspace(-2.0, 2.0, n).unsqueeze(-1)  # [N, 1]
    data = types.SimpleNamespace(W=W, b=b, sigma=sigma, x=x)
    return data, PPCA(1, 2, W=W, b=b, sigma=sigma, fixed=True)


def test_dense_mass_matches_exact_correlated_posterior(float64):
    data, model = _correlated_ppca()
    res = hmc(model, data.x, num_chains=4, num_warmup=200, num_samples=600)
    assert res.inv_mass.shape == (4, 6, 2, 2)  # dense by default for 2 coordinates
    diag = diagnostics(res.to_inference_data())
    _check_against_exact(res.samples, data, diag)
    # the adapted metric whitens the posterior: F^-1 cov F^-T has eigenvalues near 1 (the
    # window's covariance from 4 chains x 120 autocorrelated draws: within a factor 2),
    # where the unpreconditioned condition number is 23
    _, cov = ppvae.ppca_posterior(data.W, data.b, data.sigma, data.x)
    f = torch.linalg.cholesky(res.inv_mass[0])  # [N, 2, 2]
    fi = torch.linalg.inv(f)
    ev = torch.linalg.eigvalsh(fi @ cov @ fi.transpose(-1, -2))  # [N, 2]
    assert bool((ev > 0.5).all() and (ev < 2.0).all()), ev
    assert torch.linalg.cond(cov) > 20
    # a whitened 2-D Gaussian at ~0.8-0.9 acceptance takes leapfrog steps of order 1
    eps = float(res.step_size.median())
    assert 0.4 < eps < 2.0, res.step_size
    # and the kept trajectories last the default trajectory_time (1.2, 2.0), rounded up to
    # whole steps: between 1.2 and 2.0 + eps
    t = res.n_steps.double() * eps
    assert 1.2 <= float(t.min()) and float(t.max()) <= 2.0 + eps, (t.min(), t.max())
    assert res.num_leapfrog == int(res.n_steps.max())


def test_dense_mass_beats_diagonal_on_correlated_posterior(float64):
    data, model = _correlated_ppca()
    opts = dict(num_chains=4, num_warmup=200, num_samples=400, diagnose=False)
    dense = hmc(model, data.x, dense_mass=True, **opts)
    pyro.set_rng_seed(0)
    diagonal = hmc(model, data.x, dense_mass=False, **opts)
    assert diagonal.inv_mass.shape == (4, 6, 2)
    ess_dense = diagnostics(dense.to_inference_data()).ess_bulk.min(1)  # [N]
    ess_diag = diagnostics(diagonal.to_inference_data()).ess_bulk.min(1)
    # same draws and gradients; the diagonal metric is limited by the narrow direction (1/sqrt(23)
    # of the wide one), so its steps are several times shorter and its ESS lower on every
    # datapoint (a deterministic outcome at this seed; the margin is about 3x)
    assert float(dense.step_size.median()) > 2 * float(diagonal.step_size.median())
    assert (ess_dense > ess_diag).all(), (ess_dense, ess_diag)


def test_dense_metric_with_a_diagonal_matrix_is_the_diagonal_transition(float64):
    # the whitened-momentum transition: a dense inverse mass that is diagonal gives exactly
    # the diagonal metric's transition (same random numbers)
    data, model = _ppca(4, 5, 3)
    pot = Potential(model, data.x)
    u = pot.sample_init(3)  # [C, N, D]
    logp, grad = pot.target_and_grad(u)
    inv_mass = torch.rand_like(u) + 0.5
    step = torch.full(u.shape[:2], 0.3)

    def fn(q):
        lp, g = pot.target_and_grad(q)
        return lp, g, ()

    outs = []
    for m in (inv_mass, torch.diag_embed(inv_mass)):
        torch.manual_seed(5)
        outs.append(hmc_step(u, logp, grad, (), fn, step, 4, m))
    for a, b in zip(outs[0], outs[1], strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.allclose(a, b, atol=1e-12), (a - b).abs().max()
