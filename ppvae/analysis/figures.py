"""Figures of training and of the inference-gap study, drawn with matplotlib.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (nothing to close,
nothing left in pyplot's figure list) and saves it as well when given ``path``. Every axis is
labelled, values are in nats where they are log densities, and the title says what was computed
on what (``title=`` replaces it).

* :func:`training_curves`: training objective and validation ELBO per epoch, and the learning
  rate, from a :class:`ppvae.FitResult` or the rows of a run's ``metrics.jsonl``.
* :func:`gap_bars`: the mean approximation and amortization gaps of each guide of a
  :class:`ppvae.GapReport`, stacked, with their standard errors across datapoints.
* :func:`gap_histogram`: per-datapoint approximation, amortization and inference gaps of a
  :class:`ppvae.GapReport`, one histogram per gap with every guide overlaid.
* :func:`elbo_scatter`: ELBO[q] (amortized) against ELBO[q*] (per-datapoint optimum) per
  datapoint, with the line y = x on which the amortization gap is zero.
* :func:`local_vi_curves`: convergence of :func:`ppvae.fit_local` from its
  :class:`ppvae.LocalFit` records: mean ELBO[q*] per window, the spread of each datapoint's
  distance to its final value, and the share of datapoints converged.

The posterior figures (corner plots of q, q* and MCMC; ArviZ trace and rank plots) are in
:mod:`ppvae.analysis.posterior_figures`, the decoded-image figures in :mod:`ppvae.analysis.plots`.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .report import GapReport

__all__ = ["elbo_scatter", "gap_bars", "gap_histogram", "local_vi_curves", "save",
           "training_curves", "wrap"]

GAP_LABELS = {
    "approximation": ("approximation gap", "log p̂(x) − ELBO[q*]"),
    "amortization": ("amortization gap", "ELBO[q*] − ELBO[q]"),
    "inference": ("inference gap", "log p̂(x) − ELBO[q]"),
}


_OBJECTIVES = {"elbo": "ELBO", "iwae": "IWAE bound", "beta": "beta-ELBO",
               "kl-warmup": "ELBO with KL warm-up"}


def wrap(text: str, width_in: float, fontsize: float = 11.0) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points.

    Existing line breaks are kept; a character is taken as 0.6 of the font size wide.
    """
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def save(fig: Figure, path: str | os.PathLike | None, dpi: int = 100) -> Figure:
    """Save ``fig`` to ``path`` (PNG, PDF, ... by its suffix) when given; returns ``fig``."""
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _title(fig: Figure, text: str, fontsize: float = 11.0) -> None:
    fig.suptitle(wrap(text, fig.get_figwidth(), fontsize), fontsize=fontsize)


# ----------------------------------------------------------------------------- training


def _history_columns(history) -> tuple[np.ndarray, dict[str, np.ndarray], str | None]:
    """Epochs, the columns (train, valid, lr) as float arrays (NaN: missing), the objective."""
    if hasattr(history, "train_objective"):  # a FitResult
        n = len(history.train_objective)
        cols = {"train": history.train_objective, "valid": history.valid_elbo or [None] * n,
                "lr": getattr(history, "lr", None) or [None] * n}
        epochs = np.arange(1, n + 1, dtype=float)
        objective = getattr(history, "objective", "") or None
    else:
        rows = list(history)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping) or "epoch" not in r:
                raise ValueError(f"history row {i} is not a metrics row with an 'epoch' (a "
                                 f"FitResult or the rows of metrics.jsonl), got {r!r:.80}")
        epochs = np.array([float(r["epoch"]) for r in rows])
        cols = {k: [r.get(k) for r in rows] for k in ("train", "valid", "lr")}
        objective = None
    out = {k: np.array([math.nan if v is None else float(v) for v in vals])
           for k, vals in cols.items()}
    return epochs, out, objective


def training_curves(history, *, objective: str | None = None, data: str = "the training data",
                    title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Training objective and validation ELBO per epoch (nats per datapoint), and the lr.

    Args:
        history: a :class:`ppvae.FitResult`, or the rows of a run's ``metrics.jsonl``
            (:meth:`ppvae.app.runs.RunDir.read_metrics`: ``epoch``, ``train``, ``valid``,
            ``lr``; missing or null values are left out).
        objective: what the training value is, e.g. "ELBO" or "IWAE (k=5)" (default: the
            FitResult's objective, else "objective").
        data: what was trained on, for the title.
        title: replaces the default title.
        path: also save the figure there.

    Returns:
        A figure with two panels sharing the epoch axis: the per-datapoint means of the
        training objective (over the epoch's minibatches) and of the validation ELBO, and the
        learning rate used in each epoch (log scale when it spans more than a factor of 3).
    """
    epochs, cols, fit_objective = _history_columns(history)
    if epochs.size == 0:
        raise ValueError("training_curves: the history has no epochs")
    objective = objective or _OBJECTIVES.get(fit_objective or "", fit_objective) or "objective"
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
    marker = "o" if epochs.size <= 30 else None
    top.plot(epochs, cols["train"], marker=marker, ms=3, label=f"training {objective}")
    if np.isfinite(cols["valid"]).any():
        top.plot(epochs, cols["valid"], marker=marker, ms=3, label="validation ELBO")
    top.set_ylabel("nats per datapoint")
    top.grid(alpha=0.3)
    top.legend(loc="lower right")
    lr = cols["lr"]
    if np.isfinite(lr).any():
        bottom.plot(epochs, lr, marker=marker, ms=3, color="tab:gray")
        pos = lr[np.isfinite(lr) & (lr > 0)]
        if pos.size and pos.max() / pos.min() > 3:
            bottom.set_yscale("log")
        else:  # a constant or gently scheduled lr, on a scale from 0
            bottom.set_ylim(0, 1.15 * float(np.nanmax(lr)) if pos.size else 1.0)
        bottom.set_ylabel("learning rate")
    else:
        bottom.text(0.5, 0.5, "no learning rate recorded", ha="center", va="center",
                    transform=bottom.transAxes)
        bottom.set_yticks([])
    bottom.grid(alpha=0.3)
    bottom.set_xlabel("epoch")
    if epochs.size <= 12:
        bottom.set_xticks(epochs)
    _title(fig, title or f"Training on {data}, {int(epochs.size)} epochs: mean per-datapoint "
           f"{objective} per epoch, and the learning rate")
    return save(fig, path)


# ----------------------------------------------------------------------------- gap report


def _log_px_name(report: GapReport) -> str:
    names = list(dict.fromkeys(r.estimators.log_px for r in report.rows))
    return "; ".join(names)


def _check_report(report, who: str) -> None:
    if not isinstance(report, GapReport) or not report.rows:
        raise ValueError(f"{who} needs a GapReport with at least one guide (ppvae.gaps), got "
                         f"{type(report).__name__}")


def gap_bars(report: GapReport, *, data: str = "datapoints", title: str | None = None,
             path: str | os.PathLike | None = None) -> Figure:
    """Mean inference gap per guide as stacked bars: approximation below, amortization above.

    Error bars are each gap's standard error across datapoints (``Summary.data_se``: the spread
    over sqrt(N), the uncertainty of the mean for the data distribution); each segment is
    labelled with its mean in nats. ``data`` names the datapoints for the title; ``title``
    replaces it; ``path`` also saves the figure.
    """
    _check_report(report, "gap_bars")
    names = [r.guide for r in report.rows]
    approx = [r.summary("approximation") for r in report.rows]
    amort = [r.summary("amortization") for r in report.rows]
    fig = Figure(figsize=(max(6.0, 1.3 * len(names) + 2.4), 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    low = [a.mean for a in approx]
    ax.bar(x, low, yerr=[a.data_se for a in approx], capsize=4, color="C0", width=0.6,
           label="approximation gap: log p̂(x) − ELBO[q*]")
    ax.bar(x, [m.mean for m in amort], bottom=low, yerr=[m.data_se for m in amort], capsize=4,
           color="C1", width=0.6, label="amortization gap: ELBO[q*] − ELBO[q]")
    for i, (a, m) in enumerate(zip(approx, amort, strict=True)):
        for bottom, value in ((0.0, a.mean), (a.mean, m.mean)):
            ax.text(i + 0.32, bottom + value / 2, f"{value:.3f}", va="center", fontsize=8)
    top = max(a.mean + m.mean + m.data_se for a, m in zip(approx, amort, strict=True))
    ax.set_ylim(min(0.0, *low) * 1.1, 1.35 * top if top > 0 else 1.0)  # room for the legend
    ax.set_xticks(x, names)
    ax.set_xlim(-0.6, len(names) - 0.1)
    ax.set_xlabel("amortized guide (q* in its family)")
    ax.set_ylabel("mean gap per datapoint (nats)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _title(fig, title or f"Mean inference gap per guide = approximation + amortization "
           f"(N = {report.num_data} {data}; log p̂(x) by {_log_px_name(report)}; error bars: "
           "s.e. across datapoints)")
    return save(fig, path)


def gap_histogram(report: GapReport, *, data: str = "datapoints", bins: int = 30,
                  gaps: Sequence[str] = ("approximation", "amortization", "inference"),
                  title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Histograms of each gap per datapoint (nats), every guide of ``report`` overlaid.

    Args:
        report: the :class:`ppvae.GapReport` of :func:`ppvae.gaps`.
        data: what the N datapoints are, for the title (e.g. "test rows").
        bins: histogram bins (shared by the guides of a panel).
        gaps: which gaps, one panel each: "approximation" (log p̂(x) − ELBO[q*]),
            "amortization" (ELBO[q*] − ELBO[q]), "inference" (log p̂(x) − ELBO[q]).
        title: replaces the default title.
        path: also save the figure there.

    A dashed line marks each guide's mean; a dotted black line marks 0 (Monte Carlo noise can
    put a datapoint's estimate slightly below it).
    """
    _check_report(report, "gap_histogram")
    unknown = [g for g in gaps if g not in GAP_LABELS]
    if unknown or not gaps:
        raise ValueError(f"gaps must be some of {list(GAP_LABELS)}, got {list(gaps)}")
    fig = Figure(figsize=(4.2 * len(gaps), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(gaps), sharey=True))
    colors = [f"C{i}" for i in range(len(report.rows))]
    for ax, gap in zip(axes, gaps, strict=True):
        values = [getattr(r, gap).numpy() for r in report.rows]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for r, v, c in zip(report.rows, values, colors, strict=True):
            ax.hist(v, bins=edges, histtype="step", linewidth=1.6, color=c,
                    label=f"{r.guide} (mean {v.mean():.2f})")
            ax.axvline(v.mean(), color=c, linestyle="--", linewidth=1)
        ax.axvline(0.0, color="black", linestyle=":", linewidth=1)
        name, formula = GAP_LABELS[gap]
        ax.set_title(f"{name}: {formula}", fontsize=10)
        ax.set_xlabel(f"{name} per datapoint (nats)")
        ax.legend(fontsize=8, title="guide", title_fontsize=8)
    axes[0].set_ylabel("number of datapoints")
    _title(fig, title or f"Inference gaps per datapoint over N = {report.num_data} {data} "
           f"(log p̂(x) by {_log_px_name(report)})")
    return save(fig, path)


def elbo_scatter(report: GapReport, *, data: str = "datapoints", title: str | None = None,
                 path: str | os.PathLike | None = None) -> Figure:
    """ELBO[q] (amortized) against ELBO[q*] (per-datapoint optimum) per datapoint, in nats.

    One colour per guide of ``report``; points above the line y = x have an amortization gap
    ELBO[q*] − ELBO[q] > 0 (the local q* started from q's output, so it can only gain,
    up to Monte Carlo noise). ``data`` names the datapoints for the title; ``title`` replaces
    it; ``path`` also saves the figure.
    """
    _check_report(report, "elbo_scatter")
    fig = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax = fig.subplots()
    lo, hi = math.inf, -math.inf
    for i, r in enumerate(report.rows):
        a, o = r.elbo_amortized.numpy(), r.elbo_local.numpy()
        gap = float((o - a).mean())
        ax.scatter(a, o, s=9, alpha=0.6, color=f"C{i}", linewidths=0,
                   label=f"{r.guide} (mean amortization gap {gap:.2f})")
        lo, hi = min(lo, a.min(), o.min()), max(hi, a.max(), o.max())
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linewidth=0.9,
            label="y = x (no amortization gap)")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("ELBO[q], amortized guide (nats)")
    ax.set_ylabel("ELBO[q*], per-datapoint optimum (nats)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, markerscale=2)
    _title(fig, title or f"Amortized vs optimal ELBO per datapoint (N = {report.num_data} "
           f"{data})")
    return save(fig, path)


# ----------------------------------------------------------------------------- local VI


def _as_fits(fits) -> dict[str, Any]:
    """``fits`` (a LocalFit, a fitted LocalGuide, or a mapping / sequence of them) by name."""
    def one(f, name):
        f = getattr(f, "fit", f) if not hasattr(f, "history") else f
        if f is None or not hasattr(f, "history"):
            raise ValueError(f"local_vi_curves: {name} is not a LocalFit or a fitted LocalGuide "
                             "(ppvae.fit_local's result)")
        return f

    if isinstance(fits, Mapping):
        out = {str(k): one(v, repr(k)) for k, v in fits.items()}
    elif isinstance(fits, list | tuple):
        out = {}
        for i, v in enumerate(fits):
            f = one(v, f"fits[{i}]")
            out[f"{f.family} q* ({i})" if len(fits) > 1 else f"{f.family} q*"] = f
    else:
        f = one(fits, "fits")
        out = {f"{f.family} q*": f}
    if not out:
        raise ValueError("local_vi_curves: no fits given")
    return out


def _window_steps(fit) -> tuple[np.ndarray, bool]:
    """The step at the end of each window, and whether that is known (else window numbers)."""
    w = len(fit.history)
    window = getattr(fit, "window", None)
    if window:
        return np.minimum(np.arange(1, w + 1) * int(window), int(fit.num_steps)), True
    return np.arange(1, w + 1, dtype=float), False


def _converged_share(fit, steps: np.ndarray) -> np.ndarray:
    used = fit.steps_used.detach().cpu().numpy()
    conv = fit.converged.detach().cpu().numpy().astype(bool)
    return np.array([100.0 * np.mean(conv & (used <= s)) for s in steps])


def local_vi_curves(fits, *, data: str = "datapoints", title: str | None = None,
                    path: str | os.PathLike | None = None) -> Figure:
    """Convergence of per-datapoint variational inference (:func:`ppvae.fit_local`).

    Args:
        fits: a :class:`ppvae.LocalFit`, a fitted :class:`ppvae.LocalGuide`, or a mapping
            name -> either (e.g. one per guide family), or a sequence of them.
        data: what the datapoints are, for the title.
        title: replaces the default title.
        path: also save the figure there.

    Panels, against optimizer steps (the end of each convergence window):

    1. ELBO[q*] averaged over datapoints, each window's mean over its steps (nats);
    2. with per-datapoint traces (``LocalFit.trace``): each datapoint's distance to its final
       window, final − current ELBO (nats, median and 10–90% band over datapoints; on a
       symmetric log scale when it exceeds 2 nats; Monte Carlo noise makes it cross 0 once
       converged);
    3. the share of datapoints that the stopping rule declared converged by each step.
    """
    named = _as_fits(fits)
    has_trace = any(getattr(f, "trace", None) is not None and len(f.history)
                    for f in named.values())
    panels = 3 if has_trace else 2
    fig = Figure(figsize=(4.2 * panels, 4.0), layout="constrained")
    axes = list(fig.subplots(1, panels))
    known = True
    for i, (name, f) in enumerate(named.items()):
        steps, ok = _window_steps(f)
        known &= ok
        c = f"C{i}"
        n = int(f.converged.numel())
        axes[0].plot(steps, f.history, marker="o", ms=3, color=c,
                     label=f"{name}: {f.num_converged}/{n} converged")
        trace = getattr(f, "trace", None)
        if has_trace and trace is not None and len(f.history):
            t = trace.detach().double().cpu()  # [W, N]
            dist = (t[-1] - t).numpy()  # [W, N] final - current
            q10, q50, q90 = np.quantile(dist, [0.1, 0.5, 0.9], axis=1)
            axes[1].fill_between(steps, q10, q90, color=c, alpha=0.2, linewidth=0)
            axes[1].plot(steps, q50, color=c, marker="o", ms=3, label=f"{name}: median")
        axes[-1].plot(steps, _converged_share(f, steps), marker="o", ms=3, color=c, label=name)
    xlabel = "optimizer step" if known else "window of the convergence rule"
    axes[0].set_ylabel("mean ELBO[q*] over datapoints (nats)")
    axes[0].set_title("ELBO[q*], mean over datapoints", fontsize=10)
    axes[0].legend(fontsize=8)
    if has_trace:
        low, high = axes[1].get_ylim()
        if max(abs(low), abs(high)) > 2.0:  # from a far start: nats over decades
            axes[1].set_yscale("symlog", linthresh=0.1)
        axes[1].axhline(0.0, color="black", linewidth=0.8)
        axes[1].set_ylabel("final − current ELBO[q*] per datapoint (nats)")
        axes[1].set_title("distance to the final window (10–90% band)", fontsize=10)
        axes[1].legend(fontsize=8)
    axes[-1].set_ylabel("datapoints converged (%)")
    axes[-1].set_ylim(-3, 103)
    axes[-1].set_title("converged by the stopping rule", fontsize=10)
    axes[-1].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    first = next(iter(named.values()))
    n = int(first.converged.numel())
    _title(fig, title or f"Local VI (one q* per datapoint, fit_local) on N = {n} {data}: "
           f"up to {first.max_steps} steps, {first.num_particles} particles per step")
    return save(fig, path)
