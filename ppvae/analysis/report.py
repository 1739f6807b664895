"""Typed records of the inference-gap decomposition (Cremer, Li and Duvenaud 2018).

They render as a markdown table, a JSON document that round-trips, and a PNG figure (stacked bars
of approximation and amortization gaps per guide; per-datapoint amortized vs optimal ELBO).

Per-datapoint values are kept as float64 CPU tensors (a report is a summary, not a computation).
Means carry two standard errors: ``mc_se``, the Monte Carlo error of the mean for these
datapoints (from the per-datapoint standard errors, independent across datapoints and across
the estimators subtracted), and ``data_se``, the spread across datapoints over sqrt(N) (the
uncertainty of the mean as an estimate for the data distribution).

In a notebook each record shows a short summary (``repr``), :class:`GapReport` renders as its
markdown table (``_repr_markdown_``), and ``to_dataframe()`` gives the per-datapoint values as
a pandas DataFrame: :meth:`GapReport.to_dataframe` in long form, one row per (guide, datapoint),
so ``df.groupby("guide").mean(numeric_only=True)`` averages each guide's columns and
``df.loc["diag"]`` is one guide's rows.

Each gap is a difference of two columns that :func:`ppvae.gaps` estimates from independent draws
(log p(x) from its own IWAE or AIS run, ELBO[q*] and ELBO[q] from their own samples), so its
per-datapoint standard error is the root sum of squares of the two columns' (:meth:`GapRow.stderr`);
no covariance term is missing. With the default log p(x) estimator (IWAE, two independent
estimates, :func:`ppvae.iwae`) and the ELBO's s.e., every column's ±2 s.e. interval covers its
expectation at least 93% of the time on the exact references of ``tests/core/test_se_coverage.py``
unless the Pareto k̂ of the log p(x) weights is flagged; that k̂ is carried per datapoint
(``log_px_khat``) and summarized in the markdown.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import torch

from ..core.estimate import mean_stderr, record_mean, record_mean_stderr
from ..core.records import frame, per_datapoint_frame

__all__ = ["Estimators", "GapReport", "GapRow", "LogPx", "Summary"]


class LogPx(NamedTuple):
    """A per-datapoint log p(x) estimate, as :func:`ppvae.gaps` consumes it."""

    per_datapoint: torch.Tensor  # [N]
    stderr: torch.Tensor  # [N] (zeros for exact values)
    estimator: str  # e.g. "exact", "IWAE_5000 from local diag q*", "AIS ..."
    khat: torch.Tensor | None = None  # [N] Pareto k̂ of its importance weights, if it has some
    khat_limit: float | None = None  # k̂ above which its s.e. is unreliable (khat_threshold)

    @property
    def mean(self) -> float:
        """Average of ``per_datapoint`` over datapoints."""
        return record_mean(self)

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (independent errors across datapoints)."""
        return record_mean_stderr(self)

    def __repr__(self) -> str:
        """The estimator, the mean with its s.e. and the k̂ range, on one line."""
        n = self.per_datapoint.numel()
        text = (f"LogPx({self.estimator}: mean {self.mean:.4f} ± {self.mean_stderr:.4f} nats "
                f"over {n} datapoints")
        if self.khat is not None:
            k = self.khat[~self.khat.isnan()]
            text += (f"; Pareto k̂ at most {float(k.max()):.2f}" if k.numel() else
                     "; Pareto k̂ n/a")
            if self.khat_limit is not None and k.numel():
                text += f", above {self.khat_limit:.2f} on {int((k > self.khat_limit).sum())}/{n}"
        return text + ")"

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``).

        Columns ``per_datapoint`` and ``stderr`` (nats), and ``khat`` where the estimate has
        importance weights.
        """
        return per_datapoint_frame(self)


class Estimators(NamedTuple):
    """Which estimator produced each column."""

    log_px: str
    elbo_local: str
    elbo_amortized: str


class Summary(NamedTuple):
    """A mean over datapoints with its two standard errors (see module docstring)."""
    mean: float
    mc_se: float  # Monte Carlo standard error for these datapoints
    data_se: float  # standard deviation across datapoints / sqrt(N)


def _f64(t) -> torch.Tensor:
    """``t`` as a float64 CPU tensor; a list (from JSON) is read as float64, not via float32."""
    if isinstance(t, torch.Tensor):
        return t.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(t, dtype=torch.float64)


def _summary(values: torch.Tensor, se: torch.Tensor) -> Summary:
    n = values.numel()
    data_se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return Summary(float(values.mean()), mean_stderr(se), data_se)


_TENSORS = ("log_px", "log_px_se", "elbo_local", "elbo_local_se", "elbo_amortized",
            "elbo_amortized_se")
_LABELS = {"log_px": "log p̂(x)", "elbo_local": "ELBO[q*]", "elbo_amortized": "ELBO[q]",
           "approximation": "approximation gap", "amortization": "amortization gap",
           "inference": "inference gap"}
_PAIRS = {"approximation": ("log_px", "elbo_local"),
          "amortization": ("elbo_local", "elbo_amortized"),
          "inference": ("log_px", "elbo_amortized")}


class GapRow(NamedTuple):
    """One guide's decomposition; every tensor is ``[N]``."""

    guide: str
    family: str  # the family of q*
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    elbo_local: torch.Tensor  # ELBO[q*]
    elbo_local_se: torch.Tensor
    elbo_amortized: torch.Tensor  # ELBO[q]
    elbo_amortized_se: torch.Tensor
    estimators: Estimators
    log_px_khat: torch.Tensor | None = None  # [N] Pareto k̂ of the log p(x) weights, if any
    log_px_khat_limit: float | None = None  # the k̂ threshold for those weights

    @classmethod
    def build(cls, guide: str, family: str, log_px, optimal, amortized, estimators) -> GapRow:
        """From a :class:`LogPx` and two :class:`ppvae.Bound` records."""
        khat = getattr(log_px, "khat", None)
        return cls(guide, family, _f64(log_px.per_datapoint), _f64(log_px.stderr),
                   _f64(optimal.per_datapoint), _f64(optimal.stderr),
                   _f64(amortized.per_datapoint), _f64(amortized.stderr), estimators,
                   None if khat is None else _f64(khat), getattr(log_px, "khat_limit", None))

    @property
    def approximation(self) -> torch.Tensor:
        """Approximation gap log p(x) - ELBO[q*] per datapoint, ``[N]``."""
        return self.log_px - self.elbo_local  # [N]

    @property
    def amortization(self) -> torch.Tensor:
        """Amortization gap ELBO[q*] - ELBO[q] per datapoint, ``[N]``."""
        return self.elbo_local - self.elbo_amortized  # [N]

    @property
    def inference(self) -> torch.Tensor:
        """Inference gap log p(x) - ELBO[q] per datapoint, ``[N]``."""
        return self.log_px - self.elbo_amortized  # [N]

    def stderr(self, quantity: str) -> torch.Tensor:
        """Per-datapoint Monte Carlo s.e. ``[N]`` of a column or gap ("approximation", ...).

        A gap's is ``sqrt(se_a^2 + se_b^2)`` of its two columns, which come from independent
        draws (module docstring).
        """
        se = {"log_px": self.log_px_se, "elbo_local": self.elbo_local_se,
              "elbo_amortized": self.elbo_amortized_se}
        if quantity in se:
            return se[quantity]
        if quantity in _PAIRS:
            a, b = _PAIRS[quantity]
            return (se[a] ** 2 + se[b] ** 2).sqrt()
        raise KeyError(f"unknown quantity {quantity!r}; use one of {[*se, *_PAIRS]}")

    def summary(self, quantity: str) -> Summary:
        """Mean with standard errors of a column or gap ("approximation", "log_px", ...)."""
        return _summary(getattr(self, quantity), self.stderr(quantity))

    def khat_note(self) -> str | None:
        """One line on the Pareto k̂ of the log p(x) weights, or None when it has none."""
        if self.log_px_khat is None:
            return None
        k, n = self.log_px_khat, self.log_px_khat.numel()
        na = int(k.isnan().sum())
        flat = (f"; n/a on {na} (weights so even that the tail cannot move the estimate: "
                "ppvae.core.psis)" if na else "")
        if na == n:
            return f"Pareto k̂ of the log p̂(x) weights: n/a on all {n} datapoints (weights " \
                "so even that the tail cannot move the estimate: ppvae.core.psis)"
        worst = int(torch.nan_to_num(k, nan=-math.inf).argmax())
        limit = self.log_px_khat_limit
        if limit is None:
            return f"Pareto k̂ of the log p̂(x) weights: at most {float(k[worst]):.2f}{flat}"
        bad = int((k > limit).sum())
        if not bad:
            return (f"Pareto k̂ of the log p̂(x) weights: at most {float(k[worst]):.2f}, below "
                    f"{limit:.2f} on {n - na}/{n} datapoints{flat}")
        return (f"Pareto k̂ of the log p̂(x) weights above {limit:.2f} on {bad}/{n} datapoints "
                f"(worst {float(k[worst]):.2f} at datapoint {worst}): log p̂(x), its s.e. and "
                f"the gaps built on it are unreliable there{flat}")


    def __repr__(self) -> str:
        """The guide, its q* family and each column's and gap's mean ± s.e., on one line."""
        cells = ", ".join(f"{label} {self.summary(q).mean:.3f} ± {self.summary(q).mc_se:.3f}"
                          for q, label in _LABELS.items())
        return (f"GapRow({self.guide}, q* {self.family}, {self.log_px.numel()} datapoints, nats:"
                f" {cells})")

    def to_dataframe(self, datapoints=None):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``), in nats.

        Columns: each estimate and gap with its Monte Carlo s.e. (``log_px``,
        ``log_px_se``, ``elbo_local``, ``elbo_local_se``, ``elbo_amortized``,
        ``elbo_amortized_se``, ``approximation``, ``approximation_se``, ``amortization``,
        ``amortization_se``, ``inference``, ``inference_se``) and ``log_px_khat`` where the
        log p(x) estimate has one. ``datapoints`` labels the rows (default 0..N-1).
        """
        return frame(self._columns(), index=datapoints)

    def _columns(self) -> dict[str, torch.Tensor]:
        cols: dict[str, torch.Tensor] = {}
        for q in _LABELS:
            cols[q], cols[f"{q}_se"] = getattr(self, q), self.stderr(q)
        if self.log_px_khat is not None:
            cols["log_px_khat"] = self.log_px_khat
        return cols


class GapReport(NamedTuple):
    """The decomposition for every guide, from :func:`ppvae.gaps`."""

    rows: tuple[GapRow, ...]
    num_data: int
    timings: tuple[tuple[str, float], ...]  # (stage, seconds)

    def row(self, guide: str) -> GapRow:
        """The row of guide ``guide`` (``KeyError`` if there is none)."""
        for r in self.rows:
            if r.guide == guide:
                return r
        raise KeyError(f"no guide {guide!r} in this report; guides: {[r.guide for r in self.rows]}")

    def __repr__(self) -> str:
        """One line per guide: its columns' and gaps' means ± Monte Carlo s.e. (nats)."""
        lines = [f"GapReport(N = {self.num_data} datapoints, {len(self.rows)} guide"
                 f"{'s' if len(self.rows) != 1 else ''}; nats, mean ± Monte Carlo s.e."]
        for r in self.rows:
            cells = ", ".join(f"{label} {r.summary(q).mean:.3f} ± {r.summary(q).mc_se:.3f}"
                              for q, label in _LABELS.items())
            lines.append(f"  {r.guide} (q* {r.family}): {cells}")
        if self.timings:
            lines.append("  seconds per stage: " + ", ".join(f"{k} {v:.1f}"
                                                           for k, v in self.timings))
        return "\n".join(lines) + ")"

    def _repr_markdown_(self) -> str:
        """The markdown table of :meth:`to_markdown` (Jupyter renders it)."""
        return self.to_markdown()

    def to_dataframe(self, datapoints=None):
        """Every guide's per-datapoint values, one row per (guide, datapoint) (pandas).

        A long ("tidy") DataFrame with a MultiIndex (``guide``, ``datapoint``); columns
        ``family`` (of q*) and those of :meth:`GapRow.to_dataframe`, in nats: each estimate and
        gap with its Monte Carlo s.e., and ``log_px_khat`` where some guide's log p(x) has one
        (NaN for the others). ``df.groupby("guide").mean(numeric_only=True)`` gives each
        guide's means; ``df.loc["flow"]`` one guide's rows. ``datapoints`` labels the datapoints
        (default 0..N-1, e.g. the test rows of a ``ppvae gaps`` run).
        """
        if not self.rows:
            raise ValueError("this GapReport has no guides (rows)")
        n = self.num_data
        labels = list(range(n)) if datapoints is None else [int(i) for i in datapoints]
        if len(labels) != n:
            raise ValueError(f"datapoints has {len(labels)} labels for {n} datapoints")
        parts = [r._columns() for r in self.rows]
        khat = any("log_px_khat" in c for c in parts)
        nan = torch.full((n,), math.nan, dtype=torch.float64)
        cols: dict = {"guide": [r.guide for r in self.rows for _ in range(n)],
                      "datapoint": labels * len(self.rows),
                      "family": [r.family for r in self.rows for _ in range(n)]}
        for q in _LABELS:
            for name in (q, f"{q}_se"):
                cols[name] = torch.cat([c[name] for c in parts])
        if khat:
            cols["log_px_khat"] = torch.cat([c.get("log_px_khat", nan) for c in parts])
        return frame(cols).set_index(["guide", "datapoint"])

    def to_markdown(self) -> str:
        """The report as a markdown table with an estimators list and stage timings."""
        cols = ("log_px", "elbo_local", "elbo_amortized", "approximation", "amortization",
                "inference")
        out = [f"Inference gaps over N = {self.num_data} datapoints (nats; mean ± Monte Carlo "
               "s.e.; [s.e. across datapoints]).", "",
               "| guide | q* family | log p̂(x) | ELBO[q*] | ELBO[q] | approximation gap "
               "| amortization gap | inference gap | amortization share |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            s = {c: r.summary(c) for c in cols}
            cells = [f"{s[c].mean:.3f} ± {s[c].mc_se:.3f}" for c in cols[:3]]
            cells += [f"{s[c].mean:.3f} ± {s[c].mc_se:.3f} [{s[c].data_se:.3f}]" for c in cols[3:]]
            inf = s["inference"].mean
            share = s["amortization"].mean / inf if inf else math.nan
            out.append(f"| {r.guide} | {r.family} | " + " | ".join(cells) + f" | {share:.0%} |")
        out += ["", "Estimators:"]
        for r in self.rows:
            e = r.estimators
            out.append(f"- {r.guide}: log p̂(x): {e.log_px}; ELBO[q*]: {e.elbo_local}; "
                       f"ELBO[q]: {e.elbo_amortized}")
        notes = list(dict.fromkeys(n for n in (r.khat_note() for r in self.rows) if n))
        if notes:
            out += ["", *notes]
        if self.timings:
            out += ["", "Time per stage: " + "; ".join(f"{k} {v:.1f} s" for k, v in self.timings)]
        return "\n".join(out) + "\n"

    def to_json(self) -> str:
        """The report as a JSON document (``"format": "ppvae.GapReport/1"``)."""
        rows = [{"guide": r.guide, "family": r.family, "estimators": r.estimators._asdict(),
                 **{k: getattr(r, k).tolist() for k in _TENSORS},
                 "log_px_khat": None if r.log_px_khat is None else r.log_px_khat.tolist(),
                 "log_px_khat_limit": r.log_px_khat_limit} for r in self.rows]
        return json.dumps({"format": "ppvae.GapReport/1", "num_data": self.num_data,
                           "timings": [list(t) for t in self.timings], "rows": rows})

    @classmethod
    def from_json(cls, text: str) -> GapReport:
        """The report from :meth:`to_json`'s document (``ValueError`` for another document)."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != "ppvae.GapReport/1":
            raise ValueError("not a ppvae GapReport JSON document (missing format "
                             "'ppvae.GapReport/1')")
        rows = tuple(GapRow(r["guide"], r["family"], *(_f64(r[k]) for k in _TENSORS),  # type: ignore[call-arg, arg-type]  # mypy cannot count the columns
                            Estimators(**r["estimators"]),
                            None if r.get("log_px_khat") is None else _f64(r["log_px_khat"]),
                            r.get("log_px_khat_limit")) for r in doc["rows"])
        return cls(rows, int(doc["num_data"]), tuple((k, float(v)) for k, v in doc["timings"]))

    def plot(self, path=None, kind: str = "bars", **options):
        """A figure of the report (:mod:`ppvae.analysis.figures`); saved if ``path``.

        ``kind``: ``"bars"`` (mean gaps per guide, stacked: :func:`~ppvae.analysis.figures.
        gap_bars`), ``"histogram"`` (per-datapoint gaps: ``gap_histogram``) or ``"scatter"``
        (amortized vs optimal ELBO per datapoint: ``elbo_scatter``). ``options`` go to that
        function (e.g. ``data="test digits"`` for the title).
        """
        from . import figures

        draw = {"bars": figures.gap_bars, "histogram": figures.gap_histogram,
                "scatter": figures.elbo_scatter}
        if kind not in draw:
            raise ValueError(f"kind must be one of {', '.join(draw)}, got {kind!r}")
        return draw[kind](self, path=path, **options)
