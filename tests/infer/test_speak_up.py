"""Diagnostics that speak up: each unreliable-number condition raises its DiagnosticWarning.

The suite ignores DiagnosticWarning globally (short test runs are deliberately unconverged);
``pytest.warns`` sees them regardless, and ``_silent`` turns them back into errors for the
checks that a healthy run raises nothing.
"""

import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import ppvae
from ppvae.core.diagnostic_warnings import collect, khat_threshold
from ppvae.infer.diagnostics import Diagnostics, check_mcmc
from ppvae.models.ppca import PPCA


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@contextmanager
def _silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppvae.DiagnosticWarning)
        yield


def _ppca(n=6, d=5, k=2):
    data = ppvae.data.ppca_dataset(n, d, k, 0.5, seed=1)
    return data, PPCA(d, k, W=data.W, b=data.b, sigma=data.sigma, fixed=True)


def test_unconverged_local_fit_warns_with_count_and_advice(float64):
    data, model = _ppca()
    with pytest.warns(ppvae.ConvergenceWarning, match=r"0/6 datapoints converged within 5 "
                      r"steps.*raise num_steps"):
        ppvae.fit_local(model, data.x, "diag", num_steps=5)


def test_converged_local_fit_is_silent(float64):
    data, model = _ppca()
    with _silent():
        q = ppvae.fit_local(model, data.x, "diag", num_steps=2000, window=25, patience=2,
                            tol=1e-2, lr=0.05)
    assert q.fit.num_converged == 6


def test_short_hmc_warns_rhat_and_ess_and_records_sampler_stats(float64):
    data, model = _ppca()
    with pytest.warns(ppvae.MCMCWarning) as rec:
        res = ppvae.hmc(model, data.x, num_chains=4, num_warmup=20, num_samples=10)
    text = " ".join(str(w.message) for w in rec)
    assert "bulk ESS below 400 (100 per chain) on 6/6 datapoints" in text
    assert res.diagnostics is not None and res.diagnostics.rhat.shape == (6, 2)
    stats = res.to_inference_data().sample_stats
    assert {"acceptance_rate", "diverging", "step_size"} <= set(stats.data_vars)
    assert stats["diverging"].shape == (4, 10, 6)


def test_healthy_hmc_is_silent(float64):
    data, model = _ppca()
    with _silent():
        res = ppvae.hmc(model, data.x, num_chains=4, num_warmup=300, num_samples=800)
    assert res.diagnostics.max_rhat.max() <= 1.01
    assert not res.divergent.any()


def test_divergent_transitions_are_counted_and_named():
    diag = Diagnostics(*(np.ones((3, 2)) for _ in range(5)))
    diag = diag._replace(ess_bulk=np.full((3, 2), 1e4), ess_tail=np.full((3, 2), 1e4))
    with pytest.warns(ppvae.MCMCWarning, match=r"hmc: 7 divergent transitions on 2/3 "
                      r"datapoints \(worst 5 at datapoint 2\)"):
        msgs = check_mcmc(diag, 4, "hmc", divergent=np.array([2, 0, 5]))
    assert len(msgs) == 1  # R-hat 1.0 and large ESS pass


def test_rhat_is_not_checked_for_one_chain():
    diag = Diagnostics(np.full((2, 1), np.nan), np.full((2, 1), 500.0),
                       np.full((2, 1), 500.0), np.zeros((2, 1)), np.zeros((2, 1)))
    with _silent():
        assert check_mcmc(diag, 1, "hmc") == []


def test_nuts_records_step_size_and_divergences(float64):
    data, model = _ppca(n=2)
    with pytest.warns(ppvae.MCMCWarning, match="nuts: "):
        res = ppvae.nuts(model, data.x, num_chains=2, num_warmup=10, num_samples=10)
    stats = res.to_inference_data().sample_stats
    assert {"diverging", "step_size"} <= set(stats.data_vars)
    assert stats["diverging"].shape == (2, 10, 2)
    assert int(res.divergent.sum()) == int(res.divergences.sum())


def test_collect_gathers_diagnostic_warnings_once_and_passes_others_through(float64):
    data, model = _ppca()
    with collect() as found:
        ppvae.fit_local(model, data.x, "diag", num_steps=5)
        ppvae.fit_local(model, data.x, "diag", num_steps=5)
    assert len(found) == 1 and found[0].startswith("ConvergenceWarning: fit_local(diag): 0/6")
    with pytest.warns(RuntimeWarning, match="other"), collect() as found:
        warnings.warn("other", RuntimeWarning, stacklevel=1)
    assert found == []


def test_khat_threshold_follows_the_sample_size():
    # Vehtari et al. (2024): min(1 - 1/log10(S), 0.7)
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(10**6) == 0.7
