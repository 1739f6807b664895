"""Users' Pyro code through every ppvae tool, unmodified (clients.py), and its numbers checked
against Pyro's own estimator and against closed-form marginals."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from stats import z_threshold

import ppvae
from clients import CLIENTS
from ppvae.analysis.compare import compare_posteriors
from ppvae.core.contract import ContractError, ParticleFallbackWarning
from ppvae.core.globals import fix_globals, global_values
from ppvae.core.modes import evaluation

PLATES = {"cvae_masked": "data", "factor_analysis": "obs", "gamma_poisson": "counts",
          "prodlda": "documents", "hierarchical": "data", "bayesian_logistic": "subjects",
          "cvae_boolean_mask": "data", "m2": "data", "gmm_prior": "data"}
SEQUENTIAL = {"cvae_boolean_mask"}  # pairs that cannot broadcast over a particle dimension
ENUMERATED = {"m2": ("y",), "gmm_prior": ("a",)}


@pytest.fixture(params=sorted(CLIENTS))
def client(request):
    return CLIENTS[request.param]()


@pytest.fixture(autouse=True)
def _expected_fallback(request):
    """The boolean-mask CVAE falls back to one trace per particle: its warning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParticleFallbackWarning)
        yield


def _evaluated(c):
    """The client's pair as ppvae's estimators take it: global latents fixed at q's mean."""
    names = c.truth.get("globals")
    if not names:
        return c.model, c.guide
    values = global_values(c.guide, c.x, "mean", model_kwargs=c.model_kwargs)
    assert set(values) == set(names)
    return fix_globals(c.model, values), fix_globals(c.guide, values)


def test_every_tool_runs_on_the_clients_code(client):
    c, kw, n = client, client.model_kwargs, client.x.shape[0]
    fit = ppvae.fit(c.model, c.guide, c.x, epochs=1, batch_size=16, quiet=True,
                    batch_kw=kw or None)
    assert fit.stopped == "completed"
    model, guide = _evaluated(c)
    info = ppvae.check_pair(model, guide, c.x, model_kwargs=kw)
    assert info.data_plate == PLATES[c.name] and info.num_data == n
    assert info.vectorized == (c.name not in SEQUENTIAL)
    assert info.enumerated == ENUMERATED.get(c.name, ())
    lw = ppvae.log_weights(model, guide, c.x, 3, model_kwargs=kw)
    assert lw.shape == (3, n) and torch.isfinite(lw).all()
    e = ppvae.elbo(model, guide, c.x, 4, model_kwargs=kw)
    b = ppvae.iwae(model, guide, c.x, k=4, model_kwargs=kw)
    assert torch.isfinite(e.per_datapoint).all() and torch.isfinite(b.per_datapoint).all()
    qstar = ppvae.fit_local(model, c.x, "diag", guide, num_steps=20, model_kwargs=kw)
    assert torch.isfinite(ppvae.elbo(model, qstar, c.x, 4, model_kwargs=kw).per_datapoint).all()
    family = "diag" if c.name == "gamma_poisson" else None  # a Gamma q has no Gaussian q*
    rep = ppvae.gaps(model, guide, c.x, families=family, local_steps=30, num_samples=16,
                     log_px_options={"k": 64}, model_kwargs=kw)
    assert torch.isfinite(rep.rows[0].elbo_local).all()
    a = ppvae.ais(model, c.x, num_steps=10, num_chains=2, model_kwargs=kw)
    h = ppvae.hmc(model, c.x, num_chains=2, num_warmup=20, num_samples=5, model_kwargs=kw)
    assert a.per_datapoint.shape == (n,) and torch.isfinite(a.per_datapoint).all()
    assert all(v.shape[:3] == (2, 5, n) for v in h.samples.values())
    cmp = compare_posteriors(model, c.x, h, {"q": guide}, datapoints=[0, 1], num_samples=50,
                             model_kwargs=kw)
    assert [s.method for s in cmp.summaries] == ["mcmc", "q"]


def test_elbo_equals_pyros_trace_elbo_per_datapoint(client):
    """ppvae's per-datapoint ELBO averages to Pyro's Trace_ELBO loss divided by N."""
    c, n, s = client, client.x.shape[0], 400
    with torch.no_grad():
        ours = ppvae.elbo(c.model, c.guide, c.x, s, model_kwargs=c.model_kwargs)
        info = ppvae.check_pair(c.model, c.guide, c.x, model_kwargs=c.model_kwargs)
        with evaluation(c.model, c.guide):  # ppvae evaluates in eval mode: the same networks
            pyro_loss = Trace_ELBO(num_particles=s, vectorize_particles=True,
                                   max_plate_nesting=info.max_plate_nesting).loss(
                c.model, c.guide, c.x, **c.model_kwargs)
    # two independent estimates of the same mean, each with s.e. ours.mean_stderr
    assert abs(ours.mean + pyro_loss / n) < z_threshold(1) * math.sqrt(2) * ours.mean_stderr


def test_gamma_poisson_marginal_is_recovered(float64):
    c = CLIENTS["gamma_poisson"]()
    x = c.x.double()
    a, b, m = c.truth["a"], c.truth["b"], x.shape[1]
    total = x.sum(-1)
    exact = (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + total)
             - (a + total) * math.log(b + m) - torch.lgamma(x + 1).sum(-1))  # negative binomial
    res = ppvae.ais(c.model, x, num_steps=300, num_chains=16)
    z = (res.per_datapoint - exact) / res.stderr
    assert z.abs().max() < z_threshold(x.shape[0]), z


def test_factor_analysis_marginal_is_recovered(float64):
    c = CLIENTS["factor_analysis"]()
    x = c.x.double()[:10]
    W, psi = c.truth["W"], c.truth["psi"]
    exact = dist.MultivariateNormal(torch.zeros(W.shape[0], dtype=torch.float64),
                                    W @ W.T + torch.diag(psi)).log_prob(x)
    res = ppvae.ais(c.model, x, num_steps=300, num_chains=16)
    z = (res.per_datapoint - exact) / res.stderr
    assert z.abs().max() < z_threshold(x.shape[0]), z


def test_plates_are_found_by_size_and_listed_when_none_fits():
    def model(x):
        with pyro.plate("rows", x.shape[0] + 1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x.new_zeros(x.shape[0] + 1))

    with pytest.raises(ContractError, match=r"plates found: 'rows' \(size 5, dim -1\)"):
        ppvae.check_pair(model, model, torch.zeros(4))


def test_a_subsample_of_the_wrong_size_is_named_as_a_subsample():
    def model(x):
        with pyro.plate("data", 1797, subsample_size=16):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([16, 2]).to_event(1), obs=x[:16])

    with pytest.raises(ContractError, match="a subsample of size 16 of a plate of size 1797"):
        ppvae.check_pair(model, model, torch.zeros(8, 2))
