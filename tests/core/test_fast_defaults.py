"""The evaluation hot loop's defaults: a measured chunk size per device, and validation off.

* The default chunk holds about ``CPU_VALUES_PER_CHUNK`` data values on a CPU (pairs times the
  values per datapoint, rounded to whole particles) and about ``GPU_PAIRS_PER_CHUNK``
  datapoint-particle pairs elsewhere; ``log_weights`` uses the data's own row size and device.
* Pyro's distribution validation is off inside ``log_weights`` once the pair is checked (an
  invalid observation then passes), on with ``validate=True``, left to the caller with None
  (what fit's IWAE objective passes), and Pyro's global setting is restored either way.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.core import weights
from ppvae.core.contract import site_log_density
from ppvae.core.weights import (
    CPU_VALUES_PER_CHUNK,
    GPU_PAIRS_PER_CHUNK,
    default_chunk_size,
    resolve_chunk_size,
)


@pytest.mark.parametrize("n,row", [(1, 1), (300, 64), (500, 784), (1000, 784), (600, 1024)])
def test_cpu_chunk_holds_the_measured_number_of_values(n, row):
    c = default_chunk_size(n, "cpu", row)
    # rounded to the nearest whole particle: within half a particle's values of the target
    assert abs(c * n * row - CPU_VALUES_PER_CHUNK) <= n * row / 2 or c == 1
    assert c >= 1


def test_huge_rows_still_get_one_particle_and_gpus_count_pairs():
    assert default_chunk_size(10**6, "cpu", 10**4) == 1
    assert default_chunk_size(1000, "cuda") * 1000 <= GPU_PAIRS_PER_CHUNK
    assert (default_chunk_size(1000, "cuda") + 1) * 1000 > GPU_PAIRS_PER_CHUNK


def test_log_weights_sizes_its_chunks_by_the_datas_rows(monkeypatch):
    x = torch.zeros(50, 8, 8)  # images: 64 values per datapoint
    assert resolve_chunk_size(None, 50, x) == default_chunk_size(50, "cpu", 64)
    assert resolve_chunk_size(7, 50, x) == 7
    seen = []
    real = weights._chunk

    def spy(model, guide, x, size, info, kwargs):
        seen.append(size)
        return real(model, guide, x, size, info, kwargs)

    monkeypatch.setattr(weights, "_chunk", spy)
    vae = ppvae.models.VAE(4, 2, (8,), name="fd_vae")
    xs = torch.bernoulli(torch.full((20000, 4), 0.5))
    ppvae.log_weights(vae, vae.guide, xs, 100, progress=False)
    chunk = default_chunk_size(20000, "cpu", 4)
    assert seen[0] == chunk and sum(seen) == 100


def _invalid_pair():
    """A model observing 0.5 under a Bernoulli: valid only with validation off."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            logits = z.unsqueeze(-1).expand(*z.shape, x.shape[-1])  # any leading particle dims
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    good = torch.ones(3, 2)
    info = ppvae.check_pair(model, guide, good)
    return model, guide, torch.full((3, 2), 0.5), info


def test_validation_is_off_in_the_chunks_and_restored_after():
    model, guide, bad, info = _invalid_pair()
    with pyro.validation_enabled(True):
        lw = ppvae.log_weights(model, guide, bad, 4, info=info)  # default: no checks
        assert lw.shape == (4, 3)
        from pyro.infer.util import is_validation_enabled
        assert is_validation_enabled()  # the global setting is back
        with pytest.raises(ValueError, match="support"):
            ppvae.log_weights(model, guide, bad, 4, info=info, validate=True)
        with pytest.raises(ValueError, match="support"):
            ppvae.log_weights(model, guide, bad, 4, info=info, validate=None)  # the caller's
    with pyro.validation_enabled(False):
        assert ppvae.log_weights(model, guide, bad, 4, info=info, validate=None).shape == (4, 3)


def _site(fn, value, mask=None):
    return {"fn": fn, "value": value, "args": (), "kwargs": {}, "mask": mask}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_bernoulli_logits_fast_path_is_torchs_log_prob(k):
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(4, 6, 5, 7, generator=g, dtype=torch.float64)).requires_grad_()
    value = torch.bernoulli(torch.full((6, 5, 7), 0.3, dtype=torch.float64), generator=g)
    fn = dist.Bernoulli(logits=logits).to_event(k)  # the particles [4] broadcast over x
    with pyro.validation_enabled(False):
        fast = site_log_density(_site(fn, value))
    slow = fn.log_prob(value)
    assert fast.shape == slow.shape == logits.shape[:4 - k]
    # two formulas of one quantity in float64: rounding of sums of ~100 terms of size ~10
    assert torch.allclose(fast, slow, rtol=1e-12, atol=1e-10)
    (g_fast,) = torch.autograd.grad(fast.sum(), logits)
    (g_slow,) = torch.autograd.grad(slow.sum(), logits)
    assert torch.allclose(g_fast, g_slow, rtol=1e-12, atol=1e-14)
    mask = torch.rand(fast.shape, generator=g) > 0.5
    with pyro.validation_enabled(False):
        masked = site_log_density(_site(fn, value, mask))
    assert torch.equal(masked, torch.where(mask, fast, torch.zeros((), dtype=fast.dtype)))


def test_bernoulli_fast_path_at_saturated_logits():
    logits = torch.tensor([[-80.0, 80.0, -30.0, 30.0, 0.0]], dtype=torch.float64)
    value = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    fn = dist.Bernoulli(logits=logits).to_event(1)
    with pyro.validation_enabled(False):
        fast = site_log_density(_site(fn, value))
    assert torch.allclose(fast, fn.log_prob(value), rtol=1e-12)  # -60 - log 2, no overflow


def test_the_generic_path_keeps_validation_and_other_parameterizations(monkeypatch):
    calls = []  # torch's Bernoulli does not call softplus: only the fast path counts
    real = torch.nn.functional.softplus
    monkeypatch.setattr(torch.nn.functional, "softplus",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    value, logits = torch.tensor([[0.0, 1.0, 1.0]]), torch.zeros(1, 3)
    with pyro.validation_enabled(False):
        site_log_density(_site(dist.Bernoulli(logits=logits).to_event(1), value))
    assert len(calls) == 1
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        site_log_density(_site(dist.Bernoulli(logits=logits).to_event(1), value / 2))
    probs = torch.full((1, 3), 0.25)
    with pyro.validation_enabled(False):
        lp = site_log_density(_site(dist.Bernoulli(probs=probs).to_event(1), value))
    assert torch.equal(lp, dist.Bernoulli(probs=probs).to_event(1).log_prob(value))
    assert len(calls) == 1  # neither the validated call nor the probs one took the fast path


def test_estimators_build_no_autograd_graph_yet_guides_may_differentiate():
    seen = []

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def refining_guide(x):  # one gradient step inside the guide, as semi-amortized VI does
        with torch.enable_grad():
            loc = torch.zeros_like(x).requires_grad_()
            (g,) = torch.autograd.grad(-((x - loc) ** 2).sum(), loc)
        seen.append(torch.is_grad_enabled())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((loc + 0.25 * g).detach(), 0.8))

    x = torch.linspace(-1, 1, 5)
    for b in (ppvae.elbo(model, refining_guide, x, 50), ppvae.iwae(model, refining_guide, x, 50)):
        assert not b.per_datapoint.requires_grad
    assert seen and not any(seen[-2:])  # the estimators' own draws ran without a graph
