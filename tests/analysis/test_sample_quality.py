"""The prior-sample score (issue 19): the Bernoulli mixture's EM (monotone, recovers a known
mixture, normalized), model samples, and prior_sample_score's record and errors.

Statistical checks use fixed seeds and tolerances of Z standard errors (Z = 3.3); the standard
errors of the fitted parameters are the asymptotic ones of a well-separated mixture (its
responsibilities are ~ 0 or 1): sqrt(pi (1 - pi) / N) for a weight, sqrt(mu (1 - mu) / N_k)
for a pixel probability of a component with N_k rows. Exact checks run in float64.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppvae import models
from ppvae.analysis.sample_quality import (
    BernoulliMixture,
    SampleScore,
    model_samples,
    prior_sample_score,
)
from ppvae.core.contract import ContractError

Z = 3.3


def _mixture_data(n: int, seed: int = 0):
    """Rows from a known 2-component mixture of 6 Bernoullis: (x, weights, probs)."""
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    probs = torch.tensor([[0.9, 0.8, 0.9, 0.1, 0.2, 0.1],
                          [0.1, 0.2, 0.2, 0.8, 0.9, 0.7]], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(weights, n, replacement=True, generator=g)  # [N]
    return torch.bernoulli(probs[comp], generator=g), weights, probs


@pytest.mark.parametrize("pseudocount", [0.0, 1.0])
def test_em_increases_its_objective_monotonically(pseudocount, digits):
    # the log-likelihood (pseudocount 0) or the log posterior (MAP EM) never decreases; a
    # rounding-sized slack of 1e-10 nats per datapoint (float64)
    mix = BernoulliMixture(8, pseudocount=pseudocount, max_iter=200, tol=0.0).fit(digits.valid)
    history = mix.history
    assert history.dtype == torch.float64 and 20 <= history.numel() <= 200
    assert bool((history.diff() >= -1e-10).all())
    assert float(history[-1] - history[0]) > 1.0  # it did climb
    assert f"{history.numel()} EM iterations" in repr(mix)


def test_em_recovers_a_known_mixture():
    n = 4000
    x, weights, probs = _mixture_data(n)
    mix = BernoulliMixture(2, pseudocount=0.0, seed=3).fit(x)
    assert mix.converged
    order = mix.weights.argsort()  # component 0 is the lighter one, as in the truth
    w, p = mix.weights[order], mix.probs[order]
    w_se = (weights * (1 - weights) / n).sqrt()
    assert bool(((w - weights).abs() < Z * w_se).all())
    p_se = (probs * (1 - probs) / (n * weights[:, None])).sqrt()
    assert bool(((p - probs).abs() < Z * p_se).all())
    # and its held-out log-likelihood is close to the true mixture's on fresh rows
    fresh, _, _ = _mixture_data(2000, seed=1)
    true_ll = torch.logsumexp(weights.log() + fresh @ probs.log().T
                              + (1 - fresh) @ (1 - probs).log().T, dim=1)
    gap = mix.log_prob(fresh) - true_ll  # [2000]
    assert abs(float(gap.mean())) < Z * float(gap.std()) / math.sqrt(2000) + 0.01


def test_mixture_log_prob_is_normalized():
    # the sum over all 2^D binary vectors of exp(log_prob) is 1 (float64), smoothed or not
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((50, 5), 0.35, dtype=torch.float64))
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)), dtype=torch.float64)
    for pseudocount in (0.0, 0.5):
        mix = BernoulliMixture(3, pseudocount=pseudocount).fit(x)
        lp = mix.log_prob(every)
        assert lp.dtype == torch.float64 and lp.shape == (32,)
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_mixture_is_seeded_and_refuses_what_it_cannot_fit(digits):
    a = BernoulliMixture(5, seed=4).fit(digits.valid)
    b = BernoulliMixture(5, seed=4).fit(digits.valid)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.weights, b.weights)
    with pytest.raises(ValueError, match="0/1 data"):
        BernoulliMixture(2).fit(torch.rand(10, 4))
    with pytest.raises(ValueError, match="rows of 64 values"):
        a.log_prob(torch.ones(3, 5))
    with pytest.raises(RuntimeError, match="not fitted"):
        BernoulliMixture(2).log_prob(torch.ones(3, 4))
    with pytest.raises(ValueError, match="at least 4 rows"):
        BernoulliMixture(4).fit(torch.ones(3, 4))
    with pytest.raises(ValueError, match="components >= 1"):
        BernoulliMixture(0)


def test_model_samples_are_prior_draws_of_the_observed_site():
    model = models.Autoencoder(16, 2, (8,), prior="normal", name="sq_map")
    template = torch.zeros(3, 16)
    x = model_samples(model, template, 40)
    assert x.shape == (40, 16) and bool(((x == 0) | (x == 1)).all())
    # given codes are decoded: 2000 copies of the code 0 give rows whose pixel frequencies are
    # the decoder's probabilities at 0 (within Z binomial s.e.)
    codes = torch.zeros(2000, 2)
    rows = model_samples(model, template, 2000, latents={"z": codes})
    with torch.no_grad():
        probs = torch.sigmoid(model.decoder(codes[:1]))[0]  # [16]
    se = (probs * (1 - probs) / 2000).sqrt()
    assert bool(((rows.mean(0) - probs).abs() < Z * se + 1e-6).all())
    flat = models.Autoencoder(16, 2, (8,), prior="flat", name="sq_flat")
    with pytest.raises(ContractError, match="latents="):
        model_samples(flat, template, 5)


def test_prior_sample_score_record(digits):
    pyro.clear_param_store()
    model = models.Autoencoder(64, 2, (16,), prior="normal", name="sq_score")
    score = prior_sample_score(model, digits.valid, num_samples=300, components=5)
    assert isinstance(score, SampleScore) and score.latents == "prior"
    assert score.per_sample.shape == (300,) and score.components == 5
    assert score.sample_nll == pytest.approx(float(score.per_sample.mean()))
    assert score.sample_stderr == pytest.approx(float(score.per_sample.std()) / math.sqrt(300))
    # an untrained decoder samples noise: far above the data's own NLL (the floor)
    assert score.gap > 10 * math.hypot(score.sample_stderr, score.data_stderr)
    assert score.to_dataframe().shape == (300, 1)
    assert "SampleScore(" in repr(score)
    # seeded, and the global RNG is left as it was
    state = torch.get_rng_state()
    again = prior_sample_score(model, digits.valid, num_samples=300, components=5)
    assert again.sample_nll == score.sample_nll and torch.equal(torch.get_rng_state(), state)


def test_prior_sample_score_refuses_non_binary_data_and_likelihoods():
    model = models.Autoencoder(4, 2, (8,), prior="normal", name="sq_binary")
    with pytest.raises(ValueError, match="0/1 data"):
        prior_sample_score(model, torch.rand(20, 4), num_samples=10, components=2)

    def gaussian(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 4), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    data = torch.bernoulli(torch.full((20, 4), 0.5))
    with pytest.raises(ValueError, match="model's samples must be non-empty 0/1"):
        prior_sample_score(gaussian, data, num_samples=10, components=2)


def _mixture_model(weights, probs):
    """A model whose samples are the mixture's: x | c ~ Bernoulli(probs[c]), c ~ weights."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("x", dist.Bernoulli(probs[c]).to_event(1), obs=x)

    return model


def test_a_model_sampling_the_data_distribution_scores_at_the_floor():
    # held-out rows of the known mixture; a model sampling that mixture scores its data's NLL
    # (within Z s.e. of the difference, plus the in-sample optimism of the fitted floor, about
    # 13 parameters / (2 * 2000 rows) nats); a model with every pixel's probability pulled
    # halfway to 0.5 scores many s.e. worse
    held_out, weights, probs = _mixture_data(2000, seed=2)
    mix = BernoulliMixture(2, pseudocount=0.0).fit(held_out)
    right = prior_sample_score(_mixture_model(weights, probs), held_out, num_samples=2000,
                               mixture=mix)
    blurred = prior_sample_score(_mixture_model(weights, (probs + 0.5) / 2), held_out,
                                 num_samples=2000, mixture=mix)
    se = math.hypot(right.sample_stderr, right.data_stderr)
    assert abs(right.gap) < Z * se + 13 / 4000
    assert blurred.sample_nll - right.sample_nll > 10 * math.hypot(blurred.sample_stderr,
                                                                     right.sample_stderr)
