"""The figures of ppvae.analysis.figures and ppvae.analysis.posterior_figures on tiny inputs:
each renders to a PNG, carries its title, axis labels (nats where they are log densities) and
legend entries, and plots the numbers it was given (means, y = x, window ends, chosen
coordinates)."""

import types

import numpy as np
import pytest
import torch
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from registry import REGISTRY

import ppvae
from ppvae.analysis.compare import PosteriorComparison, PosteriorSummary
from ppvae.analysis.figures import (
    elbo_scatter,
    gap_bars,
    gap_histogram,
    local_vi_curves,
    training_curves,
)
from ppvae.analysis.posterior_figures import mcmc_ranks, mcmc_traces, posterior_pairs
from ppvae.analysis.report import Estimators, GapReport, GapRow
from ppvae.train.progress import FitResult

N = 20


def _png(fig, tmp_path, name="f.png"):
    assert isinstance(fig, Figure)
    path = tmp_path / name
    fig.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _title(fig):
    return fig._suptitle.get_text().replace("\n", " ")


def _legend(ax_or_fig):
    leg = ax_or_fig.get_legend() if hasattr(ax_or_fig, "get_legend") else ax_or_fig.legends[0]
    return [t.get_text() for t in leg.get_texts()]


def _report():
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, shift in (("diag", 1.0), ("flow", 0.4)):
        log_px = -30 + 5 * torch.randn(N, generator=g, dtype=torch.float64)
        local = log_px - shift * torch.rand(N, generator=g, dtype=torch.float64)
        amort = local - 0.5 * torch.rand(N, generator=g, dtype=torch.float64)
        se = torch.full((N,), 0.01, dtype=torch.float64)
        rows.append(GapRow(name, name, log_px, se, local, se, amort, se,
                           Estimators("IWAE_100 from local flow q*", "ELBO", "ELBO")))
    return GapReport(tuple(rows), N, ())


def test_training_curves_from_metrics_rows_and_fit_result(tmp_path):
    rows = [{"epoch": e, "train": -40 + e, "valid": -41 + e, "lr": 1e-2 * 0.5 ** e}
            for e in range(1, 9)]
    rows[3]["valid"] = None  # a missing value is left out, not plotted as 0
    fig = training_curves(rows, objective="IWAE bound (k=5)", data="digits",
                          path=tmp_path / "t.png")
    assert (tmp_path / "t.png").is_file()
    top, bottom = fig.axes
    assert top.get_ylabel() == "nats per datapoint" and bottom.get_xlabel() == "epoch"
    assert bottom.get_ylabel() == "learning rate" and bottom.get_yscale() == "log"  # 128x span
    assert _legend(top) == ["training IWAE bound (k=5)", "validation ELBO"]
    valid = top.get_lines()[1].get_ydata()
    assert np.isnan(valid[3]) and valid[0] == -40
    assert "digits, 8 epochs" in _title(fig)

    res = FitResult([-50.0, -45.0], [], [3e-3, 3e-3], 1, 2, 10, 1.0, 10.0, "completed", "", 0,
                    "elbo")
    fig = training_curves(res)
    top, bottom = fig.axes
    assert _legend(top) == ["training ELBO"]  # no validation data: no validation line
    assert bottom.get_yscale() == "linear" and bottom.get_ylim()[0] == 0  # constant lr from 0
    _png(fig, tmp_path)
    with pytest.raises(ValueError, match="no epochs"):
        training_curves([])
    with pytest.raises(ValueError, match="history row 0"):
        training_curves([{"train": 1.0}])


def test_gap_histogram_has_a_panel_per_gap_with_each_guides_mean(tmp_path):
    report = _report()
    fig = gap_histogram(report, data="test rows")
    _png(fig, tmp_path)
    assert len(fig.axes) == 3
    title = _title(fig)
    assert f"N = {N} test rows" in title and "IWAE_100 from local flow q*" in title
    for ax, gap in zip(fig.axes, ("approximation", "amortization", "inference"), strict=True):
        assert ax.get_xlabel() == f"{gap} gap per datapoint (nats)"
        means = [float(getattr(r, gap).mean()) for r in report.rows]
        assert _legend(ax) == [f"{r.guide} (mean {m:.2f})" for r, m in zip(report.rows, means,
                                                                            strict=True)]
        vertical = sorted(line.get_xdata()[0] for line in ax.get_lines())
        assert np.allclose(vertical, sorted([0.0, *means]))  # each guide's mean and 0
    assert fig.axes[0].get_ylabel() == "number of datapoints"
    fig = gap_histogram(report, gaps=["amortization"])
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="gaps must be some of"):
        gap_histogram(report, gaps=["total"])
    with pytest.raises(ValueError, match="GapReport"):
        gap_histogram(report.rows)


def test_gap_bars_stack_the_mean_gaps_of_each_guide(tmp_path):
    report = _report()
    fig = gap_bars(report, data="test rows")
    _png(fig, tmp_path)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "mean gap per datapoint (nats)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["diag", "flow"]
    assert _legend(ax) == ["approximation gap: log p̂(x) − ELBO[q*]",
                           "amortization gap: ELBO[q*] − ELBO[q]"]
    low, high = [c for c in ax.containers if isinstance(c, BarContainer)]
    for bar_lo, bar_hi, r in zip(low, high, report.rows, strict=True):
        assert bar_lo.get_height() == pytest.approx(float(r.approximation.mean()))
        assert bar_hi.get_y() == pytest.approx(float(r.approximation.mean()))
        assert bar_hi.get_height() == pytest.approx(float(r.amortization.mean()))
    assert f"N = {N} test rows" in _title(fig)


def test_elbo_scatter_plots_each_datapoint_and_the_line_y_equals_x(tmp_path):
    report = _report()
    fig = elbo_scatter(report, data="test rows")
    _png(fig, tmp_path)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "ELBO[q], amortized guide (nats)"
    assert ax.get_ylabel() == "ELBO[q*], per-datapoint optimum (nats)"
    assert f"N = {N} test rows" in _title(fig)
    labels = _legend(ax)
    assert labels[-1] == "y = x (no amortization gap)"
    assert labels[0].startswith("diag (mean amortization gap ")
    for coll, r in zip(ax.collections, report.rows, strict=True):
        assert np.allclose(coll.get_offsets(), np.stack([r.elbo_amortized, r.elbo_local], 1))
    (line,) = ax.get_lines()
    assert np.allclose(line.get_xdata(), line.get_ydata())


def test_local_vi_curves_from_fit_local(tmp_path):
    e = REGISTRY["ppca/linear_full"]()
    q = ppvae.fit_local(e.model, e.x[:6], "diag", e.guide, num_steps=30, window=10,
                        progress=False)
    fig = local_vi_curves({"diag q*": q}, data="test rows")
    _png(fig, tmp_path)
    mean_ax, dist_ax, conv_ax = fig.axes
    (line,) = mean_ax.get_lines()
    assert list(line.get_xdata()) == [10, 20, 30]  # window ends, in optimizer steps
    assert np.allclose(line.get_ydata(), q.fit.history)
    assert mean_ax.get_ylabel() == "mean ELBO[q*] over datapoints (nats)"
    assert "(nats)" in dist_ax.get_ylabel() and conv_ax.get_ylabel() == "datapoints converged (%)"
    assert all(ax.get_xlabel() == "optimizer step" for ax in fig.axes)
    share = conv_ax.get_lines()[0].get_ydata()
    assert share[-1] == pytest.approx(100 * q.fit.num_converged / 6)
    assert "N = 6 test rows" in _title(fig) and "up to 30 steps" in _title(fig)
    assert _legend(mean_ax) == [f"diag q*: {q.fit.num_converged}/6 converged"]

    # a record without per-datapoint traces (only history): two panels, windows counted
    old = types.SimpleNamespace(family="diag", history=(-3.0, -2.0), num_steps=200,
                                max_steps=200, num_particles=8, num_converged=1,
                                converged=torch.tensor([True, False]),
                                steps_used=torch.tensor([100, 200]))
    fig = local_vi_curves(old)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "window of the convergence rule"
    with pytest.raises(ValueError, match="not a LocalFit"):
        local_vi_curves({"x": object()})


def _comparison(m=3, d=4, s=600):
    """MCMC with z[1] and z[3] strongly correlated; a diagonal q and q*."""
    g = torch.Generator().manual_seed(1)
    cov = torch.eye(d)
    cov[1, 3] = cov[3, 1] = 0.9
    chol = torch.linalg.cholesky(cov)
    ref = torch.randn(s, m, d, generator=g) @ chol.T

    def summary(name, z):
        c = torch.einsum("smd,sme->mde", z - z.mean(0), z - z.mean(0)) / (s - 1)
        sd = torch.diagonal(c, dim1=-2, dim2=-1).sqrt()
        return PosteriorSummary(name, z.mean(0), sd, c / (sd[..., None] * sd[..., None, :]),
                                None, None, z)

    diag = torch.randn(s, m, d, generator=g)
    return PosteriorComparison((7, 11, 15), tuple(f"z[{i}]" for i in range(d)), (
        summary("HMC", ref), summary("diag q", diag + 0.3), summary("diag q*", diag)))


def test_posterior_pairs_is_a_corner_plot_of_the_most_correlated_coordinates(tmp_path):
    fig = posterior_pairs(_comparison(), max_dims=2, datapoint_label="test row")
    _png(fig, tmp_path)
    title = _title(fig)
    assert "coordinates z[1], z[3] of 4 (most correlated under HMC)" in title
    assert "2 test rows" in title
    assert [sf._suptitle.get_text() for sf in fig.subfigs] == ["test row 7", "test row 11"]
    for sf in fig.subfigs:
        shown = [ax for ax in sf.axes if ax.axison]
        assert len(shown) == 3  # lower triangle of a 2 x 2 corner
        assert sorted(ax.get_xlabel() for ax in shown if ax.get_xlabel()) == ["z[1]", "z[3]"]
        assert [ax.get_ylabel() for ax in shown if ax.get_ylabel()] == ["z[3]"]
    assert _legend(fig) == ["HMC (reference)", "diag q", "diag q*"]
    handles = fig.legends[0].legend_handles
    assert handles[1].get_color() == handles[2].get_color()  # one guide, one colour
    assert handles[1].get_linestyle() == "--" and handles[2].get_linestyle() == "-"

    fig = posterior_pairs(_comparison(), datapoints=[15], dims=[0, 1, 2], methods=["diag q*"])
    assert "coordinates z[0], z[1], z[2] of 4 (chosen)" in _title(fig)
    assert len([ax for ax in fig.subfigs[0].axes if ax.axison]) == 6
    assert _legend(fig) == ["HMC (reference)", "diag q*"]
    with pytest.raises(ValueError, match=r"datapoints \[3\] not available; choose from \[7, 11"):
        posterior_pairs(_comparison(), datapoints=[3])
    with pytest.raises(ValueError, match=r"dims \[4\] out of range for 4"):
        posterior_pairs(_comparison(), dims=[4])
    with pytest.raises(ValueError, match="methods"):
        posterior_pairs(_comparison(), methods=["flow q"])


def _idata(chains=4, draws=50, n=3, d=3):
    g = torch.Generator().manual_seed(2)
    return ppvae.to_inference_data({"z": torch.randn(chains, draws, n, d, generator=g)},
                                   datapoints=[4, 9, 12])


def test_mcmc_trace_and_rank_plots_name_coordinate_and_datapoint(tmp_path):
    fig = mcmc_traces(_idata(), datapoints=[9, 12], dims=[2], datapoint_label="test row",
                      sampler="HMC", note="worst R-hat")
    _png(fig, tmp_path)
    assert len(fig.axes) == 4  # 2 rows (datapoint x coordinate) x (density, trace)
    assert [ax.get_title() for ax in fig.axes[::2]] == ["z[2], test row 9", "z[2], test row 12"]
    assert fig.axes[-1].get_xlabel() == "draw (after warm-up)"
    assert fig.axes[-2].get_xlabel() == "value of the coordinate"
    assert _legend(fig) == ["0", "1", "2", "3"]  # the chains
    assert _title(fig) == ("HMC traces, 4 chains x 50 draws: 1 of 3 coordinates of z at 2 of 3 "
                           "test rows (worst R-hat)")

    fig = mcmc_ranks(_idata(), max_datapoints=2, max_dims=3)
    _png(fig, tmp_path)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "z[0], datapoint 4"
    assert fig.axes[5].get_title() == "z[2], datapoint 9"
    assert "rank plots, 4 chains x 50 draws" in _title(fig)
    with pytest.raises(ValueError, match="no variable 'u'"):
        mcmc_traces(_idata(), var_name="u")
    with pytest.raises(ValueError, match=r"coordinates \[5\] not available"):
        mcmc_ranks(_idata(), dims=[5])
