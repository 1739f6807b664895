"""The sparse autoencoder: L1 (Laplace prior), KL-to-target-rate and top-k codes.

Exact checks (float64 where arithmetic is compared): the model's log joint is the reconstruction
log-likelihood plus the Laplace log density of the code; the sparsity_kl loss is the base loss
plus weight * KL(rate || minibatch mean code) on every training path (one-frame ELBO, Pyro's
handlers under an outer handler, Pyro's Trace_ELBO); top-k codes have exactly k non-zeros before
and after training and pass gradients to the kept units only; the report's numbers on hand-made
codes. Training checks (the 512 first binarized digits, fixed seeds, each fit about a second):
the KL penalty drives every unit's mean activation to the target, and the L1 prior makes the codes
far sparser than l1 = 0 on the same budget.
"""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import ppvae
from ppvae.analysis.sparsity import SparsityReport, code_sparsity, hoyer_sparsity
from ppvae.guides.sparse import SparseEncoder
from ppvae.models.sparse_autoencoder import SparseAutoencoder
from ppvae.train.sparsity import SparsityKL, rate_kl, sparsity_kl

D, K = 64, 100  # pixels of the 8x8 digits; an overcomplete code


@pytest.fixture(scope="module")
def x(digits):
    return digits.train[:512]  # [512, 64] binarized


def _pair(activation=None, k=None, l1=0.0, likelihood="bernoulli"):
    model = SparseAutoencoder(D, K, (64,), l1=l1, likelihood=likelihood)
    return model, SparseEncoder(D, K, (64,), activation=activation, k=k)


def _fit(model, guide, x, objective=None, epochs=20, **kw):
    ppvae.check_pair(model, guide, x[:64])
    return ppvae.fit(model, guide, x, epochs=epochs, batch_size=64, lr=3e-3, seed=0,
                     objective=objective, progress=False, device="cpu", **kw)


# --- the L1 variant: a Laplace prior ---------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_joint_is_reconstruction_plus_laplace_prior(likelihood, float64):
    lam = 0.7
    model, guide = _pair(l1=lam, likelihood=likelihood)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((9, D), 0.3), generator=g)  # [9, D]
    with torch.no_grad():
        lw = ppvae.log_weights(model, guide, x, 1)[0]  # [9]: log p(x, c) - log delta = log p(x, c)
        c = guide.encode(x)  # [9, K]
        out = model.decoder(c)  # [9, D]
        if likelihood == "bernoulli":
            recon = (x * torch.nn.functional.logsigmoid(out)
                     + (1 - x) * torch.nn.functional.logsigmoid(-out)).sum(-1)
        else:  # sigma = 1
            recon = (-0.5 * (x - out) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        laplace = (math.log(lam / 2) - lam * c.abs()).sum(-1)  # the L1 penalty, up to K log(lam/2)
    assert lw.dtype == torch.float64
    assert torch.allclose(lw, recon + laplace, rtol=1e-12, atol=1e-10)


def test_l1_prior_samples_and_flat_prior_refuses():
    model = SparseAutoencoder(D, K, (16,), l1=2.0)
    draws = model.sample(7, torch.Generator().manual_seed(0))
    assert draws.shape == (7, D) and ((draws > 0) & (draws < 1)).all()
    with pytest.raises(ValueError, match="improper"):
        SparseAutoencoder(D, K, (16,)).sample(3)
    with pytest.raises(ValueError, match="l1"):
        SparseAutoencoder(D, K, l1=-1.0)


def test_l1_makes_codes_sparser(x):
    """Same seed, data and budget (20 epochs): relu codes with l1 = 0.1 have a far smaller
    active fraction (|c| > 0.01) than with l1 = 0 (measured 0.17 against 0.75)."""
    fractions = {}
    for lam in (0.0, 0.1):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = _pair(l1=lam)
        _fit(model, guide, x)
        fractions[lam] = code_sparsity(guide, x).active_fraction
    assert fractions[0.1] < 0.5 * fractions[0.0], fractions


# --- the KL-to-target-rate penalty -----------------------------------------------------------


class _Outer(poutine.messenger.Messenger):
    """A do-nothing handler around the objective: forces Pyro's own trace/replay handlers."""


@pytest.mark.parametrize("path", ["one_frame", "outer_handler", "pyro_trace_elbo"])
def test_sparsity_kl_adds_the_rate_penalty(path, float64):
    """loss = base loss + data_scale * B * weight * sum_j KL(rate || mean_n c_nj), exactly."""
    model, guide = _pair(activation="sigmoid")
    x = torch.bernoulli(torch.full((16, D), 0.4), generator=torch.Generator().manual_seed(1))
    info = ppvae.check_pair(model, guide, x)
    base = ppvae.PyroObjective(Trace_ELBO()) if path == "pyro_trace_elbo" else ppvae.ELBO()
    obj = sparsity_kl(rate=0.1, weight=2.5, base=base)
    scale = 1 / 16
    if path == "outer_handler":
        with _Outer():
            loss = obj.loss(model, guide, x, info=info, data_scale=scale)
    else:
        loss = obj.loss(model, guide, x, info=info, data_scale=scale)
    plain = base.loss(model, guide, x, info=info, data_scale=scale)
    rho_hat = guide.encode(x).mean(0)  # [K]
    by_hand = 0.1 * torch.log(0.1 / rho_hat) + 0.9 * torch.log(0.9 / (1 - rho_hat))
    assert torch.allclose(loss - plain, 2.5 * by_hand.sum(), rtol=1e-10)
    assert torch.allclose(rate_kl(0.1, rho_hat), by_hand.sum(), rtol=1e-12)
    grads = torch.autograd.grad(loss, list(guide.parameters()))
    assert all(torch.isfinite(gr).all() for gr in grads)


def test_kl_penalty_drives_mean_activation_to_the_target(x):
    """Sigmoid codes, 100 epochs of 8 minibatches, rate 0.1, weight 3.

    With the penalty every unit's mean activation over the 512 training rows is within 0.02 of
    0.1. The number is deterministic (fixed seed), so the tolerance is not a Monte Carlo one: at
    a stationary point the penalty's gradient weight * (rho_hat - rho) / (rho_hat (1 - rho_hat))
    balances the reconstruction's pull on the unit, leaving a deviation of order
    pull * rho (1 - rho) / weight, measured 0.011 at most here; 0.02 (a fifth of the target)
    leaves room for rounding across platforms. (The mean over the 512 rows is the average of the
    8 minibatch means the penalty sees.) Without the penalty the same pair's units sit far from
    the target (means 0.31 to 0.74, average 0.51).
    """
    means = {}
    for penalized in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = _pair(activation="sigmoid")
        objective = sparsity_kl(rate=0.1, weight=3.0) if penalized else None
        result = _fit(model, guide, x, objective, epochs=100)
        assert result.objective.startswith("sparsity_kl(rate 0.1, weight 3") == penalized
        means[penalized] = code_sparsity(guide, x).mean_activation  # [K] rho_hat per unit
    assert (means[True] - 0.1).abs().max() < 0.02, means[True]
    assert (means[False] - 0.1).abs().mean() > 0.2, means[False]
    assert (means[False] - 0.1).abs().min() > 0.05, means[False]


def test_sparsity_kl_trains_under_jit(x):
    """fit(jit=True) replays the captured step (its first replays are checked against the eager
    objective's loss and gradients inside fit, a mismatch raises CaptureError) and follows the
    eager run: the same seed gives the same noise, so only float32 rounding differs."""
    curves = []
    for jit in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)  # the same initial parameters
        model, guide = _pair(activation="sigmoid")
        result = _fit(model, guide, x[:256], sparsity_kl(rate=0.1), epochs=2, jit=jit,
                      validate=False)
        assert result.stopped == "completed"
        curves.append(torch.tensor(result.train_objective))
    assert torch.allclose(curves[0], curves[1], rtol=1e-4), curves


def test_sparsity_kl_refuses_codes_outside_the_unit_interval():
    x = torch.bernoulli(torch.full((8, D), 0.5), generator=torch.Generator().manual_seed(0))
    model, relu = _pair(activation="relu")
    with pytest.raises(ValueError, match=r"site 'z'.*relu codes"):
        _fit(model, relu, x, sparsity_kl(), epochs=1)

    class Loose(torch.nn.Module):  # no declared code range: the values are checked
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(D, K)

        def forward(self, x):
            pyro.module("loose", self)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", pyro.distributions.Delta(3 * self.net(x), event_dim=1))

    with pytest.raises(ValueError, match=r"site 'z'.*range over"):
        _fit(model, Loose(), x, sparsity_kl(), epochs=1)
    with pytest.raises(ValueError, match="no latent site 'code'"):
        _fit(model, SparseEncoder(D, K, activation="sigmoid"), x, sparsity_kl(site="code"),
             epochs=1)
    with pytest.raises(ValueError, match="target rate"):
        sparsity_kl(rate=1.5)
    assert isinstance(sparsity_kl(), SparsityKL) and sparsity_kl().name == "sparsity_kl-elbo"


# --- top-k -----------------------------------------------------------------------------------


def test_topk_codes_have_exactly_k_nonzeros(x):
    k = 5
    model, guide = _pair(k=k)
    assert guide.activation == "linear"
    with torch.no_grad():
        assert ((guide.encode(x) != 0).sum(-1) == k).all()
    _fit(model, guide, x)
    with torch.no_grad():
        assert ((guide.encode(x) != 0).sum(-1) == k).all()
    report = code_sparsity(guide, x, threshold=0.0)
    assert (report.active == k).all() and report.mean_active == k
    sig = SparseEncoder(D, K, (64,), activation="sigmoid", k=k)
    with torch.no_grad():
        codes = sig.encode(x)
    assert ((codes != 0).sum(-1) == k).all() and ((codes >= 0) & (codes <= 1)).all()


def test_topk_gradients_reach_the_kept_units_only(float64):
    """d sum(c) / d b_j for the last layer's bias b is 1 per datapoint that keeps unit j (linear
    codes): the gradient counts the datapoints keeping each unit, exactly."""
    guide = SparseEncoder(D, K, (), k=3)  # one linear layer, as in Makhzani and Frey (2014)
    x = torch.bernoulli(torch.full((20, D), 0.5), generator=torch.Generator().manual_seed(2))
    code = guide.encode(x)  # [20, K]
    (grad,) = torch.autograd.grad(code.sum(), [guide.net[-1].bias])
    assert torch.equal(grad, (code != 0).sum(0).to(grad.dtype))


def test_encoder_arguments_are_checked():
    with pytest.raises(ValueError, match="fewer than k"):
        SparseEncoder(D, K, activation="relu", k=4)
    with pytest.raises(ValueError, match=r"1\.\.code_dim"):
        SparseEncoder(D, K, k=K + 1)
    with pytest.raises(ValueError, match="activation must be one of"):
        SparseEncoder(D, K, activation="tanh")


# --- the report ------------------------------------------------------------------------------


def test_code_sparsity_on_known_codes(float64):
    codes = torch.tensor([[0.0, 0.0, 0.0, 2.0],  # one non-zero: Hoyer 1
                          [1.0, 1.0, 1.0, 1.0],  # all equal: Hoyer 0
                          [0.0, 0.0, 0.0, 0.0],  # the zero code: Hoyer 1 by convention
                          [0.5, 0.0, 0.005, 0.0]])  # 0.005 is below the threshold

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Delta(codes[x[:, 0].long()], event_dim=1))

    rep = code_sparsity(guide, torch.arange(4.0)[:, None], batch_size=3)  # two chunks
    assert isinstance(rep, SparsityReport) and rep.site == "z"
    assert torch.equal(rep.active, torch.tensor([1, 4, 0, 1]))
    assert torch.allclose(rep.rate, torch.tensor([0.5, 0.25, 0.25, 0.5], dtype=torch.float64))
    assert torch.allclose(rep.mean_activation, codes.mean(0))
    assert torch.allclose(rep.l1, torch.tensor([2.0, 4.0, 0.0, 0.505], dtype=torch.float64))
    l1, l2 = 0.505, math.hypot(0.5, 0.005)
    hoyer = torch.tensor([1.0, 0.0, 1.0, (2 - l1 / l2) / (2 - 1)], dtype=torch.float64)
    assert torch.allclose(rep.hoyer, hoyer, atol=1e-12)
    assert torch.allclose(hoyer_sparsity(codes), hoyer, atol=1e-12)
    assert rep.dead_fraction == 0.0 and rep.mean_active == 1.5
    dead = code_sparsity(guide, torch.tensor([[0.0], [2.0]]))  # units 0-2 never active
    assert dead.dead_fraction == 0.75 and torch.equal(dead.dead, torch.tensor([1, 1, 1, 0]).bool())
    assert rep.to_dataframe().shape == (4, 3) and rep.to_dataframe().index.name == "unit"
    assert list(rep.to_dataframe(per="datapoint").columns) == ["active", "l1", "hoyer"]
    assert rep.summary().startswith("z: 1.50/4 units active per datapoint")
    assert repr(rep).startswith("SparsityReport(\n  site='z',")
