"""Training objectives: ELBO = Pyro's Trace_ELBO, beta = 1 is the ELBO, IWAE per datapoint,
vectorized particles, the analytic-KL ELBO, and site-filtered scaling."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from stats import z_threshold

import ppvae
from ppvae.guides import AmortizedLinearGaussian
from ppvae.models import PPCA, VAE
from ppvae.train.objectives import SiteScale, in_plate


@pytest.fixture
def pair(float64):
    data = ppvae.data.ppca_dataset(6, 5, 2, 0.7, seed=1)
    model = PPCA(5, 2, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    guide = AmortizedLinearGaussian(5, 2, "diag")
    info = ppvae.check_pair(model, guide, data.x)
    return model, guide, data, info


def _loss(obj, model, guide, x, info, seed=0, **kw):
    pyro.set_rng_seed(seed)
    return obj.loss(model, guide, x, info=info, **kw)


def test_elbo_equals_pyro_trace_elbo(pair):
    model, guide, data, info = pair
    ours = _loss(ppvae.ELBO(), model, guide, data.x, info, data_scale=2.5)
    pyro.set_rng_seed(0)
    with SiteScale(2.5, in_plate("data")):
        theirs = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, data.x)
    assert torch.allclose(ours, theirs)


def test_guide_factors_count_as_in_pyro_trace_elbo(pair):
    """A pyro.factor in the guide (e.g. VQ-VAE's commitment loss) enters the training loss."""
    model, guide, data, info = pair

    def guide_with_factor(x):
        q = guide.distribution(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)
            pyro.factor("penalty", -0.5 * x.pow(2).sum(-1), has_rsample=True)

    plain = _loss(ppvae.ELBO(), model, guide, data.x, info)
    ours = _loss(ppvae.ELBO(), model, guide_with_factor, data.x, info)
    pyro.set_rng_seed(0)
    theirs = pyro.infer.Trace_ELBO().differentiable_loss(model, guide_with_factor, data.x)
    assert torch.allclose(ours, theirs)
    assert torch.allclose(ours - plain, -0.5 * data.x.pow(2).sum())


def test_beta_one_is_the_elbo_and_beta_scales_only_the_kl_terms(pair):
    model, guide, data, info = pair
    base = _loss(ppvae.ELBO(), model, guide, data.x, info)
    assert torch.equal(_loss(ppvae.beta_vae(1.0), model, guide, data.x, info), base)
    # by hand from one trace pair drawn with the same seed: -(log p(x|z) + beta (log p(z) - log q))
    pyro.set_rng_seed(0)
    g = poutine.trace(guide).get_trace(data.x)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(data.x)
    lik = m.nodes["x"]["fn"].log_prob(data.x).sum()
    kl_mc = (g.nodes["z"]["fn"].log_prob(g.nodes["z"]["value"]).sum()
             - m.nodes["z"]["fn"].log_prob(m.nodes["z"]["value"]).sum())
    for beta in (0.3, 4.0):
        got = _loss(ppvae.beta_vae(beta), model, guide, data.x, info)
        assert torch.allclose(got, -(lik - beta * kl_mc))
    warm = ppvae.kl_warmup(100, start=0.2)
    assert warm.beta(0) == pytest.approx(0.2) and warm.beta(50) == pytest.approx(0.6)
    assert warm.beta(100) == 1.0 and warm.beta(10**6) == 1.0
    assert torch.allclose(_loss(warm, model, guide, data.x, info, step=50),
                          -(lik - 0.6 * kl_mc))
    with pytest.raises(TypeError, match="IWAE"):
        ppvae.beta_vae(2.0, ppvae.IWAE(5))


def test_iwae_matches_a_hand_computation_per_datapoint(pair):
    model, guide, data, info = pair
    k, scale = 7, 3.0
    got = _loss(ppvae.IWAE(k), model, guide, data.x, info, data_scale=scale)
    pyro.set_rng_seed(0)  # the same draws: the guide's rsample of shape [k, N, K]
    q = guide.distribution(data.x)
    z = q.rsample((k,))  # [k, N, K]
    p = model.params()
    log_joint = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 + dist.Normal(z @ p.W.T + p.b, p.sigma).log_prob(data.x).sum(-1))  # [k, N]
    lw = log_joint - q.log_prob(z)  # [k, N]
    per_point = torch.logsumexp(lw, 0) - math.log(k)  # [N]
    assert torch.allclose(got, -scale * per_point.sum())
    pooled = torch.logsumexp(lw.sum(1), 0) - math.log(k)  # the wrong, whole-batch version
    assert not torch.allclose(got, -scale * pooled)
    # IWAE(1) is the ELBO: the same draws, summed in another order (log weights per datapoint
    # first, against ELBO's per-site sums), so they agree to a few float32 ulps, not bit for bit
    iwae1 = _loss(ppvae.IWAE(1), model, guide, data.x, info)
    elbo1 = _loss(ppvae.ELBO(), model, guide, data.x, info)
    assert torch.allclose(iwae1, elbo1, rtol=8 * torch.finfo(torch.float32).eps, atol=0.0)


def test_vectorized_particles_average_the_per_particle_elbos(pair):
    model, guide, data, info = pair
    got = _loss(ppvae.ELBO(num_particles=9), model, guide, data.x, info, data_scale=2.0)
    pyro.set_rng_seed(0)
    lw = ppvae.log_weights(model, guide, data.x, 9, info=info)  # [9, N], the same draws
    assert torch.allclose(got, -2.0 * lw.sum(1).mean())


def test_mean_field_elbo_agrees_with_the_monte_carlo_elbo(pair):
    model, guide, data, info = pair
    with torch.no_grad():
        analytic = _loss(ppvae.mean_field(), model, guide, data.x, info)  # exact KL
        mf = _loss(ppvae.mean_field(num_particles=4000), model, guide, data.x, info)
        pyro.set_rng_seed(1)
        lw = ppvae.log_weights(model, guide, data.x, 4000, info=info).sum(1)  # [4000]
    se = float(lw.std() / math.sqrt(4000))
    assert abs(float(mf) - float(-lw.mean())) < z_threshold(1) * 2 * se  # both estimators' errors
    assert torch.isfinite(analytic)


def test_site_scale_touches_only_data_plate_sites():
    def fn():
        pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with SiteScale(5.0, in_plate("data")):
        tr = poutine.trace(fn).get_trace()
    assert tr.nodes["g"]["scale"] == 1.0 and tr.nodes["z"]["scale"] == 5.0


def test_fit_with_each_objective_runs_on_a_vae():
    x = torch.bernoulli(torch.full((64, 10), 0.3))
    for obj in (ppvae.ELBO(num_particles=2), ppvae.IWAE(4), ppvae.mean_field(),
                ppvae.kl_warmup(5), ppvae.beta_vae(0.5)):
        pyro.clear_param_store()
        vae = VAE(10, 2, (8,))
        r = ppvae.fit(vae, vae.guide, x, valid=x[:16], epochs=2, batch_size=32, objective=obj,
                      quiet=True, device="cpu")
        assert r.stopped == "completed" and all(math.isfinite(v) for v in r.train_objective)
