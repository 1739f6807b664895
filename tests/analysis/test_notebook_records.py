"""Result records in a notebook (issue 18): a repr that fits a screen for N = 1000 datapoints
(no tensor dump), to_dataframe() whose columns hold exactly the record's values, and reports
that render as their markdown (_repr_markdown_)."""

import re

import numpy as np
import pytest
import torch

from ppvae.analysis.collapse import CollapseReport
from ppvae.analysis.compare import PosteriorComparison, PosteriorSummary
from ppvae.analysis.report import Estimators, GapReport, GapRow, LogPx
from ppvae.infer.diagnostics import Diagnostics, e_bfmi, import_arviz
from ppvae.infer.hmc import HMCResult
from ppvae.infer.nuts import NUTSResult

N = 1000
G = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def rand(*shape):
    return torch.rand(*shape, generator=G, dtype=torch.float64)


def assert_compact(obj):
    text = repr(obj)
    assert len(text.splitlines()) <= 25, text
    assert "tensor(" not in text and "array(" not in text, text
    # no run of many numbers, as a tensor or array dump prints
    assert not re.search(r"(-?\d+\.\d+,?\s+){8}", text), text
    return text


def _row(name, khat=True):
    lp = -90 + randn(N)
    se = lambda v: torch.full((N,), v, dtype=torch.float64)  # noqa: E731
    return GapRow(name, name, lp, se(0.01), lp - 1 - rand(N), se(0.02), lp - 3 - rand(N),
                  se(0.03), Estimators("IWAE_1000 from q*", "ELBO_500", "ELBO_500"),
                  rand(N) if khat else None, 0.7 if khat else None)


@pytest.fixture
def report():
    return GapReport((_row("diag"), _row("flow", khat=False)), N,
                     (("local q*", 3.2), ("log p(x)", 1.0)))


def test_gap_report_repr_markdown_and_long_dataframe(report):
    text = assert_compact(report)
    assert "diag (q* diag)" in text and "inference gap" in text
    assert report._repr_markdown_() == report.to_markdown()
    labels = list(range(100, 100 + N))
    df = report.to_dataframe(datapoints=labels)
    assert df.index.names == ["guide", "datapoint"] and len(df) == 2 * N
    for r in report.rows:
        part = df.loc[r.guide]
        assert list(part.index) == labels and (part["family"] == r.family).all()
        for q in ("log_px", "elbo_local", "elbo_amortized", "approximation", "amortization",
                  "inference"):
            assert np.array_equal(part[q].to_numpy(), getattr(r, q).numpy()), q
            assert np.array_equal(part[f"{q}_se"].to_numpy(), r.stderr(q).numpy()), q
    assert np.array_equal(df.loc["diag", "log_px_khat"].to_numpy(),
                          report.rows[0].log_px_khat.numpy())
    assert df.loc["flow", "log_px_khat"].isna().all()
    means = df.groupby("guide")["inference"].mean()
    assert means["flow"] == pytest.approx(report.rows[1].summary("inference").mean)


def test_gap_row_and_log_px(report):
    row = report.rows[0]
    text = assert_compact(row)
    assert text.startswith("GapRow(diag, q* diag, 1000 datapoints")
    df = row.to_dataframe()
    assert df.index.name == "datapoint" and len(df) == N
    assert np.array_equal(df["amortization"].to_numpy(), row.amortization.numpy())
    lp = LogPx(row.log_px, row.log_px_se, "IWAE_1000", row.log_px_khat, 0.7)
    text = assert_compact(lp)
    bad = int((row.log_px_khat > 0.7).sum())
    assert f"above 0.70 on {bad}/{N}" in text
    df = lp.to_dataframe()
    assert list(df.columns) == ["per_datapoint", "stderr", "khat"]
    assert np.array_equal(df["khat"].to_numpy(), row.log_px_khat.numpy())


def _diagnostics(n=N, d=2):
    return Diagnostics(1 + 0.01 * rand(n, d).numpy(), 300 + 100 * rand(n, d).numpy(),
                       200 + 100 * rand(n, d).numpy(), 0.01 * rand(n, d).numpy(),
                       0.01 * rand(n, d).numpy())


def test_diagnostics_long_frame():
    diag = _diagnostics()
    assert_compact(diag)
    df = diag.to_dataframe(coordinates=["z[0]", "z[1]"])
    assert df.index.names == ["datapoint", "coordinate"] and len(df) == 2 * N
    assert np.array_equal(df.groupby("datapoint")["rhat"].max().to_numpy(), diag.max_rhat)
    assert np.array_equal(df.xs("z[1]", level="coordinate")["ess_tail"].to_numpy(),
                          diag.ess_tail[:, 1])
    with pytest.raises(ValueError, match=r"\[1000, 2\].*3 coordinate labels"):
        diag.to_dataframe(coordinates=["a", "b", "c"])


def test_hmc_result_frame_and_e_bfmi():
    c, s = 4, 50
    accept = rand(c, s, N)
    energy = randn(c, s, N).cumsum(1)  # a slowly moving energy: small E-BFMI
    res = HMCResult({"z": randn(c, s, N, 2)}, accept, 0.1 + rand(c, N), rand(c, N, 2), 8,
                    accept < 0.01, _diagnostics(), energy, torch.arange(s) % 8 + 1,
                    randn(c, s, N), randn(c, s, N) - 5, "x")
    text = assert_compact(res)
    assert "4 chains x 50 draws for 1000 datapoints of z (2 coordinates)" in text
    df = res.to_dataframe()
    assert np.array_equal(df["mean_accept_prob"].to_numpy(), accept.mean((0, 1)).numpy())
    assert np.array_equal(df["divergences"].to_numpy(), (accept < 0.01).sum((0, 1)).numpy())
    assert np.array_equal(df["max_rhat"].to_numpy(), res.diagnostics.max_rhat)
    assert np.array_equal(df["mean_log_likelihood"].to_numpy(),
                          res.log_likelihood.mean((0, 1)).numpy())
    az = import_arviz()  # E-BFMI as ArviZ computes it, per chain, for a few datapoints
    for n in (0, 17, 999):
        ref = az.bfmi(energy[:, :, n].numpy())
        assert np.allclose(e_bfmi(energy)[:, n].numpy(), ref)
        assert df["min_e_bfmi"].iloc[n] == pytest.approx(ref.min())


def test_nuts_result_repr_and_frame():
    c, s = 2, 40
    res = NUTSResult({"z": randn(c, s, N, 2)}, torch.tensor([0.3, 0.4]), torch.tensor([0, 2]),
                     12.5, _diagnostics(), torch.zeros(c, s, dtype=torch.bool), rand(c, s),
                     torch.full((c, s), 7), torch.full((c, s), 3), randn(c, s),
                     randn(c, s, N), randn(c, s, N))
    text = assert_compact(res)
    assert "2 divergent" in text and "mean tree depth 3" in text
    df = res.to_dataframe()
    assert list(df.columns) == ["mean_log_likelihood", "max_rhat", "min_ess_bulk",
                                "min_ess_tail"]
    assert np.array_equal(df["min_ess_bulk"].to_numpy(), res.diagnostics.min_ess_bulk)


def _summary(method, m, d=2, guide=True):
    corr = torch.eye(d, dtype=torch.float64).expand(m, d, d)
    kl = (rand(m), rand(m) / 10, rand(m) / 20) if guide else (None, None, None)
    return PosteriorSummary(method, randn(m, d), rand(m, d), corr, kl[0], kl[1], randn(20, m, d),
                            rand(m, d) / 10, rand(m, d) / 10, kl[2])


def test_posterior_comparison_and_summary():
    labels = tuple(range(5, 5 + N))
    cmp = PosteriorComparison(labels, ("z[0]", "z[1]"),
                              (_summary("HMC", N, guide=False), _summary("diag q", N)))
    text = assert_compact(cmp)
    assert "HMC: 20 draws, the reference" in text and "diag q: 20 draws, KL" in text
    assert cmp._repr_markdown_() == cmp.to_markdown()
    df = cmp.to_dataframe()
    assert df.index.names == ["method", "datapoint"] and len(df) == 2 * N
    q = cmp.summaries[1]
    part = df.loc["diag q"]
    assert list(part.index) == list(labels)
    assert np.array_equal(part["mean z[1]"].to_numpy(), q.mean[:, 1].numpy())
    assert np.array_equal(part["kl_to_mcmc"].to_numpy(), q.kl_to_mcmc.numpy())
    assert df.loc["HMC", "kl_to_mcmc"].isna().all()
    assert_compact(q)
    one = q.to_dataframe()
    assert np.array_equal(one["sd_se 0"].to_numpy(), q.sd_se[:, 0].numpy())


def test_collapse_report():
    k = 50
    rep = CollapseReport("z", rand(k), rand(k) / 100, rand(k) / 20, 0.01, 0.05)
    text = assert_compact(rep)
    assert f"{rep.num_active}/{k} active units" in text and "± 0.050" in text
    assert rep._repr_markdown_() == rep.to_markdown()
    assert rep.to_markdown().count("\n| ") == k + 1  # the header and one row per dimension
    df = rep.to_dataframe()
    assert df.index.name == "dim" and len(df) == k
    assert np.array_equal(df["active"].to_numpy(), rep.active.numpy())
    assert np.array_equal(df["kl"].to_numpy(), rep.kl.numpy())
