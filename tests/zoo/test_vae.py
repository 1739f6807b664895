"""models.VAE: the contract for each likelihood, flattening, learned sigma, its encoder guide."""

import pyro
import pytest
import torch
from pyro import poutine

import ppvae
from ppvae.guides import MLPEncoder
from ppvae.models import LIKELIHOODS, VAE


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_vae_keeps_the_contract_for_every_likelihood(likelihood):
    vae = VAE(12, 3, (16,), likelihood=likelihood)
    x = torch.rand(7, 12)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    info = ppvae.check_pair(vae, vae.guide, x)
    assert info.latent == ("z",) and info.observed == ("x",) and info.num_data == 7
    lw = ppvae.log_weights(vae, vae.guide, x, 5)
    assert lw.shape == (5, 7) and torch.isfinite(lw).all()
    assert isinstance(vae.guide, MLPEncoder)


def test_observed_site_is_the_stated_likelihood():
    x = torch.rand(4, 6)
    for lik, cls in [("bernoulli", pyro.distributions.Bernoulli),
                     ("gaussian", pyro.distributions.Normal),
                     ("continuous_bernoulli", pyro.distributions.ContinuousBernoulli)]:
        vae = VAE(6, 2, (8,), likelihood=lik)
        tr = poutine.trace(poutine.replay(vae, trace=poutine.trace(vae.guide).get_trace(x))
                           ).get_trace(x)
        fn = tr.nodes["x"]["fn"]
        assert isinstance(fn.base_dist, cls) and fn.event_shape == (6,)


def test_images_are_flattened_inside():
    vae = VAE(16, 2, (8,))
    x = torch.bernoulli(torch.full((5, 4, 4), 0.3))
    lw = ppvae.log_weights(vae, vae.guide, x.reshape(5, 16), 3)
    assert lw.shape == (3, 5)
    tr = poutine.trace(vae).get_trace(x)
    assert tr.nodes["x"]["value"].shape == (5, 16)
    with pytest.raises(ValueError, match="expects 16 features"):
        vae(torch.zeros(5, 15))


def test_gaussian_sigma_fixed_or_learned():
    x = torch.randn(6, 5)
    fixed = VAE(5, 2, (8,), likelihood="gaussian", sigma=0.3)
    tr = poutine.trace(poutine.replay(fixed, trace=poutine.trace(fixed.guide).get_trace(x))
                       ).get_trace(x)
    assert torch.allclose(tr.nodes["x"]["fn"].base_dist.scale, torch.tensor(0.3))
    assert not any("sigma" in n for n, _ in fixed.named_parameters())
    learned = VAE(5, 2, (8,), likelihood="gaussian", learn_sigma=True)
    assert any("sigma" in n for n, _ in learned.named_parameters())
    r = ppvae.fit(learned, learned.guide, x.repeat(20, 1), epochs=2, batch_size=40, lr=0.05,
                  quiet=True, device="cpu")
    assert r.stopped == "completed"
    assert float(learned.sigma.detach()) != pytest.approx(1.0)  # the scale was trained
    with pytest.raises(ValueError, match="gaussian"):
        VAE(5, 2, likelihood="bernoulli", sigma=0.5)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(5, 2, likelihood="poisson")


def test_two_vaes_do_not_share_parameters():
    a, b = VAE(6, 2, (8,)), VAE(6, 2, (8,))
    x = torch.bernoulli(torch.rand(3, 6))
    ppvae.check_pair(a, a.guide, x)
    ppvae.check_pair(b, b.guide, x)
    wa, wb = a.decoder[0].weight, b.decoder[0].weight
    assert wa is not wb and not torch.equal(wa, wb)


def test_sample_decodes_prior_draws():
    vae = VAE(6, 2, (8,))
    m = vae.sample(4, torch.Generator().manual_seed(0))
    assert m.shape == (4, 6) and ((m >= 0) & (m <= 1)).all()
