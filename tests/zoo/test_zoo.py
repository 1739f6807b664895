"""Every model of the registry trains on the digits at small sizes: its held-out ELBO improves.

Models are the registry's (``tests/registry.py``; 64 pixels, so the 8x8 digits fit them all),
trained with ``ppvae.fit`` on 512 binarized digits for 4 epochs (labels as ``batch_kw``; Pyro's
``Trace_ELBO`` objective where the guide adds training losses; Pyro's SVI for pairs with global
latents, which ``fit`` rejects); the held-out per-datapoint ELBO (``ppvae.elbo`` on the analysed
pair) must rise by more than four Monte Carlo standard errors plus half a nat. Pairs whose data
are not images (PPCA) are left to their own tests.
"""

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from registry import REGISTRY
from sklearn.datasets import load_digits
from stats import z_threshold

import ppvae

IMAGE_ENTRIES = sorted(name for name in REGISTRY if not name.startswith("ppca"))



@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.as_tensor(data.data / 16.0 > 0.5, dtype=torch.float32)  # [1797, 64] binarized
    y = torch.as_tensor(data.target)
    return x[:512], y[:512], x[1500:1600], y[1500:1600]


def _kwargs(entry, y):
    if "y" not in entry.kwargs:
        return {}
    if (entry.kwargs["y"] < 0).any():  # semi-supervised entry: hide every other label
        y = torch.where(torch.arange(len(y)) % 2 == 0, y, -1)
    return {"y": y}


def _heldout_elbo(entry, x, kw) -> ppvae.Bound:
    with torch.no_grad():
        return ppvae.elbo(entry.model, entry.guide, x, num_samples=32, model_kwargs=kw)


def _train(entry, x, y):
    if entry.train_model is not None:  # global latents: Pyro's SVI on the full pair
        svi = SVI(entry.train_model, entry.train_guide, pyro.optim.Adam({"lr": 3e-3}),
                  Trace_ELBO())
        g = torch.Generator().manual_seed(0)
        for _ in range(4):  # epochs
            for idx in torch.randperm(len(x), generator=g).split(64):
                svi.step(x[idx], **_kwargs(entry, y[idx]))
        return
    objective = ppvae.PyroObjective(Trace_ELBO()) if entry.pyro_elbo else None
    ppvae.fit(entry.model, entry.guide, x, epochs=4, batch_size=64, lr=3e-3, quiet=True,
              objective=objective, batch_kw=_kwargs(entry, y), device="cpu")


@pytest.mark.parametrize("name", IMAGE_ENTRIES)
def test_model_trains_on_digits(name, digits):
    entry = REGISTRY[name]()
    x, y, x_test, y_test = digits
    before = _heldout_elbo(entry, x_test, _kwargs(entry, y_test))
    _train(entry, x, y)
    after = _heldout_elbo(entry, x_test, _kwargs(entry, y_test))
    se = (before.mean_stderr**2 + after.mean_stderr**2) ** 0.5
    assert after.mean > before.mean + z_threshold(1, two_sided=False) * se + 0.5, (before, after)
