"""The gap report (ppvae.gaps) and the flow encoder on a small VAE trained on digits.

Checks the ordering ELBO[q] <= ELBO[q*] <= log p-hat(x) per datapoint within Monte Carlo error,
monotone semi-amortized refinement, and that the report renders to markdown, JSON (round trip)
and PNG. The PPCA closed-form checks of the report are in tests/infer/test_local.py; the gaps'
standard errors and the Pareto k̂ of log p̂(x) (issue 16) are checked on a small PPCA here, their
coverage in tests/core/test_se_coverage.py (slow).
"""

import json
import math

import pytest
import torch
from pyro import poutine

import ppvae
import ppvae.analysis.report
import ppvae.core.diagnostic_warnings
import ppvae.guides
import ppvae.models
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


def test_gap_stderr_adds_the_independent_columns():
    """Each gap's s.e. is the root sum of squares of its two columns' (independent draws)."""
    g = torch.Generator().manual_seed(0)
    cols = [torch.rand(5, generator=g, dtype=torch.float64) for _ in range(6)]
    row = ppvae.GapRow("q", "diag", *cols, ppvae.analysis.report.Estimators("a", "b", "c"))
    lp_se, loc_se, am_se = cols[1], cols[3], cols[5]
    expected = {"approximation": (lp_se**2 + loc_se**2).sqrt(),
                "amortization": (loc_se**2 + am_se**2).sqrt(),
                "inference": (lp_se**2 + am_se**2).sqrt(), "log_px": lp_se}
    for q, se in expected.items():
        assert torch.equal(row.stderr(q), se)
        assert math.isclose(row.summary(q).mc_se, float(se.pow(2).sum().sqrt() / 5))
    with pytest.raises(KeyError, match="unknown quantity 'nope'"):
        row.stderr("nope")
    assert row.log_px_khat is None and row.khat_note() is None


def test_khat_note_counts_flagged_and_not_applicable_datapoints():
    cols = [torch.zeros(4, dtype=torch.float64) for _ in range(6)]
    est = ppvae.analysis.report.Estimators("a", "b", "c")

    def note(khat):
        return ppvae.GapRow("q", "diag", *cols, est, torch.tensor(khat, dtype=torch.float64),
                            0.67).khat_note()

    assert note([0.1, 0.2, 0.3, 0.4]) == ("Pareto k̂ of the log p̂(x) weights: at most 0.40, "
                                          "below 0.67 on 4/4 datapoints")
    n = note([0.1, math.nan, 0.3, math.nan])
    assert "at most 0.30, below 0.67 on 2/4 datapoints; n/a on 2" in n
    n = note([0.9, math.nan, 0.3, 0.2])
    assert "above 0.67 on 1/4 datapoints (worst 0.90 at datapoint 0)" in n and "n/a on 1" in n
    assert "n/a on all 4 datapoints" in note([math.nan] * 4)


def test_report_carries_the_pareto_khat_of_log_px(float64):
    d = ppvae.data.ppca_dataset(20, 6, 2, 0.5, seed=4)
    model = ppvae.models.PPCA(6, 2, W=d.W, b=d.b, sigma=d.sigma, fixed=True)
    guide = ppvae.guides.AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma, "diag",
                                                           name="khat_diag")
    q = ppvae.fit_local(model, d.x, "diag", guide, num_steps=0)
    report = ppvae.gaps(model, guide, d.x, "iwae", local={"guide": q}, num_samples=50,
                        log_px_options={"k": 100})
    row = report.rows[0]
    assert row.log_px_khat is not None and row.log_px_khat.shape == (20,)
    assert row.log_px_khat_limit == ppvae.core.diagnostic_warnings.khat_threshold(100)
    assert "Pareto k̂ of the log p̂(x) weights" in report.to_markdown()
    back = ppvae.GapReport.from_json(report.to_json())
    assert torch.equal(back.rows[0].log_px_khat, row.log_px_khat)
    assert back.to_markdown() == report.to_markdown()
    old = json.loads(report.to_json())  # a document written before k̂ was carried
    for r in old["rows"]:
        del r["log_px_khat"], r["log_px_khat_limit"]
    assert ppvae.GapReport.from_json(json.dumps(old)).rows[0].log_px_khat is None
    exact = ppvae.gaps(model, guide, d.x, ppvae.ppca_log_marginal(d.W, d.b, d.sigma, d.x),
                       local={"guide": q}, num_samples=50)
    assert exact.rows[0].log_px_khat is None and "Pareto" not in exact.to_markdown()
