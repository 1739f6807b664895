"""Posterior figures: corner plots of amortized q, local q* and MCMC; ArviZ trace and rank plots.

* :func:`posterior_pairs`: for chosen datapoints and latent coordinates of a
  :class:`ppvae.PosteriorComparison`, a corner plot per datapoint: each method's marginal density
  on the diagonal (ArviZ's KDE) and its highest-density regions of each pair below it (the
  regions holding 50% and 90% of the method's draws, from a Gaussian KDE of the draws). MCMC is
  filled grey, each guide a coloured outline (dashed for an amortized q, solid for its q*). The
  correlations are what separate a diagonal q from a full-covariance or flow one.
* :func:`mcmc_traces` and :func:`mcmc_ranks`: ArviZ's ``plot_trace`` and ``plot_rank`` of MCMC
  draws (:meth:`ppvae.HMCResult.to_inference_data`) for a few datapoints and coordinates, each
  panel titled with the coordinate and the datapoint.

Every function returns a ``matplotlib.figure.Figure`` made without pyplot and saves it too when
given ``path``; ``title=`` replaces the default title, which names what is shown of how much.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..infer.diagnostics import import_arviz
from .figures import save, wrap

__all__ = ["mcmc_ranks", "mcmc_traces", "posterior_pairs"]

_KDE_DRAWS = 1000  # draws per method a 2-D KDE is built from (a seeded thinning)
_GRID = 60  # grid points per axis of a 2-D KDE


def _pick(available: Sequence, wanted, default_count: int, what: str, where: str) -> list:
    """``wanted`` (checked against ``available``) or the first ``default_count`` of them."""
    available = list(available)
    if wanted is None:
        return available[:default_count]
    wanted = list(wanted)
    missing = [w for w in wanted if w not in available]
    if missing or not wanted:
        raise ValueError(f"{where}: {what} {missing or wanted} not available; choose from "
                         f"{available}")
    return wanted


def _styles(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour and line style per guide: '<g> q' and '<g> q*' share a colour, q dashed."""
    groups: dict[str, str] = {}
    out = {}
    for name in names:
        head, _, tail = name.rpartition(" ")
        key = head if tail in ("q", "q*") and head else name
        color = groups.setdefault(key, f"C{len(groups)}")
        out[name] = (color, "--" if tail == "q" and head else "-")
    return out


def _correlated_dims(corr: np.ndarray, k: int) -> list[int]:
    """The ``k`` coordinates with the largest mean |correlation| with the others ``[M, D, D]``."""
    d = corr.shape[-1]
    a = np.abs(np.nan_to_num(corr)).mean(0)
    score = (a.sum(1) - np.diag(a)) / max(d - 1, 1)
    return sorted(int(i) for i in np.argsort(-score, kind="stable")[:k])


class _KDE2:
    """Gaussian kernel density estimate of 2-D draws ``[2, S]`` with Scott's bandwidth.

    The kernel covariance is the draws' covariance times ``S^(-1/3)``; a singular one (a point
    mass, perfectly correlated coordinates) raises ``numpy.linalg.LinAlgError``.
    """

    def __init__(self, pts: np.ndarray):
        s = pts.shape[1]
        cov = np.cov(pts) * s ** (-1.0 / 3.0)
        self._chol = np.linalg.cholesky(cov)
        self._pts = np.linalg.solve(self._chol, pts)  # whitened draws [2, S]
        self._norm = 1.0 / (2 * np.pi * s * float(np.prod(np.diag(self._chol))))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """The density at ``points [2, P]``."""
        w = np.linalg.solve(self._chol, points)  # [2, P]
        out = np.empty(points.shape[1])
        for a in range(0, points.shape[1], 2048):  # [2048, S] distances at a time
            d2 = ((w[:, a:a + 2048, None] - self._pts[:, None, :]) ** 2).sum(0)
            out[a:a + 2048] = np.exp(-0.5 * d2).sum(1) * self._norm
        return out


def _hdr_levels(kde: _KDE2, pts: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Density levels whose superlevel sets hold ``masses`` of the draws ``pts [2, S]``."""
    dens = kde(pts)
    return [float(np.quantile(dens, 1 - m)) for m in masses]


def _thin(z: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if z.shape[0] <= n:
        return z
    return z[np.random.default_rng(seed).choice(z.shape[0], n, replace=False)]


def _pair_panel(ax, draws: dict[str, np.ndarray], i: int, j: int, styles, lims, masses) -> None:
    """Highest-density regions of coordinates (j, i) (x: j, y: i) for each method."""
    gx = np.linspace(lims[j][0], lims[j][1], _GRID)
    gy = np.linspace(lims[i][0], lims[i][1], _GRID)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.vstack([xx.ravel(), yy.ravel()])
    for k, (name, z) in enumerate(draws.items()):
        pts = _thin(z[:, [j, i]], _KDE_DRAWS).T  # [2, S]
        color, ls = styles[name]
        try:
            kde = _KDE2(pts)
            dens = kde(grid).reshape(xx.shape)
            levels = _hdr_levels(kde, pts, masses)
        except (np.linalg.LinAlgError, ValueError):  # a point mass or a degenerate pair
            ax.plot(*pts.mean(1), marker="x", color=color, ms=7)
            continue
        lv = sorted(levels)  # the largest region (lowest density) first
        if np.any(np.diff(lv) <= 0) or not np.all(np.isfinite(lv)):
            continue  # too few distinct densities to draw regions
        if k == 0:  # the reference: filled, darker inside
            shades = [str(round(g, 2)) for g in np.linspace(0.85, 0.6, len(lv))]
            ax.contourf(xx, yy, dens, levels=[*lv, np.inf], colors=shades)
        else:
            ax.contour(xx, yy, dens, levels=lv, colors=[color], linestyles=ls,
                       linewidths=list(np.linspace(1.0, 1.8, len(lv))))


def _diag_panel(ax, draws: dict[str, np.ndarray], i: int, styles, lims) -> None:
    az = import_arviz()
    for k, (name, z) in enumerate(draws.items()):
        color, ls = styles[name]
        v = z[:, i]
        if np.ptp(v) == 0:
            ax.axvline(v[0], color=color, linestyle=ls)
            continue
        grid, pdf = az.kde(v)
        if k == 0:
            ax.fill_between(grid, pdf, color="0.78")
            ax.plot(grid, pdf, color="0.35", linewidth=1.0)
        else:
            ax.plot(grid, pdf, color=color, linestyle=ls, linewidth=1.5)
    ax.set_xlim(*lims[i])
    ax.set_ylim(bottom=0)
    ax.set_yticks([])


def _limits(draws: dict[str, np.ndarray], dims: list[int]) -> dict[int, tuple[float, float]]:
    out = {}
    for d in dims:
        lo = min(float(np.quantile(z[:, d], 0.005)) for z in draws.values())
        hi = max(float(np.quantile(z[:, d], 0.995)) for z in draws.values())
        pad = 0.08 * (hi - lo) if hi > lo else 1.0
        out[d] = (lo - pad, hi + pad)
    return out


def _corner(sub, draws, dims, names, styles, masses) -> None:
    """One datapoint's corner plot into subfigure ``sub``."""
    d = len(dims)
    axes = np.atleast_2d(sub.subplots(d, d, squeeze=False))
    lims = _limits(draws, dims)
    local = {k: v[:, dims] for k, v in draws.items()}
    lims = {i: lims[dims[i]] for i in range(d)}
    for r in range(d):
        for c in range(d):
            ax = axes[r, c]
            if c > r:
                ax.set_axis_off()
                continue
            if r == c:
                _diag_panel(ax, local, r, styles, lims)
            else:
                _pair_panel(ax, local, r, c, styles, lims, masses)
                ax.set_xlim(*lims[c])
                ax.set_ylim(*lims[r])
            ax.tick_params(labelsize=7)
            if r == d - 1:
                ax.set_xlabel(names[c], fontsize=9)
            else:
                ax.set_xticklabels([])
            if c == 0 and r > 0:
                ax.set_ylabel(names[r], fontsize=9)
            elif c > 0:
                ax.set_yticklabels([])
    if d == 1:
        axes[0, 0].set_ylabel("density", fontsize=9)


def posterior_pairs(comparison, *, datapoints: Sequence[int] | None = None,
                    dims: Sequence[int] | None = None, methods: Sequence[str] | None = None,
                    max_datapoints: int = 2, max_dims: int = 3,
                    masses: Sequence[float] = (0.5, 0.9), datapoint_label: str = "datapoint",
                    title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Corner plots comparing each guide's posterior with MCMC's, one per datapoint.

    Args:
        comparison: a :class:`ppvae.PosteriorComparison` (:func:`ppvae.compare_posteriors`;
            its first summary is the MCMC reference).
        datapoints: which datapoints, by their labels in ``comparison.datapoints`` (default:
            the first ``max_datapoints``).
        dims: which latent coordinates, by position (default: all when there are at most
            ``max_dims``, else the ``max_dims`` with the largest mean |correlation| with the
            other coordinates under MCMC, averaged over the datapoints shown).
        methods: which guides (names of the comparison's summaries; default all). MCMC is
            always drawn, filled grey.
        max_datapoints: datapoints shown by default.
        max_dims: coordinates shown by default.
        masses: the share of each method's draws its highest-density regions enclose.
        datapoint_label: what a datapoint label is, for the panel titles (e.g. "test row").
        title: replaces the default title.
        path: also save the figure there.

    The title says which coordinates of how many are shown and why. Guides named
    ``"<g> q"`` and ``"<g> q*"`` (as ``ppvae gaps`` names them) share a colour: dashed for the
    amortized q, solid for the local q*.
    """
    summaries = list(comparison.summaries)
    if not summaries:
        raise ValueError("posterior_pairs: the comparison has no summaries")
    ref, guides = summaries[0], summaries[1:]
    chosen = _pick([s.method for s in guides], methods, len(guides), "methods",
                   "posterior_pairs")
    labels = _pick(comparison.datapoints, datapoints, max_datapoints, "datapoints",
                   "posterior_pairs")
    pos = [list(comparison.datapoints).index(lab) for lab in labels]
    total = int(ref.samples.shape[-1])
    if dims is None:
        why = "all" if total <= max_dims else "most correlated under " + ref.method
        dims = list(range(total)) if total <= max_dims else _correlated_dims(
            ref.corr[pos].detach().cpu().numpy(), max_dims)
    else:
        dims = [int(d) for d in dims]
        bad = [d for d in dims if not 0 <= d < total]
        if bad or not dims:
            raise ValueError(f"posterior_pairs: dims {bad or dims} out of range for {total} "
                             "latent coordinates")
        why = "chosen"
    names = [comparison.latent_names[d] for d in dims]
    shown = [ref, *[s for s in guides if s.method in chosen]]
    # guides take the colours C0, C1, ... as in the gap figures; the reference is grey
    styles = {ref.method: ("0.35", "-"), **_styles([s.method for s in shown[1:]])}
    d = len(dims)
    size = 2.0 if d > 1 else 3.0
    fig = Figure(figsize=(size * d * len(pos) + 0.3 * (len(pos) - 1), size * d + 1.6),
                 layout="constrained")
    subs = fig.subfigures(1, len(pos), wspace=0.04, squeeze=False)[0]
    for sub, j, lab in zip(subs, pos, labels, strict=True):
        draws = {s.method: s.samples[:, j].detach().double().cpu().numpy() for s in shown}
        _corner(sub, draws, dims, names, styles, masses)
        sub.suptitle(f"{datapoint_label} {lab}", fontsize=10)
    handles: list[Artist] = [Patch(facecolor="0.7", edgecolor="0.35",
                                   label=f"{ref.method} (reference)")]
    handles += [Line2D([], [], color=styles[s.method][0],
                       linestyle=cast(Any, styles[s.method][1]), linewidth=1.6, label=s.method)
                for s in shown[1:]]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5),
               fontsize=9, frameon=False)
    pct = " and ".join(f"{m:.0%}" for m in masses)
    shown_dims = ", ".join(names)
    site = names[0].split("[")[0]
    text = title or (f"Posterior of {site} at {len(pos)} {datapoint_label}s: marginals "
                     f"(diagonal) and regions holding {pct} of each method's draws; "
                     f"coordinates {shown_dims} of {total} ({why})")
    fig.suptitle(wrap(text, fig.get_figwidth(), 11), fontsize=11)
    return save(fig, path)


class _Labeller:
    """ArviZ labeller: panel titles 'z[3], datapoint 12' instead of ArviZ's two-line 'z / 12, 3'."""

    def __init__(self, coord_dim: str, datapoint_label: str):
        az = import_arviz()
        base = az.labels.BaseLabeller()
        self._base, self.coord_dim, self.datapoint_label = base, coord_dim, datapoint_label

    def make_label_vert(self, var_name, sel: dict, isel: dict) -> str:
        """``var[coordinate], <datapoint_label> <datapoint>``."""
        coord = sel.get(self.coord_dim, "")
        text = f"{var_name}[{coord}]" if self.coord_dim in sel else str(var_name)
        if "datapoint" in sel:
            text += f", {self.datapoint_label} {sel['datapoint']}"
        return text

    def make_label_flat(self, var_name, sel: dict, isel: dict) -> str:
        """The same as :meth:`make_label_vert`."""
        return self.make_label_vert(var_name, sel, isel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


@contextmanager
def _arviz_on_new_matplotlib() -> Iterator[None]:
    """ArviZ 0.x's plots without the deprecation warning matplotlib >= 3.11 raises inside them.

    ArviZ passes a dict as ``alias_mapping`` to ``matplotlib.cbook.normalize_kwargs``; the
    plots are unaffected until matplotlib 3.13.
    """
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*alias_mapping to normalize_kwargs",
                                category=MatplotlibDeprecationWarning)
        yield


def _mcmc_selection(idata, var_name, datapoints, dims, max_datapoints, max_dims, where):
    post = idata.posterior
    names = list(post.data_vars)
    if var_name is None:
        var_name = names[0]
    if var_name not in names:
        raise ValueError(f"{where}: no variable {var_name!r} in the posterior; it has {names}")
    var = post[var_name]
    extra = [d for d in var.dims if d not in ("chain", "draw", "datapoint")]
    if "datapoint" not in var.dims or len(extra) != 1:
        raise ValueError(f"{where}: expected {var_name!r} with dims (chain, draw, datapoint, "
                         f"<coordinate>) as ppvae.to_inference_data writes; got {var.dims}")
    coord_dim = extra[0]
    dps = _pick(var["datapoint"].values.tolist(), datapoints, max_datapoints, "datapoints",
                where)
    crd = _pick(var[coord_dim].values.tolist(), dims, max_dims, "coordinates", where)
    return var_name, coord_dim, dps, crd, int(var.sizes["chain"]), int(var.sizes["draw"]), \
        int(var.sizes[coord_dim]), int(var.sizes["datapoint"])


def mcmc_traces(idata, *, var_name: str | None = None, datapoints: Sequence | None = None,
                dims: Sequence | None = None, max_datapoints: int = 2, max_dims: int = 2,
                datapoint_label: str = "datapoint", sampler: str = "MCMC",
                note: str | None = None, title: str | None = None,
                path: str | os.PathLike | None = None) -> Figure:
    """ArviZ trace plot of MCMC draws for a few datapoints and latent coordinates.

    Args:
        idata: ArviZ InferenceData with posterior ``var_name`` of dims (chain, draw,
            datapoint, coordinate), as :meth:`ppvae.HMCResult.to_inference_data` makes.
        var_name: the latent site (default the first variable).
        datapoints: datapoint coordinate values to show (default the first
            ``max_datapoints``).
        dims: coordinate values to show (default the first ``max_dims``).
        max_datapoints: datapoints shown by default.
        max_dims: coordinates shown by default.
        datapoint_label: what the datapoint coordinate is, for the panel titles.
        sampler: the sampler's name, for the title.
        note: appended to the default title in parentheses (e.g. how the points were chosen).
        title: replaces the default title.
        path: also save the figure there.

    One row per (datapoint, coordinate): each chain's density of the draws (left) and the
    draws against iteration after warm-up (right); divergent transitions, if recorded, are
    marked by ArviZ.
    """
    az = import_arviz()
    var, cdim, dps, crd, chains, draws, total, n = _mcmc_selection(
        idata, var_name, datapoints, dims, max_datapoints, max_dims, "mcmc_traces")
    rows = len(dps) * len(crd)
    fig = Figure(figsize=(10, 1.9 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    with _arviz_on_new_matplotlib():
        az.plot_trace(idata, var_names=[var], coords={"datapoint": dps, cdim: crd}, axes=axes,
                      compact=False, labeller=_Labeller(cdim, datapoint_label), legend=False,
                      show=False)
    for r in range(rows):
        axes[r, 0].set_ylabel("density", fontsize=8)
        axes[r, 1].set_ylabel("value", fontsize=8)
        for ax in axes[r]:
            ax.tick_params(labelsize=7)
            ax.title.set_fontsize(9)
    axes[-1, 0].set_xlabel("value of the coordinate", fontsize=9)
    axes[-1, 1].set_xlabel("draw (after warm-up)", fontsize=9)
    colors = [line.get_color() for line in axes[0, 1].get_lines()[:chains]]
    fig.legend(handles=[Line2D([], [], color=c, label=str(i)) for i, c in enumerate(colors)],
               title="chain", loc="outside lower center", ncols=chains, fontsize=8,
               title_fontsize=8, frameon=False)
    text = title or (f"{sampler} traces, {chains} chains x {draws} draws: {len(crd)} of "
                     f"{total} coordinates of {var} at {len(dps)} of {n} {datapoint_label}s"
                     + (f" ({note})" if note else ""))
    fig.suptitle(wrap(text, fig.get_figwidth(), 11), fontsize=11)
    return save(fig, path)


def mcmc_ranks(idata, *, var_name: str | None = None, datapoints: Sequence | None = None,
               dims: Sequence | None = None, max_datapoints: int = 2, max_dims: int = 3,
               datapoint_label: str = "datapoint", sampler: str = "MCMC",
               note: str | None = None, title: str | None = None,
               path: str | os.PathLike | None = None) -> Figure:
    """ArviZ rank plots of MCMC draws: one panel per (datapoint, coordinate).

    Each panel stacks one histogram per chain of the ranks of that chain's draws among all
    chains' draws (Vehtari et al. 2021); chains that mix give flat histograms at the dashed
    mean line. Arguments as :func:`mcmc_traces`; rows are datapoints, columns coordinates.
    """
    az = import_arviz()
    var, cdim, dps, crd, chains, draws, total, n = _mcmc_selection(
        idata, var_name, datapoints, dims, max_datapoints, max_dims, "mcmc_ranks")
    fig = Figure(figsize=(3.3 * len(crd) + 0.4, 2.6 * len(dps) + 1.0), layout="constrained")
    axes = fig.subplots(len(dps), len(crd), squeeze=False)
    with _arviz_on_new_matplotlib():
        az.plot_rank(idata, var_names=[var], coords={"datapoint": dps, cdim: crd}, ax=axes,
                     kind="bars", labeller=_Labeller(cdim, datapoint_label), show=False)
    for ax in axes.ravel():
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    text = title or (f"{sampler} rank plots, {chains} chains x {draws} draws: {len(crd)} of "
                     f"{total} coordinates of {var} at {len(dps)} of {n} {datapoint_label}s"
                     + (f" ({note})" if note else "") + "; flat bars: the chains mix")
    fig.suptitle(wrap(text, fig.get_figwidth(), 11), fontsize=11)
    return save(fig, path)
