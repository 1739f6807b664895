"""Every pyro.infer ELBO trains through fit, per datapoint (issue 15): each runs a few fit steps
(a short last minibatch included) and, on a fixed minibatch, ppvae's objective is Pyro's own loss
divided by the number of rows under the same random numbers; the ELBOs that only have
loss_and_grads give Pyro's gradients divided by the rows too."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.contrib.gp.kernels import RBF
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    Trace_MMD,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    TraceTailAdaptive_ELBO,
)
from torch import nn

import ppvae
from ppvae.train.pyro_elbos import pyro_elbo_gradients

D, K, C = 5, 2, 3


class Gauss(nn.Module):
    """A Gaussian VAE: every latent reparameterized."""

    def __init__(self):
        super().__init__()
        self.dec, self.enc = nn.Linear(K, D), nn.Linear(D, 2 * K)

    def model(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("pair", self)
        loc, log_s = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_s.exp()).to_event(1))


class Switch(Gauss):
    """A guide that samples a Bernoulli switch b (no reparameterization: score-function
    gradients) besides z."""

    def __init__(self):
        super().__init__()
        self.shift, self.gate = nn.Parameter(torch.ones(D)), nn.Linear(D, 1)

    def model(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
            loc = self.dec(z) + b.unsqueeze(-1) * self.shift
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("pair", self)
        loc, log_s = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=self.gate(x).squeeze(-1)))
            pyro.sample("z", dist.Normal(loc, log_s.exp()).to_event(1))


class Mixture(Gauss):
    """A mixture VAE whose model enumerates the component c (the guide does not sample it)."""

    def __init__(self):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(C, D))

    def model(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(C)),
                            infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z) + self.centers[c], 1.0).to_event(1), obs=x)


CASES = {  # name: (ELBO factory, pair, reference)
    "Trace_ELBO": (Trace_ELBO, Gauss, "loss"),
    "TraceMeanField_ELBO": (TraceMeanField_ELBO, Gauss, "loss"),
    "TraceGraph_ELBO": (TraceGraph_ELBO, Switch, "loss"),
    "TraceEnum_ELBO": (TraceEnum_ELBO, Mixture, "loss"),
    "RenyiELBO": (lambda: RenyiELBO(alpha=0.5, num_particles=3), Gauss, "loss"),
    "RenyiELBO-vectorized": (lambda: RenyiELBO(num_particles=3, vectorize_particles=True),
                             Gauss, "loss"),
    "TraceTailAdaptive_ELBO": (lambda: TraceTailAdaptive_ELBO(num_particles=4,
                                                              vectorize_particles=True),
                               Gauss, "trace_elbo"),
    "Trace_MMD": (lambda: Trace_MMD(kernel=RBF(K)), Gauss, "loss"),
    "JitTrace_ELBO": (JitTrace_ELBO, Gauss, "jit"),
    "JitTraceGraph_ELBO": (JitTraceGraph_ELBO, Switch, "jit"),
    "JitTraceEnum_ELBO": (JitTraceEnum_ELBO, Mixture, "jit"),
    "JitTraceMeanField_ELBO": (JitTraceMeanField_ELBO, Gauss, "jit"),
}


def _pair(cls, seed=0):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return cls()


def _x(rows=24, seed=0):
    return torch.randn(rows, D, generator=torch.Generator().manual_seed(seed))


def _pyro_elbo(factory, info):
    """Pyro's ELBO as a user would configure it: plate nesting given (no guessing run, which
    would draw random numbers), Jit tracer warnings off."""
    e = factory()
    e.max_plate_nesting = info.max_plate_nesting + int(
        e.vectorize_particles and e.num_particles > 1)
    e.ignore_jit_warnings = True
    return e


class _Fixed:
    """The pair's model and guide as fixed objects: Pyro's Jit ELBOs key their compiled graphs
    by id(model), and ``pair.model`` is a new bound-method object at each access."""

    def __init__(self, pair):
        self.model, self.guide = pair.model, pair.guide


def _pyro_value(e, kind, pair, x):
    """Pyro's loss of ``x`` under the current random state (a Jit ELBO: compiled already)."""
    if kind == "loss":
        return torch.tensor(e.loss(pair.model, pair.guide, x))
    if kind == "trace_elbo":  # TraceTailAdaptive_ELBO has no loss: the ELBO of its particles
        ref = Trace_ELBO(num_particles=e.num_particles, vectorize_particles=True,
                         max_plate_nesting=e.max_plate_nesting)
        return torch.tensor(ref.loss(pair.model, pair.guide, x))
    if pyro_elbo_gradients(e) == "differentiable_loss":
        return e.differentiable_loss(pair.model, pair.guide, x).detach()
    value = e.loss_and_grads(pair.model, pair.guide, x)
    _zero_grads()
    return torch.tensor(value)


def _params():
    return [p for _, p in sorted(pyro.get_param_store().named_parameters())]


def _zero_grads():
    for p in _params():
        p.grad = None


@pytest.mark.parametrize("name", list(CASES))
def test_every_pyro_elbo_trains_and_is_pyros_loss_per_datapoint(name):
    factory, cls, kind = CASES[name]
    x = _x()
    pair = _pair(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # Jit warnings kept quiet
        r = ppvae.fit(pair.model, pair.guide, x, valid=x[:8], epochs=2, batch_size=10,
                      objective=factory(), quiet=True, device="cpu")  # 24 = 10 + 10 + 4
    assert r.stopped == "completed" and r.steps == 6, r.message
    assert all(math.isfinite(v) for v in r.train_objective + r.valid_elbo)
    assert r.objective.startswith(name.split("-")[0])

    xb = x[:12]  # a fixed minibatch, no subsampling: per datapoint = Pyro's loss / 12
    info = ppvae.check_pair(pair.model, pair.guide, xb)
    ours, theirs, fixed = ppvae.PyroObjective(factory()), _pyro_elbo(factory, info), _Fixed(pair)
    if kind == "jit":  # compile both first: compiling draws random numbers of its own
        ours.loss(pair.model, pair.guide, xb, info=info, data_scale=1 / 12)
        _pyro_value(theirs, kind, fixed, xb)
    pyro.set_rng_seed(11)
    got = ours.loss(pair.model, pair.guide, xb, info=info, data_scale=1 / 12)
    pyro.set_rng_seed(11)
    want = _pyro_value(theirs, kind, fixed, xb) / 12
    torch.testing.assert_close(got.detach(), want.to(got.dtype), rtol=1e-5, atol=1e-6)
    assert got.requires_grad


@pytest.mark.parametrize("name", [n for n, (f, _, _) in CASES.items()
                                  if pyro_elbo_gradients(f()) == "loss_and_grads"])
def test_elbos_with_only_loss_and_grads_give_pyros_gradients_per_datapoint(name):
    """TraceGraph_ELBO (score function and its surrogate), RenyiELBO and the tail-adaptive ELBO
    compute their gradients themselves; fit's loss hands exactly those back, divided by B."""
    factory, cls, kind = CASES[name]
    x = _x(12)
    pair = _pair(cls)
    info = ppvae.check_pair(pair.model, pair.guide, x)
    ours, theirs, fixed = ppvae.PyroObjective(factory()), _pyro_elbo(factory, info), _Fixed(pair)
    if kind == "jit":
        ours.loss(pair.model, pair.guide, x, info=info, data_scale=1 / 12)
        theirs.loss_and_grads(fixed.model, fixed.guide, x)
    _zero_grads()
    pyro.set_rng_seed(5)
    loss = ours.loss(pair.model, pair.guide, x, info=info, data_scale=1 / 12)
    assert all(p.grad is None for p in _params())  # nothing left on the parameters
    got = torch.autograd.grad(loss, _params(), allow_unused=True)
    pyro.set_rng_seed(5)
    theirs.loss_and_grads(fixed.model, fixed.guide, x)
    for p, g in zip(_params(), got, strict=True):
        want = p.grad / 12 if p.grad is not None else None
        assert (g is None) == (want is None)
        if g is not None:
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-7)


def test_an_enumerating_model_trains_with_trace_enum_by_default():
    x = _x()
    pair = _pair(Mixture)
    r = ppvae.fit(pair.model, pair.guide, x, epochs=1, batch_size=12, quiet=True, device="cpu")
    assert r.stopped == "completed" and r.objective == "TraceEnum_ELBO(num_particles=1)"
    r = ppvae.fit(pair.model, pair.guide, x, objective=ppvae.IWAE(3), epochs=1, batch_size=12,
                  quiet=True, device="cpu")  # log weights sum c out per datapoint
    assert r.stopped == "completed" and r.objective == "iwae"
    xb, info = x[:12], ppvae.check_pair(pair.model, pair.guide, x[:12])
    pyro.set_rng_seed(3)  # IWAE_1 with c summed out is TraceEnum_ELBO's ELBO (the same z)
    iwae1 = ppvae.IWAE(1).loss(pair.model, pair.guide, xb, info=info, data_scale=1 / 12)
    pyro.set_rng_seed(3)
    enum = ppvae.PyroObjective(TraceEnum_ELBO()).loss(pair.model, pair.guide, xb, info=info,
                                                      data_scale=1 / 12)
    torch.testing.assert_close(iwae1, enum.detach(), rtol=1e-5, atol=1e-6)
    for objective in (ppvae.ELBO(), Trace_ELBO(), ppvae.mean_field()):
        with pytest.raises(ValueError, match=r"the model enumerates site\(s\) \['c'\] .* train "
                           r"with objective=pyro.infer.TraceEnum_ELBO\(\)"):
            ppvae.fit(pair.model, pair.guide, x, objective=objective, epochs=1, quiet=True,
                      device="cpu")


def test_jit_capture_refuses_elbos_that_compile_or_differentiate_themselves():
    x = _x()
    pair = _pair(Gauss)
    for objective, why in ((JitTrace_ELBO(), "JitTrace_ELBO compiles itself with torch.jit"),
                           (RenyiELBO(), r"RenyiELBO computes its gradients itself")):
        with pytest.raises(ValueError, match=f"jit=True cannot capture this objective: {why}"):
            ppvae.fit(pair.model, pair.guide, x, objective=objective, jit=True, epochs=1,
                      quiet=True, device="cpu")
    with pytest.raises(TypeError, match=r"RenyiELBO.* is not a sum of log densities"):
        ppvae.beta_vae(2.0, ppvae.PyroObjective(RenyiELBO()))


class Flat(Gauss):
    """A pair that cannot broadcast over a leading particle dimension (it flattens z)."""

    def model(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
            loc = self.dec(z.reshape(-1, K)).reshape(x.shape[0], D)  # one particle only
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def test_a_pair_that_does_not_broadcast_draws_particles_one_trace_at_a_time():
    x = _x(12)
    pair = _pair(Flat)
    with pytest.warns(ppvae.core.contract.ParticleFallbackWarning):
        info = ppvae.check_pair(pair.model, pair.guide, x)
    assert not info.vectorized
    user = RenyiELBO(num_particles=3, vectorize_particles=True)
    obj = ppvae.PyroObjective(user)
    pyro.set_rng_seed(2)
    got = obj.loss(pair.model, pair.guide, x, info=info, data_scale=1 / 12)
    assert user.vectorize_particles and not next(iter(obj.runs.values())).elbo.vectorize_particles
    pyro.set_rng_seed(2)
    want = RenyiELBO(num_particles=3, max_plate_nesting=1).loss(pair.model, pair.guide, x) / 12
    torch.testing.assert_close(got.detach(), torch.tensor(want, dtype=got.dtype))
    pyro.set_rng_seed(2)
    ours = ppvae.ELBO(num_particles=3).loss(pair.model, pair.guide, x, info=info)
    pyro.set_rng_seed(2)
    loop = Trace_ELBO(num_particles=3).differentiable_loss(pair.model, pair.guide, x)
    torch.testing.assert_close(ours, loop, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="TraceTailAdaptive_ELBO needs vectorize_particles=True"):
        ppvae.PyroObjective(TraceTailAdaptive_ELBO(num_particles=3, vectorize_particles=True)
                            ).loss(pair.model, pair.guide, x, info=info)
