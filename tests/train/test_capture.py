"""fit(jit=True) (ppvae.capture): the captured training step follows the eager run, and a model
the capture cannot replay faithfully is refused with a clear error rather than trained wrongly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae import guides, models
from ppvae.train.checkpoint import read_meta
from ppvae.train.speedup.capture import CaptureError


def _vae(seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return models.VAE(64, 4, (32,), name="vae_jit")


@pytest.mark.parametrize("objective", [
    ppvae.ELBO(), ppvae.ELBO(num_particles=3), ppvae.IWAE(k=4), ppvae.mean_field(),
    ppvae.kl_warmup(10), ppvae.beta_vae(2.0)], ids=lambda o: o.name)
def test_jit_run_follows_the_eager_run(digits, objective):
    """Same seed, same noise (the capture draws none): the per-epoch values agree to float32
    rounding, including the short last minibatch (250 = 7 x 32 + 26: a second graph) and the
    per-step beta of warm-up (a graph input, not a frozen constant)."""
    x, v = digits.train[:250], digits.valid[:64]
    runs = []
    for jit in (False, True):
        vae = _vae(1)
        runs.append(ppvae.fit(vae, vae.guide, x, valid=v, epochs=3, batch_size=32, quiet=True,
                              device="cpu", seed=2, objective=objective, jit=jit))
    eager, captured = runs
    assert captured.stopped == "completed" and captured.steps == eager.steps == 24
    for a, b in ((eager.train_objective, captured.train_objective),
                 (eager.valid_elbo, captured.valid_elbo)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


def test_jit_with_labels_and_module_buffers(digits):
    """Per-datapoint keyword tensors are graph inputs (a conditional VAE), and in-place buffer
    updates in forward are replayed (the VQ-VAE's EMA codebook)."""
    x, y = digits.train[:200], digits.train_labels[:200]
    runs = []
    for jit in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        cvae = models.CVAE(64, 10, 3, (32,), name="cvae_jit")
        enc = guides.ConditionalEncoder(64, 10, 3, (32,), name="cvae_jit_q")
        r = ppvae.fit(cvae, enc, x, epochs=2, batch_size=40, quiet=True, device="cpu",
                      batch_kw={"y": y}, jit=jit)
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vq = models.VQVAE(64, num_codes=8, code_dim=2, num_positions=2, hidden=(32,),
                          ema=True, name="vq_jit")
        rq = ppvae.fit(vq, guides.VQEncoder(vq, (32,), name="vq_jit_q"), x, epochs=2,
                       batch_size=40, quiet=True, device="cpu", jit=jit)
        runs.append((r.train_objective, rq.train_objective, vq.codebook.detach().clone()))
    (a1, b1, c1), (a2, b2, c2) = runs
    assert a1 == pytest.approx(a2, rel=1e-5) and b1 == pytest.approx(b2, rel=1e-5)
    assert torch.allclose(c1, c2, rtol=1e-5, atol=1e-6)


class _Branchy(models.VAE):
    """Takes a different path for minibatches with many lit pixels: not capturable."""

    def _likelihood(self, out):
        if float(self._x.mean()) > self.threshold:
            out = out + 1.0
        return super()._likelihood(out)

    def forward(self, x, **kwargs):
        self._x = x
        return super().forward(x, **kwargs)


class _CustomGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clamp(-3, 3)

    @staticmethod
    def backward(ctx, g):  # straight-through: not the gradient of clamp
        return g


class _StraightThrough(models.VAE):
    def _likelihood(self, out):
        return super()._likelihood(_CustomGradient.apply(out))


def test_data_dependent_control_flow_is_refused():
    """Two one-row minibatches, one dark and one bright: the second replay (the other row) takes
    the other branch, and the check against the eager step refuses it."""
    x = torch.stack([torch.zeros(64), torch.ones(64)])
    pyro.clear_param_store()
    vae = _Branchy(64, 4, (32,), name="branchy")
    vae.threshold = 0.5
    with pytest.raises(CaptureError, match="does not run the same tensor operations"):
        ppvae.fit(vae, vae.guide, x, epochs=1, batch_size=1, quiet=True, device="cpu",
                  jit=True)
    r = ppvae.fit(vae, vae.guide, x, epochs=1, batch_size=1, quiet=True, device="cpu")
    assert r.stopped == "completed"  # eager is fine


def test_custom_autograd_function_is_refused(digits):
    """The capture records forward operations; a custom backward would be lost silently, so the
    gradient check refuses it."""
    pyro.clear_param_store()
    vae = _StraightThrough(64, 4, (32,), name="st")
    with torch.no_grad():  # make the clamp bind, so its gradient differs from the custom one
        vae.decoder[-1].bias.fill_(4.0)
    with pytest.raises(CaptureError, match=r"custom torch\.autograd\.Function"):
        ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, batch_size=32, quiet=True,
                  device="cpu", jit=True)


def test_attribute_assignment_in_forward_is_refused(digits):
    class Counting(models.VAE):
        def forward(self, x, **kwargs):
            self.calls = self.calls + 1  # a new buffer tensor each call
            return super().forward(x, **kwargs)

    pyro.clear_param_store()
    vae = Counting(64, 4, (32,), name="counting")
    vae.register_buffer("calls", torch.zeros(()))
    with pytest.raises(CaptureError, match="reassigned a parameter or buffer"):
        ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, batch_size=32, quiet=True,
                  device="cpu", jit=True)


def test_jit_refuses_validate_and_keeps_nan_safety(tmp_path, digits):
    vae = _vae(3)
    with pytest.raises(ValueError, match=r"jit=True .* validate=True"):
        ppvae.fit(vae, vae.guide, digits.train[:64], jit=True, validate=True, quiet=True)
    x = digits.train[:256].clone()
    ck = tmp_path / "jit.pt"
    ppvae.fit(vae, vae.guide, x, epochs=1, batch_size=32, quiet=True, device="cpu",
              checkpoint=ck, jit=True)
    x[200, 5] = math.nan  # a NaN reaches the captured graph in the second epoch
    r = ppvae.fit(vae, vae.guide, x, epochs=3, batch_size=32, quiet=True, device="cpu",
                  checkpoint=ck, resume=ck, jit=True)
    assert r.stopped == "non_finite" and r.epochs == 1
    assert "guide site 'z'" in r.message and "non-finite values in batch rows" in r.message
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert read_meta(ck).epoch == 1  # the last good epoch's checkpoint stands
    assert all(torch.isfinite(t).all() for t in torch.load(ck, weights_only=True)[
        "params"].values())


def test_a_guide_without_a_module_is_captured(digits):
    """Plain-function pairs with pyro.param parameters (constrained ones included)."""
    def model(x):
        loc = pyro.param("jit_loc", torch.zeros(64))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            logits = loc + z.sum(-1, keepdim=True)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        scale = pyro.param("jit_scale", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x[:, :2], scale).to_event(1))

    runs = []
    for jit in (False, True):
        pyro.clear_param_store()
        runs.append(ppvae.fit(model, guide, digits.train[:128], epochs=2, batch_size=32,
                              quiet=True, device="cpu", jit=jit).train_objective)
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jit_on_cuda_follows_the_eager_run(digits):
    runs = []
    for jit in (False, True):
        vae = _vae(4)
        r = ppvae.fit(vae, vae.guide, digits.train[:256], epochs=2, batch_size=32, quiet=True,
                      device="cuda", seed=1, jit=jit)
        assert next(vae.parameters()).device.type == "cuda"
        runs.append(r.train_objective)
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_graph_simplification_folds_constants_but_never_shares_written_memory():
    from torch.fx.experimental.proxy_tensor import make_fx

    from ppvae.train.speedup.graph_passes import simplify_graph

    def pure(x):  # a standard normal's log density the way Pyro spells it
        loc, scale = torch.zeros(3).expand(2, 3), torch.ones(3).expand(2, 3)
        return (-0.5 * ((x - loc) / scale).pow(2) - scale.log()).sum()

    def accumulating(x):  # a fresh zeros tensor written in place: must stay fresh per call
        acc = torch.zeros(3)
        acc.add_(x.sum(0))
        return acc.sum() + (x - torch.zeros(3)).sum()

    x = torch.randn(2, 3)
    gm = simplify_graph(make_fx(pure, pre_dispatch=True)(x), [x])
    ops = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.sub.Tensor not in ops and torch.ops.aten.div.Tensor not in ops
    assert torch.ops.aten.log.default not in ops
    y = torch.randn(2, 3)
    assert torch.equal(gm(y), pure(y))
    gm = simplify_graph(make_fx(accumulating, pre_dispatch=True)(x), [x])
    assert torch.equal(gm(y), accumulating(y)) and torch.equal(gm(y), accumulating(y))
