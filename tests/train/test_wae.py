"""WAE-MMD (issue 19): the MMD estimator, the WAE loss against a hand computation, training
through fit, latent_mmd, Pyro's Trace_MMD through fit, and the acceptance comparison of a plain
autoencoder with a WAE on the binarized digits.

Statistical checks use fixed seeds and tolerances of Z standard errors (Z = 3.3, two-sided
0.999), the standard error taken from the spread of the replicates; exact checks run in float64.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.contrib.gp.kernels import RBF, RationalQuadratic
from pyro.infer import Trace_MMD
from registry import REGISTRY
from torch import nn

import ppvae
from ppvae import guides, models
from ppvae.analysis.sample_quality import BernoulliMixture, prior_sample_score
from ppvae.core.contract import ParticleFallbackWarning, check_pair
from ppvae.train.objectives import beta_vae
from ppvae.train.wae import KERNELS, WAE, WAE_SCALES, LatentMMD, latent_mmd, mmd

Z = 3.3  # two-sided 0.999 normal quantile


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


# ---------------------------------------------------------------- the MMD estimator


@pytest.mark.parametrize("kernel", KERNELS)
def test_unbiased_mmd_has_mean_zero_for_one_distribution(kernel):
    # 400 replicates of two samples of N(0, I): the U-statistic's mean is 0 within Z s.e. of
    # the replicates; the V-statistic (Pyro's Trace_MMD estimator) is biased upwards
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, 3, generator=g, dtype=torch.float64)  # [R, n, d]
    y = torch.randn(400, 16, 3, generator=g, dtype=torch.float64)
    mean, se = _mean_se(mmd(x, y, kernel))
    assert abs(mean) < Z * se
    biased, biased_se = _mean_se(mmd(x, y, kernel, unbiased=False))
    assert biased > 10 * biased_se


@pytest.mark.parametrize("kernel", KERNELS)
def test_mmd_is_positive_for_shifted_distributions(kernel):
    # N(0, I) against N(0.5, I) in 2-D: the mean over 50 replicates is many s.e. above 0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 64, 2, generator=g, dtype=torch.float64)
    y = torch.randn(50, 64, 2, generator=g, dtype=torch.float64) + 0.5
    mean, se = _mean_se(mmd(x, y, kernel))
    assert mean > 10 * se > 0


def _closed_form(x, y, kernel, scale, unbiased=True):
    """MMD^2 written out pair by pair (float64)."""
    d = x.shape[1]

    def k(a, b):
        r2 = float(((a - b) ** 2).sum())
        cs = [2 * d * scale * s for s in WAE_SCALES]
        return sum(c / (c + r2) if kernel == "imq" else math.exp(-r2 / c) for c in cs)

    def within(s):
        n = len(s)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j or not unbiased]
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * cross


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_equals_its_closed_form_and_pyros_kernels(kernel, unbiased):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64) * 2 + 1
    got = mmd(x, y, kernel, scale=0.7, unbiased=unbiased)
    assert float(got) == pytest.approx(_closed_form(x, y, kernel, 0.7, unbiased), abs=1e-12)
    # the kernel is Pyro's RationalQuadratic(scale_mixture=1) (IMQ) or RBF with C = 2 l^2,
    # summed over the scales; forward() directly: calling the PyroModule would register its
    # parameters in the global store, where the next kernel would read them
    kxy = torch.zeros(5, 7, dtype=torch.float64)
    for s in WAE_SCALES:
        length = torch.tensor(math.sqrt(2 * 3 * 0.7 * s / 2), dtype=torch.float64)
        one = torch.tensor(1.0, dtype=torch.float64)
        pk = RationalQuadratic(3, variance=one, lengthscale=length, scale_mixture=one) \
            if kernel == "imq" else RBF(3, variance=one, lengthscale=length)
        kxy = kxy + pk.forward(x, y)
    ours = sum(2 * 3 * 0.7 * s / (2 * 3 * 0.7 * s + ((x[:, None] - y[None]) ** 2).sum(-1))
               if kernel == "imq" else torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)
                                                 / (2 * 3 * 0.7 * s)) for s in WAE_SCALES)
    torch.testing.assert_close(kxy, ours, rtol=0, atol=1e-12)
    assert list(pyro.get_param_store().keys()) == []


def test_mmd_batches_over_leading_dimensions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    batched = mmd(x, y)
    assert batched.shape == (3,)
    for i in range(3):
        assert float(batched[i]) == pytest.approx(float(mmd(x[i], y[i])), abs=1e-12)


def test_mmd_errors_name_the_problem():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"unknown MMD kernel 'gauss'.*imq"):
        mmd(x, x, kernel="gauss")
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(x[:1], x)
    with pytest.raises(ValueError, match="same d"):
        mmd(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="scale"):
        mmd(x, x, scale=0.0)
    with pytest.raises(ValueError, match="unknown MMD kernel"):
        WAE(kernel="laplace")
    with pytest.raises(ValueError, match="mmd_weight"):
        WAE(mmd_weight=-1.0)


# ---------------------------------------------------------------- the WAE loss by hand

B, D, K = 6, 5, 2


class Pair(nn.Module):
    """Linear Bernoulli decoder, N(0, I) prior; a Gaussian or a point-mass encoder."""

    def __init__(self, stochastic: bool):
        super().__init__()
        self.stochastic = stochastic
        self.dec, self.enc = nn.Linear(K, D), nn.Linear(D, 2 * K)

    def model(self, x):
        pyro.module("wae_pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], K), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("wae_pair", self)
        loc, raw = self.enc(x).chunk(2, -1)
        q = dist.Normal(loc, nn.functional.softplus(raw)) if self.stochastic else \
            dist.Delta(loc, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q.to_event(1) if self.stochastic else q)


@pytest.mark.parametrize("stochastic,particles", [(False, 1), (True, 1), (True, 3)])
def test_wae_loss_equals_the_hand_computation(float64, stochastic, particles):
    torch.manual_seed(0)
    pair = Pair(stochastic)
    x = torch.bernoulli(torch.full((B, D), 0.4))
    info = check_pair(pair.model, pair.guide, x)
    objective = WAE(mmd_weight=3.0, scale=1.5, num_particles=particles)
    torch.manual_seed(7)
    loss = objective.loss(pair.model, pair.guide, x, info=info, data_scale=1.0 / B)
    # the same draws by hand: the guide's noise [P, B, K], then the prior's [P, B, K]
    torch.manual_seed(7)
    with torch.no_grad():
        loc, raw = pair.enc(x).chunk(2, -1)
    shape = (particles, B, K) if particles > 1 else (B, K)
    z = loc + nn.functional.softplus(raw) * torch.randn(shape) if stochastic else loc
    prior = torch.randn(shape)
    z, prior = z.reshape(particles, B, K), prior.reshape(particles, B, K)
    expected = 0.0
    for p in range(particles):
        with torch.no_grad():
            logits = pair.dec(z[p])
        cost = -(x * logits - nn.functional.softplus(logits)).sum(-1).mean()  # per datapoint
        expected += float(cost) + 3.0 * _closed_form(z[p], prior[p], "imq", 1.5)
    assert float(loss.detach()) == pytest.approx(expected / particles, abs=1e-10)
    # the scale contract: data_scale multiplies minus the sum of the per-datapoint objectives
    torch.manual_seed(7)
    total = objective.loss(pair.model, pair.guide, x, info=info, data_scale=1.0)
    assert float(total.detach()) == pytest.approx(B * expected / particles, abs=1e-9)


def test_wae_refuses_what_it_cannot_train():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((8, 64), 0.3))
    flat = models.Autoencoder(64, 2, (16,), prior="flat", name="wae_flat")
    enc = guides.DeltaEncoder(64, 2, (16,), name="wae_flat_q")
    with pytest.raises(ValueError, match=r"prior of latent site 'z'.*cannot be sampled"):
        ppvae.fit(flat, enc, x, epochs=1, objective=WAE(), progress=False)
    with pytest.raises(TypeError, match="not a sum of log densities"):
        beta_vae(2.0, WAE())
    bayes = REGISTRY["bayesian_vae/mlp"]()  # decoder weights are global latents
    with pytest.raises(ValueError, match="global latent site"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ParticleFallbackWarning)  # its particles: one at a time
        ppvae.fit(bayes.train_model, bayes.train_guide, bayes.x, epochs=1, objective=WAE(),
                  progress=False)


# ---------------------------------------------------------------- training through fit


@pytest.mark.parametrize("name", ["autoencoder_map/delta", "vae/mlp"])
def test_fit_trains_registry_pairs_with_the_wae(name):
    entry = REGISTRY[name]()
    x = torch.cat([entry.x] * 5)  # [60, 64]
    def trained():  # the decoder's and the encoder's parameters
        return [(k, v) for k, v in entry.model.named_parameters() if k.startswith("decoder")] \
            + [(f"q.{k}", v) for k, v in entry.guide.named_parameters()]

    params = {k: v.detach().clone() for k, v in trained()}
    result = ppvae.fit(entry.model, entry.guide, x, epochs=3, batch_size=16,
                       objective=WAE(), progress=False)
    assert result.stopped == "completed" and result.steps == 12
    assert result.objective == "wae(mmd_weight=10, kernel=imq, scale=1, num_particles=1)"
    assert all(math.isfinite(v) for v in result.train_objective)
    moved = {k for k, p in trained() if not torch.equal(p.detach(), params[k])}
    assert moved == set(params) and any(k.startswith("q.") for k in moved)


def test_fit_captures_the_wae_with_jit():
    # fit(jit=True) checks its captured graph's loss and gradients against the eager
    # objective on the first replays (CaptureError otherwise)
    entry = REGISTRY["vae/mlp"]()
    result = ppvae.fit(entry.model, entry.guide, torch.cat([entry.x] * 4), epochs=2,
                       batch_size=16, objective=WAE(num_particles=2), jit=True, progress=False)
    assert result.stopped == "completed"


def test_pyro_trace_mmd_runs_through_fit():
    entry = REGISTRY["vae/mlp"]()
    x = torch.cat([entry.x] * 3)  # [36, 64]
    for particles in (1, 4):
        result = ppvae.fit(entry.model, entry.guide, x, epochs=2, batch_size=12,
                           objective=Trace_MMD(kernel=RBF(2), num_particles=particles),
                           progress=False)
        assert result.stopped == "completed"
        assert result.objective == f"Trace_MMD(num_particles={particles}" + (
            ", vectorized)" if particles > 1 else ")")


def _trace_mmd_penalty(entry, x, particles: int, seed: int = 0) -> float:
    """Trace_MMD's penalty (its loss minus the loss without it, same draws) as ppvae runs it:
    max_plate_nesting the pair's, plus the particle plate when there are several."""
    losses = []
    for scale in (1.0, 0.0):
        torch.manual_seed(seed)
        elbo = Trace_MMD(kernel=RBF(2), mmd_scale=scale, num_particles=particles,
                         max_plate_nesting=1 + (particles > 1))
        losses.append(elbo.loss(entry.model, entry.guide, x))
    return losses[0] - losses[1]


def test_what_pyro_trace_mmd_compares(float64):
    # what the module docstring says Trace_MMD gives a WAE. One particle: the datapoints are
    # its samples, and the penalty is the biased V-statistic with one RBF scale (by hand,
    # under the same draws: the guide's noise, then the independent prior draws)
    entry = REGISTRY["vae/mlp"]()
    x = entry.x
    torch.manual_seed(0)
    with torch.no_grad():
        q = entry.guide.distribution(x).base_dist
        z = q.loc + q.scale * torch.randn(x.shape[0], 2)  # [N, K]
        prior = torch.randn(x.shape[0], 2)

        def k(a, b):
            return torch.exp(-0.5 * ((a[:, None] - b[None]) ** 2).sum(-1))

        v_statistic = k(z, z).mean() + k(prior, prior).mean() - 2 * k(z, prior).mean()
    assert _trace_mmd_penalty(entry, x, 1) == pytest.approx(float(v_statistic), abs=1e-9)
    # several particles: the particles are the samples, each a minibatch's codes flattened
    # into one point of N * K values, of which the RBF(K) kernel reads the first K (its
    # active_dims): the first datapoint's code. Changing every other row leaves it unchanged
    flipped = x.clone()
    flipped[1:] = 1 - flipped[1:]
    assert _trace_mmd_penalty(entry, flipped, 4) == _trace_mmd_penalty(entry, x, 4)


# ---------------------------------------------------------------- latent_mmd


def test_latent_mmd_is_zero_for_a_guide_that_samples_the_prior():
    # a "guide" that ignores x and draws z ~ N(0, I): its aggregate posterior is the prior, so
    # the block mean of MMD^2_u is 0 within Z standard errors
    model = models.Autoencoder(64, 3, (16,), prior="normal", name="lm_model")

    def prior_like(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 3), 1.0).to_event(1))

    x = torch.bernoulli(torch.full((400, 64), 0.3))
    rec = latent_mmd(model, prior_like, x, num_blocks=20, batch_size=128)
    assert isinstance(rec, LatentMMD) and rec.site == "z" and rec.prior == "model"
    assert rec.blocks.shape == (20,) and rec.block_size == 20
    assert abs(rec.mmd) < Z * rec.stderr
    assert rec.to_dataframe().shape == (20, 1)
    assert "LatentMMD(" in repr(rec)
    # seeded: the same draws again, and the global RNG is left as it was
    state = torch.get_rng_state()
    again = latent_mmd(model, prior_like, x, num_blocks=20, batch_size=128)
    assert again.mmd == rec.mmd and torch.equal(torch.get_rng_state(), state)


def test_latent_mmd_errors():
    entry = REGISTRY["hierarchical/ladder"]()
    with pytest.raises(ValueError, match=r"latent sites \['z2', 'z1'\]|latent sites \['z1', "
                                         r"'z2'\]"):
        latent_mmd(entry.model, entry.guide, entry.x, num_blocks=2)
    assert latent_mmd(entry.model, entry.guide, entry.x, site="z1", num_blocks=2).site == "z1"
    flat = REGISTRY["autoencoder/delta"]()
    with pytest.raises(ValueError, match="prior_codes="):
        latent_mmd(flat.model, flat.guide, flat.x, num_blocks=2)
    with pytest.raises(ValueError, match="num_blocks"):
        latent_mmd(flat.model, flat.guide, flat.x, num_blocks=10)


# ---------------------------------------------------------------- acceptance (issue 19)


def _train(digits_rows, prior: str, objective, name: str):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = models.Autoencoder(64, 4, (64,), prior=prior, name=name)
    guide = guides.DeltaEncoder(64, 4, (64,), name=f"{name}_q")
    ppvae.fit(model, guide, digits_rows, epochs=20, batch_size=100, lr=3e-3,
              objective=objective, seed=0, progress=False)
    return model, guide


def test_wae_codes_match_the_prior_and_sample_better_than_the_autoencoder(digits):
    # the plain autoencoder (flat prior: maximum-likelihood reconstruction) and the WAE (normal
    # prior, WAE-MMD) on the same 500 binarized digits, same nets, budget and seed. The flat
    # prior cannot be sampled, so both are compared against N(0, I) codes, the WAE's prior.
    x = digits.train[:500]
    ae = _train(x, "flat", None, "acc_ae")
    wae = _train(x, "normal", WAE(), "acc_wae")
    reference = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    codes = {"z": torch.randn(1000, 4, generator=torch.Generator().manual_seed(2))}
    mix = BernoulliMixture(10).fit(digits.valid)  # held-out rows, not the training rows
    lm, score = {}, {}
    for key, (model, guide) in (("ae", ae), ("wae", wae)):
        lm[key] = latent_mmd(model, guide, x, prior_codes=reference, num_blocks=10)
        score[key] = prior_sample_score(model, digits.valid, latents=codes, mixture=mix)
    # margins in standard errors of the difference (independent blocks / samples); measured
    # about 45 s.e. (MMD 3.30 vs 0.05) and 55 s.e. (NLL 45.9 vs 28.3 nats, floor 24.1)
    mmd_se = math.hypot(lm["ae"].stderr, lm["wae"].stderr)
    assert lm["ae"].mmd - lm["wae"].mmd > 5 * mmd_se
    nll_se = math.hypot(score["ae"].sample_stderr, score["wae"].sample_stderr)
    assert score["ae"].sample_nll - score["wae"].sample_nll > 5 * nll_se
    assert score["wae"].data_nll == score["ae"].data_nll < score["wae"].sample_nll
