"""Scale is the engine's (issue 15): whatever scale a model declares (a subsampling plate,
poutine.scale, a Jit ELBO), fit trains on the minibatch's mean per-datapoint ELBO, global latents
counted 1 / N, and reports per-datapoint numbers."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import JitTrace_ELBO, Trace_ELBO
from torch import nn

import ppvae
from ppvae.train.objectives import SiteScale, as_objective, in_plate

N, D, K = 40, 5, 2


class Tiny(nn.Module):
    """A small Gaussian VAE. ``plate``: "plain" (pyro.plate("data", B)), "indices" (a plate of
    the full size N_full with the minibatch's indices as its subsample: scale N_full / B),
    "size" (subsample_size=B: Pyro draws the indices) or "scaled" (model and guide wrapped in
    poutine.scale(1 / N_full)). ``global_w``: a global latent offset w [D] outside the plate."""

    def __init__(self, plate="plain", global_w=False, full=1000, delta=False):
        super().__init__()
        self.dec, self.enc = nn.Linear(K, D), nn.Linear(D, 2 * K)
        self.w_loc = nn.Parameter(torch.zeros(D))
        self.kind, self.global_w, self.full, self.delta = plate, global_w, full, delta

    def _plate(self, x):
        b = x.shape[0]
        if self.kind == "indices":
            return pyro.plate("data", self.full, subsample=torch.arange(b))
        if self.kind == "size":
            return pyro.plate("data", self.full, subsample_size=b)
        return pyro.plate("data", b)

    def _scaled(self, fn, x):
        if self.kind == "scaled":
            return poutine.scale(fn, scale=1.0 / self.full)(x)
        return fn(x)

    def model(self, x):
        return self._scaled(self._model, x)

    def guide(self, x):
        return self._scaled(self._guide, x)

    def _model(self, x):
        pyro.module("tiny", self)
        w = pyro.sample("w", dist.Normal(torch.zeros(D), 1.0).to_event(1)) \
            if self.global_w else 0.0
        with self._plate(x):
            z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z) + w, 1.0).to_event(1), obs=x)

    def _guide(self, x):
        pyro.module("tiny", self)
        if self.global_w:
            q = dist.Delta(self.w_loc) if self.delta else dist.Normal(self.w_loc, 0.3)
            pyro.sample("w", q.to_event(1))
        loc, log_s = self.enc(x).chunk(2, -1)
        with self._plate(x):
            q = dist.Delta(loc) if self.delta else dist.Normal(loc, log_s.exp())
            pyro.sample("z", q.to_event(1))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g)


def _fit(pair_kw, x, **kw):
    pyro.clear_param_store()
    torch.manual_seed(1)
    pair = Tiny(**pair_kw)
    r = ppvae.fit(pair.model, pair.guide, x, epochs=2, batch_size=16, lr=1e-2, quiet=True,
                  device="cpu", seed=3, **kw)
    return r, {k: v.detach().clone() for k, v in pair.state_dict().items()}


@pytest.mark.parametrize("plate", ["indices", "scaled"])
def test_a_declared_scale_changes_nothing(plate):
    """The same data, seed and batch size (40 = 16 + 16 + 8: a short last minibatch) give the
    same parameters and reported values with and without a subsampling plate (scale N_full / B)
    or a poutine.scale(1 / N_full) around model and guide: the engine's scale replaces them."""
    x = _data()
    plain, p0 = _fit({}, x, valid=x[:8])
    other, p1 = _fit({"plate": plate}, x, valid=x[:8])
    assert plain.train_objective == other.train_objective
    assert plain.valid_elbo == other.valid_elbo
    worst = max(float((p0[k] - p1[k]).abs().max()) for k in p0)
    assert worst == 0.0, worst  # the same floating-point operations: bit for bit


@pytest.mark.parametrize("objective", [Trace_ELBO(), ppvae.ELBO()], ids=["pyro", "ppvae"])
def test_subsampling_plates_are_divided_out(objective):
    """A model with pyro.plate("data", N_full, subsample_size=B) (Pyro scales it by N_full / B):
    ppvae's per-datapoint loss is Pyro's own Trace_ELBO loss divided by N_full, the same random
    draws (the plate's subsample indices included)."""
    x = _data()[:16]
    pair = Tiny(plate="size", full=1000)
    info = ppvae.check_pair(pair.model, pair.guide, x)
    obj = as_objective(objective)
    pyro.set_rng_seed(5)
    ours = obj.loss(pair.model, pair.guide, x, info=info, data_scale=1 / 16, train_size=1000)
    pyro.set_rng_seed(5)
    theirs = Trace_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x)
    torch.testing.assert_close(ours, theirs / 1000, rtol=1e-6, atol=0)


def _by_hand(pair, x, n_train, seed, beta=1.0):
    """-(sum_n [log p(x_n|z_n,w) + beta (log p(z_n) - log q(z_n|x_n))] / B
    + beta (log p(w) - log q(w)) / N) from one guide trace and its replayed model trace."""
    pyro.set_rng_seed(seed)
    g = poutine.trace(pair.guide).get_trace(x)
    m = poutine.trace(poutine.replay(pair.model, trace=g)).get_trace(x)

    def lp(tr, name):
        site = tr.nodes[name]
        return site["fn"].log_prob(site["value"]).sum()

    local = lp(m, "x") + beta * (lp(m, "z") - lp(g, "z"))
    glob = beta * (lp(m, "w") - lp(g, "w"))
    return -(local / x.shape[0] + glob / n_train)


@pytest.mark.parametrize("objective", [ppvae.ELBO(), Trace_ELBO()], ids=["ppvae", "pyro"])
@pytest.mark.parametrize("plate", ["plain", "indices", "scaled"])
def test_global_latents_count_once_for_the_training_set(objective, plate):
    x = _data()[:16]
    pair = Tiny(plate=plate, global_w=True)
    info = ppvae.check_pair(pair.model, pair.guide, x, allow_globals=True)
    assert info.globals == ("w",)
    obj = as_objective(objective)
    for beta in (1.0, 0.3):
        o = ppvae.beta_vae(beta, obj) if beta != 1.0 else obj
        pyro.set_rng_seed(7)
        ours = o.loss(pair.model, pair.guide, x, info=info, data_scale=1 / 16, train_size=N)
        torch.testing.assert_close(ours, _by_hand(pair, x, N, 7, beta), rtol=1e-5, atol=1e-6)


def test_the_pyro_convention_divided_by_n():
    """Pyro's own scaling of a subsampled model with a global latent (locals x N / B, globals
    once) divided by N is ppvae's loss: the convention fit follows, per datapoint."""
    x = _data()[:16]
    pair = Tiny(plate="indices", global_w=True, full=N)
    info = ppvae.check_pair(pair.model, pair.guide, x, allow_globals=True)
    pyro.set_rng_seed(2)
    ours = ppvae.ELBO().loss(pair.model, pair.guide, x, info=info, data_scale=1 / 16,
                             train_size=N)
    pyro.set_rng_seed(2)
    theirs = Trace_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x)
    torch.testing.assert_close(ours, theirs / N, rtol=1e-6, atol=0)


def test_the_one_frame_step_and_pyro_handlers_agree_on_declared_scales():
    """The one-frame StepRecorder path (no outer handler but ppvae's SiteScale) and the trace
    path (taken under any other outer Pyro handler) give the same loss for a model that declares
    its own scale; a SiteScale around the objective still scales on top."""
    x = _data()[:16]
    pair = Tiny(plate="scaled", global_w=True)
    info = ppvae.check_pair(pair.model, pair.guide, x, allow_globals=True)
    pyro.set_rng_seed(4)
    fast = ppvae.ELBO().loss(pair.model, pair.guide, x, info=info, data_scale=1 / 16,
                             train_size=N)
    pyro.set_rng_seed(4)
    with poutine.block(hide_types=["param"]):  # any outer handler sends it down the trace path
        slow = ppvae.ELBO().loss(pair.model, pair.guide, x, info=info, data_scale=1 / 16,
                                 train_size=N)
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=0)
    with SiteScale(2.0, in_plate("data")):  # a SiteScale around the objective still applies
        pyro.set_rng_seed(4)
        doubled = ppvae.ELBO().loss(pair.model, pair.guide, x, info=info)
    pyro.set_rng_seed(4)
    plain = ppvae.ELBO().loss(pair.model, pair.guide, x, info=info)
    assert not torch.allclose(doubled, plain)


def test_a_jit_elbo_is_not_stale_on_a_short_last_minibatch():
    """JitTrace_ELBO compiles per minibatch shape, and the global factor B / N follows B: with
    point-mass guides (no Monte Carlo noise) the compiled loss equals the eager ELBO's at batch
    sizes 16, 8 and 16 again."""
    x = _data()
    pair = Tiny(global_w=True, delta=True)
    info = ppvae.check_pair(pair.model, pair.guide, x[:16], allow_globals=True)
    jit, eager = ppvae.PyroObjective(JitTrace_ELBO()), ppvae.ELBO()
    for b in (16, 8, 16, 8):
        xb = x[:b]
        got = jit.loss(pair.model, pair.guide, xb, info=info._replace(num_data=b),
                       data_scale=1 / b, train_size=N)
        want = eager.loss(pair.model, pair.guide, xb, info=info._replace(num_data=b),
                          data_scale=1 / b, train_size=N)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(jit.runs) == 1  # one ELBO copy for the pair, compiled once per shape
    warm_jit, warm = ppvae.kl_warmup(10, base=jit), ppvae.kl_warmup(10)  # beta: a graph input
    for step in (0, 5, 10):
        got = warm_jit.loss(pair.model, pair.guide, x[:8], info=info._replace(num_data=8),
                            data_scale=1 / 8, train_size=N, step=step)
        want = warm.loss(pair.model, pair.guide, x[:8], info=info._replace(num_data=8),
                         data_scale=1 / 8, train_size=N, step=step)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_an_objective_written_for_the_old_protocol_still_trains():
    """A custom objective whose loss has no train_size (written before the engine scaled global
    latents) is called without it."""
    from ppvae.train.objectives import ELBO, Objective

    class Mine(Objective):
        name = "mine"

        def loss(self, model, guide, x, *, info, data_scale=1.0, step=0, kwargs=None):
            return ELBO().loss(model, guide, x, info=info, data_scale=data_scale, kwargs=kwargs)

    x = _data()
    assert _fit({}, x, objective=Mine())[0].train_objective == _fit({}, x)[0].train_objective


def test_fit_trains_a_pair_with_global_latents_and_validates_it():
    x = _data()
    pyro.clear_param_store()
    torch.manual_seed(0)
    pair = Tiny(global_w=True)
    r = ppvae.fit(pair.model, pair.guide, x, valid=x[:12], epochs=3, batch_size=16, lr=3e-2,
                  quiet=True, device="cpu")
    assert r.stopped == "completed" and len(r.valid_elbo) == 3
    assert all(torch.isfinite(torch.tensor(r.train_objective + r.valid_elbo)))
    with pytest.raises(ValueError,
                       match=r"global latent site\(s\) \['w'\]: train it with the ELBO"):
        ppvae.fit(pair.model, pair.guide, x, objective=ppvae.IWAE(2), epochs=1, quiet=True,
                  device="cpu")
