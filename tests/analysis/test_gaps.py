"""The gap report (ppvae.gaps) and the flow encoder on a small VAE trained on digits.

Checks the ordering ELBO[q] <= ELBO[q*] <= log p-hat(x) per datapoint within Monte Carlo error,
monotone semi-amortized refinement, and that the report renders to markdown, JSON (round trip)
and PNG. The PPCA closed-form checks of the report are in tests/infer/test_local.py.
"""

import math

import pytest
import torch
from pyro import poutine

import ppvae
from ppvae.guides import FlowEncoder
from ppvae.models import VAE

N_EVAL = 40


@pytest.fixture(scope="module")
def digits_vae():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    data = ppvae.data.load_dataset("digits", binarize="static")
    vae = VAE(64, 4, hidden=(64,))
    ppvae.fit(vae, vae.guide, data.train, epochs=15, batch_size=64, lr=1e-2, quiet=True,
              seed=0, device="cpu")
    flow = FlowEncoder(64, 4, hidden=(64,), num_flows=2)
    frozen = poutine.block(vae, hide_types=["param"])  # train the flow encoder only
    ppvae.fit(frozen, flow, data.train, epochs=10, batch_size=64, lr=1e-2, quiet=True,
              seed=0, device="cpu")
    torch.set_num_threads(old)
    return data.test[:N_EVAL], vae, flow


@pytest.fixture(scope="module")
def report(digits_vae):
    x, vae, flow = digits_vae
    torch.manual_seed(1)
    return ppvae.gaps(vae, {"diag": vae.guide, "flow": flow}, x, log_px="iwae",
                      local_steps=400, num_samples=500, log_px_options={"k": 2000})


def test_flow_encoder_keeps_the_contract_and_learns(digits_vae):
    x, vae, flow = digits_vae
    info = ppvae.check_pair(vae, flow, x)
    assert info.latent == ("z",)
    fresh = FlowEncoder(64, 4, hidden=(64,))
    assert ppvae.elbo(vae, flow, x, 200).mean > ppvae.elbo(vae, fresh, x, 200).mean + 5.0
    q = flow.distribution(x)
    assert q.batch_shape == (N_EVAL,) and q.event_shape == (4,)


def test_elbo_ordering_per_datapoint(report):
    row = report.row("diag")
    z_amortized = (row.elbo_amortized - row.elbo_local) / (
        row.elbo_amortized_se**2 + row.elbo_local_se**2).sqrt()
    z_local = (row.elbo_local - row.log_px) / (row.elbo_local_se**2 + row.log_px_se**2).sqrt()
    assert (z_amortized < 4).all(), z_amortized.max()  # ELBO[q] <= ELBO[q*]
    assert (z_local < 4).all(), z_local.max()  # ELBO[q*] <= log p-hat(x)
    for r in report.rows:  # on average, for both guides
        assert r.summary("approximation").mean > -4 * r.summary("approximation").mc_se
        assert r.summary("inference").mean > 0
    assert report.row("flow").family == "flow"
    assert report.rows[0].estimators.log_px.startswith("IWAE_2000 from local")
    assert all(r.log_px is report.rows[0].log_px or torch.equal(r.log_px, report.rows[0].log_px)
               for r in report.rows)  # one log p(x) reference for all guides


def test_semi_amortized_refinement_is_monotone(digits_vae):
    x, vae, _ = digits_vae
    means, ses = [], []
    for steps in (0, 10, 50, 250):
        q = ppvae.fit_local(vae, x, "diag", vae.guide, num_steps=steps, window=10**6)
        e = ppvae.elbo(vae, q, x, 1000)
        means.append(e.mean)
        ses.append(e.mean_stderr)
    for i in range(3):
        assert means[i + 1] > means[i] - 3 * math.hypot(ses[i], ses[i + 1]), means
    assert means[-1] - means[0] > 4 * math.hypot(ses[0], ses[-1]), means


def test_report_renders_markdown_json_png(report, tmp_path):
    md = report.to_markdown()
    assert "| diag | diag |" in md and "| flow | flow |" in md and "IWAE_2000" in md
    text = report.to_json()
    back = ppvae.GapReport.from_json(text)
    assert back.to_json() == text
    for a, b in zip(report.rows, back.rows, strict=True):
        assert torch.equal(a.amortization, b.amortization) and a.estimators == b.estimators
    assert back.timings == report.timings
    path = tmp_path / "gaps.png"
    report.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not a ppvae GapReport"):
        ppvae.GapReport.from_json('{"rows": []}')


def test_log_px_hooks(digits_vae):
    x, vae, _ = digits_vae
    q = ppvae.fit_local(vae, x, "diag", vae.guide, num_steps=20)

    def exact_like(model, xs, proposal, model_kwargs, **options):
        b = ppvae.iwae(model, proposal, xs, 50, model_kwargs=model_kwargs)
        return b.per_datapoint, b.stderr, "my estimator"

    r = ppvae.gaps(vae, vae.guide, x, log_px=exact_like, local={"guide": q}, num_samples=50)
    assert r.rows[0].estimators.log_px == "my estimator"
    assert "given" not in r.rows[0].estimators.elbo_local  # q's own fit record is reported
    with pytest.raises(ValueError, match="unknown log_px estimator 'nope'"):
        ppvae.gaps(vae, vae.guide, x, log_px="nope", local={"guide": q}, num_samples=10)
    with pytest.raises(ValueError, match="expected"):
        ppvae.gaps(vae, vae.guide, x, log_px=torch.zeros(3), local={"guide": q},
                   num_samples=10)
