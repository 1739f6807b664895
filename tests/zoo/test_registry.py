"""One contract test for every (model, guide) pair in ``tests/registry.py``.

For each entry: the pair keeps the contract (:func:`ppvae.check_pair`), guide and prior samples
and log weights have the right shapes (also under an outer particle plate), one SVI step lowers
the loss on the fixed batch (common random numbers: the same seed before and after the step, so
the loss is one deterministic function of the parameters), and ELBO <= IWAE_5 <= IWAE_50 both
exactly on shared weights and on average over independent estimates within Monte Carlo error.
"""

import itertools

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from registry import REGISTRY
from stats import z_threshold

import ppvae
from ppvae.train.params import collect_params
from ppvae.train.speedup.capture import CapturedLoss


@pytest.fixture(params=sorted(REGISTRY), ids=sorted(REGISTRY))
def entry(request):
    return REGISTRY[request.param]()


def test_contract_and_shapes(entry):
    x, kw = entry.x, entry.kwargs
    n = x.shape[0]
    info = ppvae.check_pair(entry.model, entry.guide, x, model_kwargs=kw)
    assert set(info.latent) == set(entry.latent_shapes)
    assert info.num_data == n and "x" in info.observed

    with torch.no_grad():
        guide_tr = poutine.trace(entry.guide).get_trace(x, **kw)
        with pyro.plate("particles", 3, dim=-2):
            guide_tr3 = poutine.trace(entry.guide).get_trace(x, **kw)
        model_tr = poutine.trace(poutine.replay(entry.model, trace=guide_tr)).get_trace(x, **kw)
        for name, event in entry.latent_shapes.items():
            assert guide_tr.nodes[name]["value"].shape == (n, *event), name
            assert guide_tr3.nodes[name]["value"].shape[-len(event) - 1:] == (n, *event), name
        obs = model_tr.nodes["x"]
        assert obs["fn"].shape() == obs["value"].shape
        if entry.samples_prior:
            prior_tr = poutine.trace(entry.model).get_trace(x, **kw)
            for name, event in entry.latent_shapes.items():
                assert prior_tr.nodes[name]["value"].shape == (n, *event), name
        lw = ppvae.log_weights(entry.model, entry.guide, x, 4, model_kwargs=kw)
    assert lw.shape == (4, n) and torch.isfinite(lw).all()


def test_one_svi_step_lowers_the_loss(entry):
    model = entry.train_model or entry.model
    guide = entry.train_guide or entry.guide
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    pyro.set_rng_seed(123)
    before = svi.evaluate_loss(entry.x, **entry.kwargs)
    pyro.set_rng_seed(123)
    svi.step(entry.x, **entry.kwargs)
    pyro.set_rng_seed(123)
    after = svi.evaluate_loss(entry.x, **entry.kwargs)
    assert after < before


def test_bounds_are_ordered(entry):
    m, g, x, kw = entry.model, entry.guide, entry.x, entry.kwargs
    with torch.no_grad():
        lw = ppvae.log_weights(m, g, x, 50, model_kwargs=kw)  # [50, N]
        shared = [ppvae.elbo_from_log_weights(lw).per_datapoint,
                  ppvae.iwae_from_log_weights(lw, 10).per_datapoint,
                  ppvae.iwae_from_log_weights(lw, 50).per_datapoint]
        e = ppvae.elbo(m, g, x, num_samples=100, model_kwargs=kw)
        i5 = ppvae.iwae(m, g, x, k=5, num_estimates=20, model_kwargs=kw)
        i50 = ppvae.iwae(m, g, x, k=50, num_estimates=4, model_kwargs=kw)
    for lo, hi in itertools.pairwise(shared):  # Jensen, exactly, per datapoint
        assert (lo <= hi + 1e-4 * (1 + hi.abs())).all()
    for lo, hi in ((e, i5), (i5, i50)):
        slack = 1e-4 * (1 + abs(hi.mean))
        se = (lo.mean_stderr**2 + hi.mean_stderr**2) ** 0.5
        assert lo.mean <= hi.mean + z_threshold(1, two_sided=False) * se + slack, (lo, hi)
    if entry.deterministic_guide:  # a point mass: every particle is the same
        assert abs(e.mean - i50.mean) <= 1e-4 * (1 + abs(e.mean))


class _Outer(poutine.messenger.Messenger):
    """A do-nothing handler around the objective: forces Pyro's own trace/replay handlers."""


def test_one_frame_training_step_equals_pyro_handlers(entry):
    """ELBO.loss's one-frame recorder (ppvae.recorder) gives the loss and the gradients that
    poutine.trace + replay + scale give, for every pair (masks, blocks, factors included)."""
    model = entry.train_model or entry.model
    guide = entry.train_guide or entry.guide
    x, kw = entry.x, entry.kwargs
    info = ppvae.check_pair(entry.model, entry.guide, x,
                            model_kwargs=kw)  # the analysed pair's plates
    obj = ppvae.ELBO(num_particles=1 if entry.train_model else 2)  # global weights: 1 draw
    modules = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    results = []
    for outer in (False, True):
        for m, state in zip(modules, states, strict=True):  # EMA codebooks update in forward
            m.load_state_dict(state)
        pyro.set_rng_seed(3)
        if outer:
            with _Outer():
                loss = obj.loss(model, guide, x, info=info, data_scale=7.0, kwargs=kw)
        else:
            loss = obj.loss(model, guide, x, info=info, data_scale=7.0, kwargs=kw)
        params = [p for p in pyro.get_param_store().values() if p.requires_grad]
        results.append((loss.detach(), torch.autograd.grad(loss, [
            p.unconstrained() if hasattr(p, "unconstrained") else p for p in params],
            allow_unused=True)))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, rtol=1e-5), (float(l1), float(l2))
    for a, b in zip(g1, g2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_captured_training_step_equals_eager(entry):
    """fit(jit=True)'s captured graph (ppvae.capture) gives the eager step's loss, gradients and
    buffer updates for every pair, on a batch it was not captured on; capturing draws no random
    numbers, so the same seed gives the same noise."""
    model = entry.train_model or entry.model
    guide = entry.train_guide or entry.guide
    x, kw = entry.x, entry.kwargs
    info = ppvae.check_pair(entry.model, entry.guide, x, model_kwargs=kw)
    obj = ppvae.kl_warmup(10, base=ppvae.ELBO(num_particles=1 if entry.train_model else 2))
    params = list(collect_params(lambda: obj.loss(model, guide, x, info=info, kwargs=kw)).values())
    modules = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    buffers = [b for m in modules for b in m.buffers()]
    captured = CapturedLoss(obj, model, guide, info, params, buffers, verify_calls=0)
    pyro.enable_validation(False)  # as in fit's loop: value checks are host syncs
    shifted = torch.roll(x, 1, 0), {k: torch.roll(v, 1, 0) for k, v in kw.items()}
    captured(x, kw, 7.0, 0)  # captured on the fixed batch
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    results = []
    for run in ("eager", "captured"):
        for m, state in zip(modules, states, strict=True):
            m.load_state_dict(state)
        pyro.set_rng_seed(3)
        if run == "eager":
            loss = obj.loss(model, guide, shifted[0], info=info, data_scale=7.0, step=4,
                            kwargs=shifted[1])
        else:
            loss = captured(*shifted, 7.0, 4)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append((loss.detach(), grads, [b.clone() for b in buffers]))
    (l1, g1, b1), (l2, g2, b2) = results
    assert torch.allclose(l1, l2, rtol=1e-5), (float(l1), float(l2))
    for a, b in zip(g1, g2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(b1, b2, strict=True):
        assert torch.equal(a, b)
