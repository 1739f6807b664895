"""Progress bars of the long-running API functions (issue 18).

Each function runs on a tiny problem with stderr captured (pytest's capsys stream, which is not
a terminal): with ``progress=True`` its bar's description and a count ``n/total`` appear; with
``progress=False``, and with ``progress=None`` on a non-terminal stderr, nothing is written to
stderr at all; ``PPVAE_PROGRESS=1`` turns the bars on for ``progress=None``.
"""

import contextlib
import re

import pyro
import pytest
import torch
from registry import binary_batch

import ppvae
import ppvae.infer.local.vi
from ppvae.analysis.gaps import gaps
from ppvae.core import progress as progress_mod
from ppvae.core.bounds import elbo, iwae
from ppvae.core.weights import log_weights, samples_bar
from ppvae.distributed.sharded import sharded_ais
from ppvae.guides import AmortizedLinearGaussian
from ppvae.infer.ais import ais
from ppvae.infer.bdmc import bdmc
from ppvae.infer.local.vi import fit_local
from ppvae.models import PPCA, VAE


@pytest.fixture(autouse=True)
def _terminal_rule(monkeypatch):
    """Each test starts from the package default: no set_default, no PPVAE_PROGRESS."""
    monkeypatch.delenv("PPVAE_PROGRESS", raising=False)
    progress_mod.set_default(None)
    yield
    progress_mod.set_default(None)


def _ppca():
    d = ppvae.data.ppca_dataset(6, 4, 2, 0.5, seed=3, dtype=torch.float32)
    model = PPCA(4, 2, W=d.W, b=d.b, sigma=d.sigma, fixed=True)
    guide = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma, "diag")
    return model, guide, d.x


def _fit(progress, **kw):
    pyro.clear_param_store()
    vae = VAE(64, 2, (8,), name="vae_progress")
    return ppvae.fit(vae, vae.guide, binary_batch(48), epochs=2, batch_size=16, device="cpu",
                     progress=progress, **kw)


def _fit_local(progress):
    model, _, x = _ppca()
    return fit_local(model, x, "diag", num_steps=30, window=10, progress=progress)


def _ais(progress):
    model, _, x = _ppca()
    return ais(model, x, num_steps=20, num_chains=4, progress=progress)


def _bdmc(progress):
    model, _, x = _ppca()
    return bdmc(model, x, num_steps=20, num_chains=4, progress=progress)


def _elbo(progress):
    model, guide, x = _ppca()
    return elbo(model, guide, x, 20, chunk_size=5, progress=progress)


def _iwae(progress):  # whole estimates per chunk (k <= chunk): 3 chunks of 2 estimates
    model, guide, x = _ppca()
    return iwae(model, guide, x, 4, num_estimates=6, chunk_size=8, progress=progress)


def _iwae_streamed(progress):  # each estimate over several chunks (k > chunk)
    model, guide, x = _ppca()
    return iwae(model, guide, x, 30, chunk_size=8, progress=progress)


def _log_weights(progress):
    model, guide, x = _ppca()
    with torch.no_grad():
        return log_weights(model, guide, x, 12, chunk_size=5, progress=progress)


def _gaps(progress):
    model, guide, x = _ppca()
    return gaps(model, guide, x, "iwae", local_steps=20, num_samples=10,
                log_px_options={"k": 10}, progress=progress)


def _sharded_ais(progress):
    model, _, x = _ppca()
    return sharded_ais(model, x, block_size=4, num_steps=10, num_chains=4, progress=progress)


# function, then (description, total) of every bar it must draw
CASES = {
    "fit": (_fit, [("fit", 2)]),
    "fit_local": (_fit_local, [("fit_local diag", 30)]),
    "ais": (_ais, [("ais pilot", 50 + 200), ("ais", 20)]),
    "bdmc": (_bdmc, [("bdmc pilot", 50 + 200), ("bdmc forward", 20), ("bdmc reverse", 20)]),
    "elbo": (_elbo, [("elbo", 20)]),
    "iwae": (_iwae, [("iwae", 24)]),
    "iwae_streamed": (_iwae_streamed, [("iwae", 60)]),
    "log_weights": (_log_weights, [("log_weights", 12)]),
    # stages: ELBO[q], fit_local q*, ELBO[q*], log p(x); the q* fit and the IWAE draw their own
    "gaps": (_gaps, [("gaps", 4), ("fit_local diag", 20)]),
    "sharded_ais": (_sharded_ais, [("ais blocks", 2), ("ais pilot", 50 + 200), ("ais", 10)]),
}


def _bars(err: str) -> list[tuple[str, int]]:
    """(description, total) of every bar line tqdm wrote, e.g. ``ais:  40%|...| 8/20 [...]``."""
    return [(m[1], int(m[2])) for m in re.finditer(r"([A-Za-z_][\w* ]*?): +\d+%\|[^|]*\| *"
                                                   r"\d+/(\d+)", err)]


@pytest.mark.parametrize("name", list(CASES))
def test_progress_true_draws_each_bar_with_its_count(name, capsys):
    fn, expected = CASES[name]
    fn(True)
    err = capsys.readouterr().err
    drawn = set(_bars(err))
    for bar in expected:
        assert bar in drawn, f"{name}: no bar {bar} in {sorted(drawn)}:\n{err[-2000:]}"


@pytest.mark.parametrize("name", list(CASES))
def test_progress_false_and_none_off_a_terminal_write_nothing(name, capsys):
    fn, _ = CASES[name]
    for setting in (False, None):  # capsys's stderr is not a terminal
        fn(setting)
        captured = capsys.readouterr()
        assert captured.err == "", f"{name} (progress={setting}) wrote {captured.err!r}"


@pytest.mark.parametrize("name", ["fit", "ais", "gaps"])
def test_ppvae_progress_env_turns_bars_on_for_none(name, capsys, monkeypatch):
    fn, expected = CASES[name]
    monkeypatch.setenv("PPVAE_PROGRESS", "1")
    fn(None)
    assert expected[0] in set(_bars(capsys.readouterr().err))
    progress_mod.set_default(False)  # the command line's --quiet wins over the environment
    fn(None)
    assert capsys.readouterr().err == ""


def test_fit_quiet_is_progress_false_and_contradictions_are_refused(capsys):
    _fit(None, quiet=True)  # the deprecated spelling still works, silently
    assert capsys.readouterr().err == ""
    _fit(False, quiet=True)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="quiet=True and progress=True"):
        _fit(True, quiet=True)
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        _fit("yes")


def test_one_chunk_makes_no_bar_at_all():
    """A single vectorized evaluation (a training step's log weights) builds no tqdm object."""
    with samples_bar(True, 8, 8, "elbo") as bar:
        assert bar is None
    with samples_bar(False, 9, 8, "elbo") as bar:
        assert bar is not None and bar.disable


def test_fit_local_postfix_shows_converged_count_and_mean_elbo(capsys, monkeypatch):
    def eager_stage(progress, desc, *, total=None, unit="it"):  # draws on every update
        return contextlib.closing(progress_mod.bar(progress, total=total, desc=desc, unit=unit,
                                                   mininterval=0, miniters=1))

    monkeypatch.setattr(ppvae.infer.local.vi, "stage", eager_stage)
    q = _fit_local(True)
    shown = re.findall(r"converged=(\d+)/6, elbo=(-?[\d.]+)", capsys.readouterr().err)
    # drawn at the update after each window's end: windows 1 and 2 (the bar closes after 3)
    elbos = list(dict.fromkeys(float(e) for _, e in shown))  # each drawn after many updates
    assert elbos == pytest.approx(q.fit.history[:2], abs=1e-3)
    counts = [int(c) for c, _ in shown]
    assert counts == sorted(counts) and counts[-1] <= q.fit.num_converged  # never unconverge
