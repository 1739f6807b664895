"""ArviZ-complete output of hmc, nuts and guide draws (issue 18): sample_stats under ArviZ's
names with values checked against their definitions (lp is the log target, energy = -lp +
kinetic energy whose mean is D/2), a log_likelihood group equal to the model's observed log
density, so that az.loo recovers log p(x_n) where its Pareto k̂ says it can; guide draws split
into chains with a finite R-hat; netCDF round trips; progress bars on request only."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.guides.linear import AmortizedLinearGaussian
from ppvae.infer.diagnostics import import_arviz
from ppvae.infer.guide_draws import guide_inference_data
from ppvae.models.ppca import PPCA

az = import_arviz()
SIGMA = 2.0  # a weak likelihood: the posterior stays close enough to the prior for PSIS-LOO


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gaussian(x):
    """z_n ~ N(0, 1), x_n ~ N(z_n, SIGMA^2): posterior and log p(x_n) in closed form."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, SIGMA).to_event(1), obs=x)


def gamma_poisson(x):
    """z_n ~ Gamma(3, 2) (a constrained latent: HMC moves log z), x_ni ~ Poisson(z_n)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Gamma(x.new_tensor(3.0), 2.0))
        pyro.sample("x", dist.Poisson(z.unsqueeze(-1).expand(*z.shape, x.shape[-1]))
                    .to_event(1), obs=x)


def _summary_rhat(idata) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Shape validation failed", no NaN R-hat warnings
        s = az.summary(idata)
    return s["r_hat"].to_numpy()


@pytest.fixture(scope="module")
def gaussian_hmc():
    pyro.set_rng_seed(3)
    x = (1 + SIGMA**2) ** 0.5 * torch.randn(6, 1, dtype=torch.float64)
    res = ppvae.hmc(gaussian, x, num_chains=4, num_warmup=200, num_samples=500,
                    num_leapfrog=4)
    return x, res


def test_hmc_sample_stats_follow_their_definitions(gaussian_hmc):
    x, res = gaussian_hmc
    idata = res.to_inference_data(datapoints=[10, 11, 12, 13, 14, 15])
    stats = idata.sample_stats
    assert {"acceptance_rate", "step_size", "diverging", "n_steps", "lp", "energy",
            "datapoint_energy"} <= set(stats.data_vars)
    for name in ("acceptance_rate", "step_size", "diverging", "n_steps", "lp"):
        assert stats[name].dims == ("chain", "draw", "datapoint"), name
    assert stats["energy"].dims == ("chain", "draw")  # what az.bfmi and az.plot_energy take
    assert np.isfinite(az.bfmi(idata)).all()
    z = res.samples["z"]  # [C, S, N, 1]
    # lp is the log target at the draw: log N(z; 0, 1) + log N(x; z, SIGMA) (no Jacobian)
    lp = (dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, SIGMA).log_prob(x)).squeeze(-1)
    assert torch.allclose(res.lp, lp, atol=1e-10)
    ll = dist.Normal(z, SIGMA).log_prob(x).squeeze(-1)
    assert torch.allclose(torch.as_tensor(idata.log_likelihood["x"].values), ll, atol=1e-10)
    # energy = -lp + p'M^-1 p / 2 where the transition ends; HMC leaves (z, p) ~ pi(z) N(0, M),
    # so the kinetic energy is chi^2_D / 2 with mean D/2 = 0.5 and variance 0.5
    kinetic = res.energy + res.lp
    assert (kinetic >= 0).all()
    se = (0.5 / kinetic.numel()) ** 0.5
    assert abs(float(kinetic.mean()) - 0.5) < 4 * 2 * se  # x2: draws are not independent
    assert torch.allclose(torch.as_tensor(stats["energy"].values), res.energy.sum(-1))
    assert (stats["n_steps"].values >= 1).all() and (stats["n_steps"].values <= 4).all()
    assert list(stats["step_size"].coords["datapoint"].values) == [10, 11, 12, 13, 14, 15]


def test_loo_recovers_log_px_where_pareto_k_allows(gaussian_hmc):
    """Leaving x_n out returns z_n to its prior, so elpd_loo_n estimates log p(x_n); PSIS-LOO's
    harmonic-mean weights have finite variance here (posterior var 0.8 < SIGMA^2 / 2), and its
    per-datapoint error is within 4 times sqrt(relative variance of the weights / ESS)."""
    x, res = gaussian_hmc
    idata = res.to_inference_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loo = az.loo(idata, pointwise=True)
        waic = az.waic(idata)
    assert float(loo.pareto_k.max()) < 0.7
    assert math.isfinite(loo.elpd_loo) and math.isfinite(waic.elpd_waic)
    exact = dist.Normal(0.0, (1 + SIGMA**2) ** 0.5).log_prob(x).squeeze(-1)
    r = (SIGMA**2 / (1 + SIGMA**2)) / SIGMA**2  # posterior variance / SIGMA^2
    d = x.squeeze(-1) * SIGMA**2 / (1 + SIGMA**2)  # x - posterior mean
    relvar = ((1 - r) / (1 - 2 * r) ** 0.5 * torch.exp(d**2 / SIGMA**2 * (
        1 / (1 - 2 * r) - 1 / (1 - r))) - 1)
    ess = torch.as_tensor(res.diagnostics.ess_bulk[:, 0])
    err = torch.as_tensor(loo.loo_i.values) - exact
    assert (err.abs() < 4 * (relvar / ess).sqrt()).all(), (err, (relvar / ess).sqrt())


def test_nuts_sample_stats_and_lp_with_a_jacobian(float64):
    x = torch.tensor([[0.0, 1, 0, 2], [3, 4, 2, 5]])
    pyro.set_rng_seed(1)
    res = ppvae.nuts(gamma_poisson, x, num_chains=2, num_warmup=60, num_samples=80,
                     max_tree_depth=6)
    idata = res.to_inference_data()
    stats = idata.sample_stats
    assert {"diverging", "step_size", "acceptance_rate", "n_steps", "tree_depth", "lp",
            "energy"} <= set(stats.data_vars)
    assert stats["diverging"].shape == (2, 80, 2) and stats["energy"].dims == ("chain", "draw")
    n = res.n_steps.double()
    assert torch.equal(res.tree_depth.double(), torch.ceil(torch.log2(n + 1)))
    assert int(res.tree_depth.max()) <= 6 and bool(((res.accept_prob >= 0)
                                                    & (res.accept_prob <= 1)).all())
    z = res.samples["z"][..., 0]  # [C, S, N]
    # lp: log Gamma(z) + log Poisson(x | z) + log z (the Jacobian of z = exp(u))
    lik = dist.Poisson(z.unsqueeze(-1)).log_prob(x).sum(-1)
    assert torch.allclose(res.log_likelihood, lik, atol=1e-8)
    assert torch.allclose(res.lp, dist.Gamma(3.0, 2.0).log_prob(z) + lik + z.log(), atol=1e-8)
    # energy: Pyro's potential of the previous draw (-sum_n lp) plus the fresh momentum's
    # kinetic energy, chi^2_D / 2 with D = 2 coordinates: mean 1, variance 1
    kinetic = res.energy[:, 1:] + res.lp[:, :-1].sum(-1)
    assert (kinetic >= -1e-9).all()
    assert abs(float(kinetic.mean()) - 1.0) < 4 * (1 / kinetic.numel()) ** 0.5
    assert np.isfinite(_summary_rhat(idata)).all()


def test_guide_draws_have_several_chains_and_survive_netcdf(tmp_path, float64):
    data = ppvae.data.ppca_dataset(5, 6, 2, 0.5, seed=2)
    model = PPCA(6, 2, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    q = AmortizedLinearGaussian.from_ppca(data.W, data.b, data.sigma, "full", name="nc_q")
    rows = [4, 8, 15, 16, 23]
    idata = guide_inference_data(model, q, data.x, num_chains=4, num_draws=500,
                                 datapoints=rows)
    assert dict(idata.posterior.sizes) == {"chain": 4, "draw": 500, "datapoint": 5,
                                           "latent_dim": 2}
    rhat = _summary_rhat(idata)  # independent draws: split R-hat close to 1, ESS ~ 2000
    assert np.isfinite(rhat).all() and rhat.max() < 1.01
    z = torch.as_tensor(idata.posterior["z"].values)
    ll = dist.Normal(z @ data.W.T + data.b, data.sigma).log_prob(data.x).sum(-1)
    assert torch.allclose(torch.as_tensor(idata.log_likelihood["x"].values), ll, atol=1e-9)
    path = tmp_path / "q.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    for group in ("posterior", "log_likelihood"):
        assert list(back[group]["datapoint"].values) == rows
    assert np.array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    assert np.array_equal(back.log_likelihood["x"].values, idata.log_likelihood["x"].values)
    assert np.isfinite(_summary_rhat(back)).all()


def test_mcmc_inference_data_survives_netcdf(gaussian_hmc, tmp_path):
    _, res = gaussian_hmc
    idata = res.to_inference_data(datapoints=[7, 1, 2, 3, 4, 5])
    idata.to_netcdf(str(tmp_path / "mcmc.nc"))
    back = az.from_netcdf(str(tmp_path / "mcmc.nc"))
    for group in ("posterior", "sample_stats", "log_likelihood"):
        assert list(back[group]["datapoint"].values) == [7, 1, 2, 3, 4, 5], group
    assert back.sample_stats["diverging"].dtype == bool
    assert np.array_equal(back.sample_stats["step_size"].values,
                          idata.sample_stats["step_size"].values)
    assert np.isfinite(_summary_rhat(back)).all()


@pytest.mark.parametrize("sampler", ["hmc", "nuts"])
def test_progress_bar_only_on_request(sampler, capsys):
    x = torch.zeros(2, 1)
    run = getattr(ppvae, sampler)
    options = dict(num_chains=2, num_warmup=20, num_samples=5, diagnose=False,
                   log_likelihood=False)
    run(gaussian, x, progress=False, **options)
    assert capsys.readouterr().err == ""
    run(gaussian, x, progress=True, **options)
    err = capsys.readouterr().err
    total = 2 * 25 if sampler == "nuts" else 25  # nuts: one bar over both chains
    assert f"{sampler}:" in err and f"/{total} [" in err, err
