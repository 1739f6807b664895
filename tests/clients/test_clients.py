"""Users' Pyro code through every ppvae tool, unmodified (clients.py), and its numbers checked
against Pyro's own estimator and against closed-form marginals."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from stats import z_threshold

import ppvae
from clients import CLIENTS
from ppvae.analysis.compare import compare_posteriors
from ppvae.core.contract import ContractError, ParticleFallbackWarning
from ppvae.core.globals import fix_globals, global_values
from ppvae.core.modes import evaluation
from ppvae.core.trace import trace_fn
from ppvae.core.weights import enumerated_log_weights

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


def test_elbo_equals_pyros_own_elbo_per_datapoint(client):
    """ppvae's per-datapoint ELBO averages to Pyro's ELBO loss divided by N.

    Pyro's estimator is the one the pair's author would use: Trace_ELBO, TraceEnum_ELBO when
    the model enumerates, particles one trace at a time when the pair does not vectorize. For
    M2, whose guide enumerates the label, ppvae's ELBO is that of q(z | x) with the label summed
    out of both q and p: by Jensen it is at least TraceEnum_ELBO's (which keeps q(y, z | x)).
    """
    c, n, s = client, client.x.shape[0], 400
    model, guide = _evaluated(c)
    with torch.no_grad():
        ours = ppvae.elbo(model, guide, c.x, s, model_kwargs=c.model_kwargs)
        info = ppvae.check_pair(model, guide, c.x, model_kwargs=c.model_kwargs)
        estimator = TraceEnum_ELBO if info.enumerated else Trace_ELBO
        with evaluation(c.model, c.guide), warnings.catch_warnings():  # eval mode, as ppvae
            # fixed globals are deterministic sites in the model: Pyro's validation notes them
            warnings.filterwarnings("ignore", "Found non-auxiliary vars in guide")
            pyro_loss = estimator(num_particles=s, vectorize_particles=info.vectorized,
                                  max_plate_nesting=info.max_plate_nesting).loss(
                model, guide, c.x, **c.model_kwargs)
    # Pyro also counts the fixed globals' log p(W) - log q(W), once: not a per-datapoint term
    pyro_elbo = (-pyro_loss - _global_terms(model, guide, c)) / n
    # two independent estimates, each with s.e. ours.mean_stderr
    tol = z_threshold(1) * math.sqrt(2) * ours.mean_stderr
    if c.name == "m2":
        assert ours.mean > pyro_elbo - tol
    else:
        assert abs(ours.mean - pyro_elbo) < tol


def _global_terms(model, guide, c) -> float:
    """log p(W) - log q(W) at the fixed global values (0 without globals)."""
    names = c.truth.get("globals", ())
    if not names:
        return 0.0
    g = pyro.poutine.trace(guide).get_trace(c.x, **c.model_kwargs)
    m = pyro.poutine.trace(pyro.poutine.replay(model, trace=g)).get_trace(c.x, **c.model_kwargs)
    return float(sum(tr.nodes[k]["fn"].log_prob(tr.nodes[k]["value"]).sum().detach() * sign
                     for k in names for tr, sign in ((m, 1), (g, -1))))


def test_m2_label_is_summed_out_exactly(float64):
    """The enumerated log weights equal a sum over labels written out by hand."""
    c = CLIENTS["m2"]()
    net, x = c.modules[0].double(), c.x.double()
    info = ppvae.check_pair(net.model, net.guide, x)
    drawn = trace_fn(net.guide, x, particles=4, particle_dim=info.particle_dim, prune=False)
    lw = enumerated_log_weights(net.model, net.guide, x, 4, info, {}, drawn)  # [4, N]
    z = drawn.nodes["z"]["value"]  # [4, N, K]
    labels = torch.eye(net.classes, dtype=x.dtype)
    log_p, log_q = [], []
    for y in labels:  # every datapoint given label y: log p(x, y, z) and log q(y, z | x)
        ys = y.expand(x.shape[0], -1)
        tr = pyro.poutine.trace(pyro.poutine.condition(net.model, data={"z": z})).get_trace(
            x, ys)
        log_p.append(sum(tr.nodes[k]["fn"].log_prob(tr.nodes[k]["value"]) for k in "zyx"))
        q_y = dist.OneHotCategorical(logits=net.encoder_y(x)).log_prob(ys)
        loc, raw = net.encoder_z(torch.cat([x, ys], -1)).chunk(2, -1)
        q_z = dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1).log_prob(z)
        log_q.append(q_y + q_z)
    by_hand = torch.stack(log_p).logsumexp(0) - torch.stack(log_q).logsumexp(0)
    assert torch.allclose(lw, by_hand, atol=1e-10), (lw - by_hand).abs().max()


def test_gmm_prior_marginal_is_recovered(float64):
    """AIS and IWAE with the assignment summed out agree with the exact mixture marginal."""
    c = CLIENTS["gmm_prior"]()
    x = c.x.double()[:10]
    t = {k: v.double() for k, v in c.truth.items()}
    cov = t["W"] @ t["W"].T + torch.diag(t["psi"])
    exact = torch.stack([dist.MultivariateNormal(t["W"] @ m, cov).log_prob(x) + w.log()
                         for w, m in zip(t["weights"], t["means"], strict=True)]).logsumexp(0)
    res = ppvae.ais(c.model, x, num_steps=300, num_chains=16)
    z = (res.per_datapoint - exact) / res.stderr
    assert z.abs().max() < z_threshold(x.shape[0]), z
    lw = ppvae.log_weights(c.model, c.model, x, 4000)  # the prior as proposal (a guide too)
    iw = ppvae.iwae_from_log_weights(lw, 4000)
    z = (iw.per_datapoint - exact) / iw.stderr
    assert z.abs().max() < z_threshold(x.shape[0]), z


def test_a_pair_that_cannot_vectorize_warns_once_and_names_the_site():
    c = CLIENTS["cvae_boolean_mask"]()
    with pytest.warns(ParticleFallbackWarning, match=r"the model fails after site 'z'.*"
                                                     r"IndexError.*one trace at a time") as rec:
        ppvae.elbo(c.model, c.guide, c.x, 3, model_kwargs=c.model_kwargs)
        ppvae.iwae(c.model, c.guide, c.x, k=3, model_kwargs=c.model_kwargs)
    assert len([w for w in rec if w.category is ParticleFallbackWarning]) == 1


def test_global_latents_train_and_evaluation_says_how_to_fix_them():
    c = CLIENTS["bayesian_logistic"]()
    with pytest.raises(ContractError, match=r"latent site 'coef' is outside.*fix_globals"):
        ppvae.elbo(c.model, c.guide, c.x, 3, model_kwargs=c.model_kwargs)


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
