"""``ppvae ppca``: the PPCA study, estimated bounds and gaps next to their closed-form values.

On data from a probabilistic PCA (synthetic with known parameters, or the user's own), the
model is set to the generating parameters (synthetic data) or to the maximum-likelihood
parameters (Tipping and Bishop 1999; the user's data), several guides are
fitted with Pyro's SVI (Trace_ELBO), and for each guide the table shows the Monte Carlo ELBO and
IWAE bounds from :func:`ppvae.log_weights` next to the exact log p(x) and the exact inference
gap KL(q || p(z | x)). Where the numbers agree within their standard errors, the estimators are
honest; that is the point of the study. The gap of the best diagonal family (the mean-field
optimum) is shown as the floor the diagonal guides can reach.

:func:`run_ppca_study` is the study (a :class:`PPCAStudy` record: ``to_dataframe()`` per guide,
``datapoint_frame()`` per datapoint); :func:`write_study` writes it into a run directory;
:func:`main` is the command: the study on synthetic data or on the user's ``.npy`` / ``.csv``
matrix (a header row allowed), printed as a table and written to ``--out`` (default
``runs/ppca-<time>``):

* ``report.md`` / ``report.json``: the study's section (table, settings, provenance),
* ``ppca.csv``: one row per guide (bounds, gaps and their standard errors, in nats),
* ``ppca_datapoints.csv``: per datapoint, the exact log p(x) and each guide's ELBO and exact
  gap,
* ``ppca.json``: the numbers and the settings,
* ``ppca.png``: estimated against exact gaps, per guide and per datapoint.

Everything is checked before the study runs; the directory is created only when the study is
done, and a new one is removed again if writing fails.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from ..analysis.ppca import mean_field_gap, ppca_kl_to_posterior, ppca_log_marginal, ppca_mle
from ..core.bounds import elbo, iwae
from ..core.progress import bar
from ..core.records import frame, record_repr
from ..data.downloads import missing_folders
from .files import RunLock, write_text
from .inputs import UsageError, nonnegative_int, positive_float, positive_int
from .runs import RunDir, command_line, json_safe, provenance, record_warnings

__all__ = ["PPCARow", "PPCAStudy", "add_arguments", "main", "run_ppca_study", "study_figure",
           "write_study"]


def _api_defaults() -> dict[str, Any]:
    """:func:`run_ppca_study`'s defaults: the command's flags default to them."""
    return {k: v.default for k, v in inspect.signature(run_ppca_study).parameters.items()
            if v.default is not inspect.Parameter.empty}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae ppca`` (defaults: :func:`run_ppca_study`'s)."""
    d = _api_defaults()
    p.add_argument("--data", help=".npy, .csv or .txt matrix [N, D] (a CSV header row is "
                   "allowed); synthetic PPCA data if absent")
    p.add_argument("--out", help="run directory for the report, tables and figure (default "
                   "runs/ppca-<time>)")
    p.add_argument("--latent-dim", type=positive_int, default=d["latent_dim"])
    p.add_argument("--num-data", type=positive_int, default=d["num_data"],
                   help="synthetic data only")
    p.add_argument("--data-dim", type=positive_int, default=d["data_dim"],
                   help="synthetic data only")
    p.add_argument("--sigma", type=positive_float, default=d["sigma"],
                   help="synthetic data only: the noise standard deviation")
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="SVI steps per guide")
    p.add_argument("--lr", type=positive_float, default=d["lr"],
                   help="SVI learning rate (ClippedAdam, decayed to lr / 1000 over the steps)")
    p.add_argument("--num-samples", type=positive_int, default=d["num_samples"],
                   help="samples per datapoint for the ELBO")
    p.add_argument("--iwae-k", type=positive_int, default=d["iwae_k"])
    p.add_argument("--seed", type=nonnegative_int, default=d["seed"])


def _out_dir(args) -> Path:
    """The run directory, checked before the study runs."""
    out = Path(args.out) if args.out else Path("runs") / f"ppca-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a directory")
    if (out / "config.toml").exists():
        raise UsageError(f"--out {out} holds a training run (config.toml); choose another "
                         "--out for the PPCA study")
    if out.is_dir():
        RunDir(out).read_report()  # a broken report.json is refused before the study runs
    return out


def main(args) -> int:
    """Run ``ppvae ppca``: print the study's table and write its run directory."""
    from ..data.tables import read_table

    table = None
    if args.data:
        try:
            table = read_table(args.data, min_rows=2)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(str(e)) from e
    x = None if table is None else torch.as_tensor(table.values)
    dim = x.shape[1] if x is not None else args.data_dim
    if not 0 < args.latent_dim < dim:
        raise UsageError(f"--latent-dim must be between 1 and D - 1 = {dim - 1} (D: the "
                         f"{'columns of the data' if x is not None else '--data-dim'}), got "
                         f"{args.latent_dim}")
    if x is None and args.num_data < 2:
        raise UsageError(f"--num-data must be at least 2, got {args.num_data}")
    out = _out_dir(args)
    settings = {"data": args.data or "synthetic", "columns": list(table.columns or [])
                if table is not None else None, "latent_dim": args.latent_dim,
                "steps": args.steps, "lr": args.lr, "num_samples": args.num_samples,
                "iwae_k": args.iwae_k, "seed": args.seed}
    if x is None:
        settings.update(num_data=args.num_data, data_dim=args.data_dim, sigma=args.sigma)
    with record_warnings() as found:
        study = run_ppca_study(
            x, latent_dim=args.latent_dim, num_data=args.num_data, data_dim=args.data_dim,
            sigma=args.sigma, steps=args.steps, lr=args.lr, num_samples=args.num_samples,
            iwae_k=args.iwae_k, seed=args.seed)
    run = write_study(study, out, settings=settings, warnings=found)
    print(study.to_markdown())
    print(f"run directory: {run.path}\nreport: {run.file('report.md')}")
    return 0


class PPCARow(NamedTuple):
    """One guide's line of the PPCA study: bounds, estimated and exact gaps, training time.

    Nats per datapoint, means over the N datapoints; ``*_se`` the Monte Carlo standard errors.
    """

    guide: str
    elbo: float
    elbo_se: float
    iwae: float
    iwae_se: float
    gap_estimated: float  # exact log p(x) - ELBO estimate (its s.e. is elbo_se)
    gap_exact: float  # mean KL(q || p(z | x)), closed form
    train_seconds: float
    elbo_n: torch.Tensor | None = None  # [N] each datapoint's ELBO estimate
    elbo_se_n: torch.Tensor | None = None  # [N] its Monte Carlo s.e.
    gap_exact_n: torch.Tensor | None = None  # [N] each datapoint's KL(q || p(z | x))

    def __repr__(self) -> str:
        return record_repr(self)


class PPCAStudy(NamedTuple):
    """The PPCA study: data sizes, exact references and one row per guide."""

    num_data: int
    data_dim: int
    latent_dim: int
    params: str  # "generating" or "maximum likelihood"
    log_px: float  # mean exact log p(x) under the model's parameters
    mean_field_gap: float
    iwae_k: int
    rows: list[PPCARow]
    log_px_n: torch.Tensor | None = None  # [N] exact log p(x_n)

    def __repr__(self) -> str:
        return record_repr(self)

    def to_dataframe(self):
        """One row per guide (index ``guide``): the bounds, gaps and s.e. in nats."""
        cols = {k: [getattr(r, k) for r in self.rows] for k in (
            "elbo", "elbo_se", "iwae", "iwae_se", "gap_estimated", "gap_exact",
            "train_seconds")}
        df = frame(cols, index=[r.guide for r in self.rows], index_name="guide")
        df.insert(5, "gap_estimated_se", df["elbo_se"])
        return df

    def datapoint_frame(self):
        """One row per datapoint: exact log p(x), and each guide's ELBO, its s.e. and exact gap.

        Columns ``log_px`` and, per guide, ``elbo_<key>``, ``elbo_se_<key>`` and
        ``gap_exact_<key>`` with ``<key>`` the guide's label in lower case, words joined by
        ``_`` (``linear_full_cov_svi``); a study without per-datapoint values raises
        ``ValueError``.
        """
        if self.log_px_n is None or any(r.elbo_n is None for r in self.rows):
            raise ValueError("this study holds no per-datapoint values (run_ppca_study keeps "
                             "them)")
        cols: dict[str, Any] = {"log_px": self.log_px_n}
        for r in self.rows:
            key = "_".join(re.findall(r"[a-z0-9]+", r.guide.lower()))
            cols[f"elbo_{key}"] = r.elbo_n
            cols[f"elbo_se_{key}"] = r.elbo_se_n
            cols[f"gap_exact_{key}"] = r.gap_exact_n
        return frame(cols)

    def to_markdown(self) -> str:
        """The study as a header paragraph and a markdown table."""
        head = (
            f"PPCA study: N = {self.num_data}, D = {self.data_dim}, K = {self.latent_dim}; "
            f"model at the {self.params} parameters; exact mean log p(x) = {self.log_px:.4f} "
            f"nats; best mean-field (diagonal) gap = {self.mean_field_gap:.4f} nats.\n\n"
            f"| guide | ELBO | IWAE_{self.iwae_k} | gap, estimated | gap, exact (KL) "
            f"| train s |\n|---|---|---|---|---|---|\n"
        )
        body = "".join(
            f"| {r.guide} | {r.elbo:.4f} ± {r.elbo_se:.4f} | {r.iwae:.4f} ± {r.iwae_se:.4f} "
            f"| {r.gap_estimated:.4f} ± {r.elbo_se:.4f} | {r.gap_exact:.4f} "
            f"| {r.train_seconds:.1f} |\n"
            for r in self.rows
        )
        return head + body


def _train(model, guide, x, steps: int, lr: float, desc: str, progress: bool | None) -> float:
    opt = ClippedAdam({"lr": lr, "lrd": 0.001 ** (1 / steps)})  # decays to lr / 1000
    elbo_ = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, opt, elbo_)
    t0 = time.perf_counter()
    with bar(progress, total=steps, desc=desc, unit="step") as b:
        for _ in range(steps):
            svi.step(x)
            b.update()
    return time.perf_counter() - t0


def run_ppca_study(
    x: torch.Tensor | None = None,
    *,
    latent_dim: int = 4,
    num_data: int = 500,
    data_dim: int = 20,
    sigma: float = 0.5,
    steps: int = 2500,
    lr: float = 0.05,
    num_samples: int = 1000,
    iwae_k: int = 100,
    seed: int = 0,
    progress: bool | None = None,
) -> PPCAStudy:
    """Run the study on ``x`` ([N, D]) or on synthetic PPCA data; returns a :class:`PPCAStudy`.

    Args:
        x: the user's data ``[N, D]``; the model takes its maximum-likelihood parameters. None:
            ``num_data`` rows drawn from a PPCA with ``data_dim`` columns, ``latent_dim``
            latents and noise ``sigma`` (:func:`ppvae.data.ppca_dataset`), the model at the
            generating parameters.
        latent_dim: K, the latent dimension of the model.
        num_data: synthetic data: N.
        data_dim: synthetic data: D.
        sigma: synthetic data: the noise standard deviation.
        steps: SVI steps per fitted guide (8 particles).
        lr: ClippedAdam's learning rate, decayed to lr / 1000 over the steps.
        num_samples: samples per datapoint for each ELBO.
        iwae_k: k of the IWAE bound (``num_samples // iwae_k`` estimates, at least 2).
        seed: seeds the data, the guides' initialization and the Monte Carlo.
        progress: a bar over each guide's SVI steps (None: only on a terminal).
    """
    from ..data import ppca_dataset
    from ..guides import AmortizedLinearGaussian, MLPEncoder
    from ..models import PPCA

    pyro.set_rng_seed(seed)
    if x is None:
        sim = ppca_dataset(num_data, data_dim, latent_dim, sigma, seed=seed)
        x, (W, b, s), which = sim.x, (sim.W, sim.b, sim.sigma), "generating"
    else:
        x = x.to(torch.float64)
        (W, b, s), which = ppca_mle(x, latent_dim), "maximum likelihood"
    n, d = x.shape
    log_px = ppca_log_marginal(W, b, s, x)  # [N]
    model = PPCA(d, latent_dim, W=W, b=b, sigma=s, fixed=True)
    guides = {
        "exact posterior": (AmortizedLinearGaussian.from_ppca(W, b, s), 0),
        "linear, full cov. (SVI)": (AmortizedLinearGaussian(d, latent_dim, "full"), steps),
        "linear, diagonal (SVI)": (AmortizedLinearGaussian(d, latent_dim, "diag"), steps),
        "MLP encoder, diagonal (SVI)": (
            MLPEncoder(d, latent_dim, (64,)).to(torch.float64), steps),
    }
    rows = []
    for label, (guide, n_steps) in guides.items():
        guide = guide.to(torch.float64)
        secs = _train(model, guide, x, n_steps, lr, label, progress) if n_steps else 0.0
        with torch.no_grad():
            e = elbo(model, guide, x, num_samples)
            iw = iwae(model, guide, x, iwae_k, num_estimates=max(2, num_samples // iwae_k))
            q = guide.distribution(x)
            q_scale = q.scale_tril if hasattr(q, "scale_tril") else q.base_dist.scale
            kl = ppca_kl_to_posterior(W, b, s, x, q.mean, q_scale)
        rows.append(PPCARow(
            label, e.mean, e.mean_stderr, iw.mean, iw.mean_stderr,
            float(log_px.mean()) - e.mean, float(kl.mean()), secs,
            e.per_datapoint.detach(), e.stderr.detach(), kl.detach(),
        ))
    return PPCAStudy(n, d, latent_dim, which, float(log_px.mean()),
                     float(mean_field_gap(W, s)), iwae_k, rows, log_px.detach())


def study_figure(study: PPCAStudy):
    """Estimated against exact inference gaps: per guide (left) and per datapoint (right).

    Left: each guide's mean gap estimated as exact log p(x) minus its Monte Carlo ELBO (± 2
    s.e.) next to the exact mean KL(q || p(z | x)), with the mean-field floor. Right: for
    the fitted guides, each datapoint's estimated gap against its exact KL; the points sit on
    the diagonal within their Monte Carlo error when the estimator is honest. Nats throughout.
    """
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ys = list(range(len(study.rows)))[::-1]
    for y, r in zip(ys, study.rows, strict=True):
        ax.errorbar(r.gap_estimated, y, xerr=2 * r.elbo_se, fmt="o", color="C0", capsize=3,
                    mfc="none", markersize=11, mew=1.5,
                    label="estimated: log p(x) − ELBO (± 2 s.e.)" if y == ys[0] else None)
        ax.plot(r.gap_exact, y, "x", color="C3", markersize=9, mew=2,
                label="exact: KL(q ‖ p(z | x))" if y == ys[0] else None)
    ax.axvline(study.mean_field_gap, color="0.4", ls="--", lw=1,
               label=f"floor of diagonal guides {study.mean_field_gap:.3f}")
    ax.set_yticks(ys, [r.guide for r in study.rows])
    ax.set_ylim(-0.6, len(ys) - 0.4)
    ax.set_xlabel("inference gap, mean over datapoints (nats)")
    ax.set_title("mean gap per guide")
    ax.legend(fontsize=8, loc="best")
    fitted = [r for r in study.rows if r.gap_exact_n is not None and r.train_seconds > 0]
    top = 0.0
    for i, r in enumerate(fitted):
        if study.log_px_n is None or r.elbo_n is None or r.gap_exact_n is None:
            continue
        est = (study.log_px_n - r.elbo_n).cpu().numpy()
        exact = r.gap_exact_n.cpu().numpy()
        bx.scatter(exact, est, s=8, alpha=0.5, color=f"C{i + 1}", label=r.guide)
        top = max(top, float(exact.max()), float(est.max()))
    bx.plot([0, top], [0, top], color="0.3", lw=1, label="estimated = exact")
    bx.set_xlabel("exact gap KL(q ‖ p(z | x_n)) (nats)")
    bx.set_ylabel("estimated gap log p(x_n) − ELBO_n (nats)")
    bx.set_title(f"per datapoint (N = {study.num_data})")
    bx.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"PPCA study: D = {study.data_dim}, K = {study.latent_dim}, model at the "
                 f"{study.params} parameters")
    fig.tight_layout()
    return fig


def _study_json(study: PPCAStudy, settings: dict[str, Any]) -> dict[str, Any]:
    """The study's numbers (no per-datapoint tensors) and the settings, as JSON values."""
    rows = [{k: v for k, v in r._asdict().items() if not k.endswith("_n")}
            for r in study.rows]
    for r in rows:
        r["gap_estimated_se"] = r["elbo_se"]
    return {"settings": settings, "num_data": study.num_data, "data_dim": study.data_dim,
            "latent_dim": study.latent_dim, "params": study.params, "log_px": study.log_px,
            "mean_field_gap": study.mean_field_gap, "iwae_k": study.iwae_k, "rows": rows,
            "units": "nats per datapoint"}


def write_study(study: PPCAStudy, out: str | Path, *, settings: dict[str, Any],
                warnings: list[str] | None = None) -> RunDir:
    """Write the study into run directory ``out`` (module docstring lists the files).

    The directory is created if needed and locked while written; a directory this call created
    is removed again, with whatever it wrote, if writing fails.
    """
    out = Path(out)
    created = missing_folders(out)
    run = RunDir.create(out)
    try:
        with RunLock(run.path, command_line()):
            before = {q.name for q in run.path.iterdir()}
            try:
                _write(study, run, settings, warnings or [])
            except BaseException:
                if created:
                    for q in run.path.iterdir():
                        if q.name not in before and q.is_file():
                            q.unlink(missing_ok=True)
                raise
    except BaseException:
        for folder in created:  # deepest first; only when empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return run


def _write(study: PPCAStudy, run: RunDir, settings: dict[str, Any], found: list[str]) -> None:
    data = _study_json(study, settings)
    write_text(run.file("ppca.csv"), study.to_dataframe().to_csv(float_format="%.6g"))
    write_text(run.file("ppca_datapoints.csv"),
               study.datapoint_frame().to_csv(float_format="%.6g"))
    write_text(run.file("ppca.json"), json.dumps(json_safe(data), indent=1, allow_nan=False))
    run.save_figure(study_figure(study), "ppca")
    src = settings.get("data", "synthetic")
    md = (study.to_markdown() + f"\nData: {'synthetic PPCA draws' if src == 'synthetic' else src}"
          f"; {settings['steps']} SVI steps per fitted guide (lr {settings['lr']}), "
          f"{settings['num_samples']} samples per ELBO. Nats per datapoint, mean ± Monte "
          "Carlo s.e. An honest estimator's estimated gap matches the exact one within its "
          "s.e. Files: `ppca.csv` (this table), `ppca_datapoints.csv` (per datapoint), "
          "`ppca.json`, `ppca.png` (estimated against exact gaps).")
    run.set_section("ppca", "PPCA study", md, data,
                    provenance=provenance(run, seed=settings.get("seed")), warnings=found,
                    files=["ppca.png", "ppca.csv", "ppca_datapoints.csv", "ppca.json"])
