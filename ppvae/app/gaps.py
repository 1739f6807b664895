"""``ppvae gaps``: the inference-gap report of a trained run, optionally against MCMC.

:func:`gaps_run` takes a trained run, trains any further amortized guide families on the
frozen model (:func:`train_extra_guide`, e.g. an IAF flow encoder next to the run's diagonal
one; saved as ``guide-<name>.pt`` and reused), and decomposes each guide's inference gap on test
data into approximation and amortization gaps (Cremer, Li and Duvenaud 2018; :func:`ppvae.gaps`,
local q* by :func:`ppvae.fit_local` in the family the zoo table names for the guide, log p(x) by
IWAE from the best q* or by AIS). Optionally it runs batched HMC on a few datapoints and compares
amortized q, local q* and MCMC (:func:`ppvae.compare_posteriors`), saving the draws as ArviZ
netCDF. It writes the report's gaps and posterior sections with their files:

* gaps: ``gaps.png`` (mean gaps per guide, :func:`ppvae.analysis.figures.gap_bars`),
  ``gap_histogram.png`` (per-datapoint gaps), ``elbo_scatter.png`` (ELBO[q] against ELBO[q*]
  per datapoint), ``local_vi.png`` (convergence of the per-datapoint q* fits) and
  ``gaps.json``;
* posterior (``--mcmc``): ``posterior_pairs.png`` (corner plots of q, q* and HMC at two of the
  points), ``mcmc_trace.png`` and ``mcmc_rank.png`` (ArviZ trace and rank plots where R-hat is
  worst) and the draws as netCDF.

The decomposition runs as a resumable study (:func:`ppvae.analysis.study.gap_study`) in
``RUN/gap-study/<settings key>/``: every stage (ELBO[q], q*, log p(x) by IWAE and/or AIS, BDMC)
writes its per-datapoint results block by block (``--block-size`` rows), so an interrupted
``ppvae gaps`` resumes at the block where it stopped when the same command is run again, and a
finished study is read, not recomputed. ``--log-px iwae ais`` takes the per-datapoint larger of
the two lower bounds (both kept in the study: :func:`ppvae.analysis.study.read_gap_study`
on its directory); ``--bdmc M``
certifies the AIS settings on M datapoints simulated from the model.

The test rows are a seeded random subset (``--num-data all``: every test row;
``--first-rows``: the first N, a biased sample of a split stored in class order), and the MCMC
points and the two of the pair plot are chosen from them the same way; the report records the
indices (datapoint ``i`` of ``gaps.json`` is test row ``rows.gaps.indices[i]`` of the section's
provenance in report.json). A run without ``--mcmc`` marks an earlier MCMC comparison stale:
it compared guides this run may not have.
"""

from __future__ import annotations

import argparse
import time

from .files import replacing, write_text
from .inputs import TRAIN_DEFAULTS, nonnegative_int, positive_int
from .runs import checkpoint_id, provenance, record_warnings
from .trained import Rows, Trained, data_shape, label_kw, locked_run
from .zoo import GUIDES, ModelSpec, build_guide

__all__ = ["LOCAL_STEPS", "add_arguments", "count_or_all", "gap_guides", "gaps_run", "main",
           "train_extra_guide"]

LOCAL_STEPS = 1000  # --local-steps: ppvae.gaps' local_steps default (a test checks they agree)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae gaps``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--guides", nargs="*", default=["flow"],
                   help="guide families trained on the frozen model next to the run's own "
                   "guide (default: flow)")
    p.add_argument("--guide-epochs", type=positive_int, default=20)
    p.add_argument("--num-data", type=count_or_all, default=300,
                   help="N test rows, a seeded random subset (default 300), or 'all'")
    p.add_argument("--first-rows", action="store_true",
                   help="the first N test rows instead of a random subset")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seed of the row subset and the Monte Carlo (default: the run's seed)")
    p.add_argument("--local-steps", type=positive_int, default=LOCAL_STEPS,
                   help=f"per-datapoint VI steps (default {LOCAL_STEPS}, as ppvae.gaps)")
    p.add_argument("--samples", type=positive_int, default=1000,
                   help="samples per datapoint for each ELBO (as ppvae.gaps' num_samples)")
    p.add_argument("--log-px", choices=("iwae", "ais"), nargs="+", default=["iwae"],
                   help="log p(x) estimator(s); with both, per datapoint the larger of the "
                   "two lower bounds")
    p.add_argument("--k", type=positive_int, default=1000, help="IWAE samples for log p(x)")
    p.add_argument("--ais-steps", type=positive_int, default=2000,
                   help="AIS temperatures with --log-px ais (default 2000, as ppvae.ais)")
    p.add_argument("--ais-chains", type=positive_int, default=256,
                   help="AIS chains per datapoint (default 256, as ppvae.ais); AIS starts "
                   "from the run's own guide")
    p.add_argument("--bdmc", type=nonnegative_int, default=0,
                   help="certify the AIS settings by BDMC on this many datapoints simulated "
                   "from the model (needs --log-px ais; default 0: none)")
    p.add_argument("--block-size", type=positive_int, default=100,
                   help="rows per block of the study (default 100); each finished block is "
                   "saved in RUN/gap-study/, so rerunning the same command resumes an "
                   "interrupted study")
    p.add_argument("--mcmc", type=nonnegative_int, default=0,
                   help="compare with batched HMC on this many of the --num-data rows (0: no "
                   "MCMC; an earlier comparison in the report is then marked stale)")
    p.add_argument("--mcmc-warmup", type=positive_int, default=500,
                   help="HMC warm-up iterations (as ppvae.hmc)")
    p.add_argument("--mcmc-samples", type=positive_int, default=500,
                   help="HMC draws per chain (as ppvae.hmc)")


def count_or_all(text: str) -> int | None:
    """The argparse type of ``--num-data``: a positive integer, or "all" (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value}")
    return value


def main(args) -> int:
    """Run ``ppvae gaps``: print the gap table; returns the exit code."""
    with locked_run(args.run) as tr:
        report = gaps_run(tr, args.guides, num_data=args.num_data,
                          local_steps=args.local_steps, num_samples=args.samples,
                          log_px=tuple(args.log_px), k=args.k, ais_steps=args.ais_steps,
                          ais_chains=args.ais_chains, bdmc_data=args.bdmc,
                          block_size=args.block_size,
                          guide_epochs=args.guide_epochs, mcmc_points=args.mcmc,
                          mcmc_warmup=args.mcmc_warmup, mcmc_samples=args.mcmc_samples,
                          quiet=getattr(args, "quiet", False), seed=args.seed,
                          first_rows=args.first_rows)
    print(report.to_markdown())
    print(f"report: {tr.run.file('report.md')}")
    return 0


def gap_guides() -> tuple[str, ...]:
    """The built-in guide names the gap report takes: those with a local q* family.

    A user's guide (``module:function``) takes part with its ``local_family`` (default diag).
    """
    return tuple(n for n, e in GUIDES.items() if e.local_family is not None)


def train_extra_guide(tr: Trained, name: str, *, epochs: int, quiet: bool = True):
    """Train guide ``name`` on the frozen model of ``tr`` (resumable, reused when done)."""
    import pyro
    from pyro import poutine

    from ..train.fit import fit

    cfg, data = tr.config, tr.data
    pyro.set_rng_seed(cfg.get("seed", 0))  # the new guide's initialization
    guide = build_guide(name, tr.model, cfg["model"], ModelSpec.from_sizes(cfg.get("sizes", {})),
                        data_shape(data), label=f"guide_{name}")
    path = tr.run.file(f"guide-{name}.pt")
    frozen = poutine.block(tr.model, hide_types=["param"])  # only the new guide learns
    t = {**TRAIN_DEFAULTS, **cfg["train"]}
    fit(frozen, guide, data.train, valid=data.valid, epochs=epochs,
        batch_size=int(t["batch_size"]), lr=float(t["lr"]),
        seed=cfg.get("seed", 0), device=data.train.device, restore_best=False,
        checkpoint=path, resume=path, progress=False if quiet else None,
        batch_kw=label_kw(cfg, data, "train"),
        valid_batch_kw=label_kw(cfg, data, "valid"))
    return guide


def _plain(guide):
    """A guide whose ``.distribution`` takes labels, hidden behind a plain function.

    Local VI then starts from moment-matched samples of its trace (which passes the labels).
    """
    import inspect

    dist_fn = getattr(guide, "distribution", None)
    if dist_fn is None or len(inspect.signature(dist_fn).parameters) <= 1:
        return guide

    def plain_guide(x, **kwargs):
        return guide(x, **kwargs)

    return plain_guide


def _summary_data(report) -> dict:
    return {r.guide: {"family": r.family, **{q: r.summary(q)._asdict() for q in (
        "log_px", "elbo_local", "elbo_amortized", "approximation", "amortization",
        "inference")}, "estimators": r.estimators._asdict()} for r in report.rows}


def gaps_run(tr: Trained, guide_names=(), *, num_data: int | None = 300,
             local_steps: int = LOCAL_STEPS,
             num_samples: int = 1000, log_px: str | tuple[str, ...] = "iwae", k: int = 1000,
             ais_steps: int = 2000, ais_chains: int = 256, bdmc_data: int = 0,
             block_size: int = 100, guide_epochs: int = 20, mcmc_points: int = 0,
             mcmc_warmup: int = 500, mcmc_samples: int = 500, quiet: bool = True,
             seed: int | None = None, first_rows: bool = False):
    """The gap report of the run's guide and ``guide_names`` on test data; returns it.

    The decomposition is a resumable study (:func:`ppvae.analysis.study.gap_study`) in
    ``RUN/gap-study/<key>/``, the key a hash of these settings: rerunning the same call
    resumes it (a study whose model or data changed since is started afresh). Writes the
    report's gaps section (``gaps.png``, ``gap_histogram.png``, ``elbo_scatter.png``,
    ``local_vi.png``, ``gaps.json``), and with ``mcmc_points`` the posterior section
    (``posterior_pairs.png``, ``mcmc_trace.png``, ``mcmc_rank.png``, netCDF draws); each with
    its provenance and the diagnostic warnings its computation raised. Without ``mcmc_points``
    an earlier posterior section is marked stale (its files moved to ``stale/``).

    Args:
        tr: the trained run (:func:`ppvae.app.trained.open_run`).
        guide_names: further guide families, trained on the frozen model.
        num_data: test rows (None: all): a seeded random subset (:func:`ppvae.app.trained.
            select_rows`), or the first ones with ``first_rows``; the report records them.
        local_steps: per-datapoint VI steps for q*.
        num_samples: samples per ELBO.
        log_px: "iwae", "ais" or both (per datapoint the larger of the two lower bounds).
        k: IWAE samples for log p(x).
        ais_steps: AIS temperatures.
        ais_chains: AIS chains per datapoint (AIS starts from the run's own guide).
        bdmc_data: datapoints simulated from the model for the BDMC gap of the AIS settings.
        block_size: rows per block of the study (the unit of resuming).
        guide_epochs: epochs of each further guide (resumed, reused when done).
        mcmc_points: test rows compared with batched HMC (0: none), chosen from the
            ``num_data`` rows the same way (seeded random or first).
        mcmc_warmup: HMC warm-up iterations.
        mcmc_samples: HMC draws per chain.
        quiet: no progress output.
        seed: seeds the subsets and the Monte Carlo (None: the run's seed).
        first_rows: take the first rows instead of random subsets.
    """
    import pyro

    cfg = tr.config
    seed = cfg.get("seed", 0) if seed is None else seed
    pyro.set_rng_seed(seed)  # a rerun reproduces the report (on the CPU)
    names = [cfg["guide"], *[g for g in guide_names if g != cfg["guide"]]]
    for n in names:
        if n not in GUIDES or GUIDES[n].local_family is None:  # a user's guide: its own
            raise ValueError(f"the gap report needs an amortized guide of one latent site "
                             f"(one of {', '.join(gap_guides())}, --guides); got '{n}'")
    rows = Rows.select(tr.data, "test", num_data, seed, first_rows)
    run = tr.run
    # an earlier MCMC comparison compared the guides of an earlier gaps run: superseded
    run.mark_stale(["posterior"], "superseded by a later `ppvae gaps` run"
                   + ("" if mcmc_points > 0 else " without --mcmc"))
    options = dict(families={n: GUIDES[n].local_family for n in names},
                   log_px=(log_px,) if isinstance(log_px, str) else tuple(log_px),
                   block_size=block_size, seed=seed, num_samples=num_samples,
                   local_steps=local_steps, iwae_options={"k": k},
                   ais_options={"num_steps": ais_steps, "num_chains": ais_chains},
                   ais_init=names[0], bdmc_data=bdmc_data)
    with record_warnings() as found:
        guides = _guides(tr, names, guide_epochs, quiet)
        x, kw = rows.take(tr.data), rows.kw(cfg, tr.data)
        study, where = _study(tr, guides, x, kw, rows, options, quiet)
        report = study.report
    extra = _gaps_section(run, study, rows, names, seed, where, found)
    if mcmc_points > 0:
        pos, mcmc_rows = rows.subset(mcmc_points)
        pos = pos.to(x.device)
        _mcmc_section(tr, guides, x[pos], {k_: v[pos.to(v.device)] for k_, v in kw.items()},
                      mcmc_rows, local_steps=local_steps, warmup=mcmc_warmup,
                      samples=mcmc_samples, seed=seed, extra=extra)
    return report


def _gaps_section(run, study, rows: Rows, names: list[str], seed: int, where: str,
                  found: list[str]) -> dict:
    """Write the report's gaps section (figures, gaps.json, provenance).

    Returns the extra guides' checkpoint hashes.
    """
    report = study.report
    files = _gap_figures(run, report, study.fits, rows)
    write_text(run.file("gaps.json"), report.to_json())
    extra = {n: (checkpoint_id(run.file(f"guide-{n}.pt")) or {}).get("sha256")
             for n in names[1:]}
    prov = provenance(run, seed=seed, rows={"gaps": rows.record()}, extra_guides=extra,
                      study=where)
    run.set_section("gaps", "Inference gaps", report.to_markdown().rstrip()
                    + f"\n\nOver {rows.describe()}. " + _GAPS_FILES, _summary_data(report),
                    provenance=prov, warnings=found, files=[*files, "gaps.json"])
    return extra


def _study(tr: Trained, guides: dict, x, kw: dict, rows: Rows, options: dict, quiet: bool):
    """Run or resume the gap study of ``options`` in ``RUN/gap-study/<key>``.

    The key hashes the options and the rows, so the same command resumes its own study. A
    study there whose model, guides or data changed since (a retrained run) is removed and
    started afresh. Returns the :class:`ppvae.analysis.study.GapStudy` and its directory
    (relative to the run).
    """
    import hashlib
    import json
    import shutil
    import sys

    from ..analysis.study import StudySettingsError, gap_study, read_gap_study

    labels = [int(i) for i in rows.indices]
    key = hashlib.sha256(json.dumps({"options": options, "rows": labels, "guides": list(guides)},
                                    sort_keys=True).encode()).hexdigest()[:12]
    where = f"gap-study/{key}"
    directory = tr.run.file(where)
    call = dict(options, rows=labels, batch_kw=kw, progress=False if quiet else None)
    try:
        gap_study(tr.model, guides, x, directory, **call)
    except StudySettingsError as err:
        print(f"starting the gap study in {directory} afresh: {err}", file=sys.stderr)
        shutil.rmtree(directory)
        gap_study(tr.model, guides, x, directory, **call)
    return read_gap_study(directory), where


_GAPS_FILES = ("Figures: `gaps.png` (mean gaps per guide, stacked; error bars: s.e. across "
               "datapoints), `gap_histogram.png` (each gap per datapoint), "
               "`elbo_scatter.png` (ELBO[q] against ELBO[q*] per datapoint, with y = x), "
               "`local_vi.png` (convergence of the per-datapoint q* fits); per-datapoint "
               "values: `gaps.json` (ppvae.GapReport.from_json; its datapoint i is row i of "
               "the recorded indices).")


def _guides(tr: Trained, names: list[str], epochs: int, quiet: bool) -> dict:
    """The run's guide and the further guides ``names[1:]`` (trained on the frozen model)."""
    guides = {names[0]: _plain(tr.guide)}
    for n in names[1:]:
        if not quiet:
            print(f"training the {n} guide on the frozen model ({epochs} epochs)", flush=True)
        guides[n] = _plain(train_extra_guide(tr, n, epochs=epochs, quiet=quiet))
    return guides


def _gap_figures(run, report, fits: dict, rows: Rows) -> list[str]:
    # fits: guide name -> its q* LocalFit
    """gaps.png, gap_histogram.png, elbo_scatter.png and local_vi.png; returns their names."""
    from ..analysis.figures import elbo_scatter, gap_bars, gap_histogram, local_vi_curves

    what = "test rows"
    run.save_figure(gap_bars(report, data=what), "gaps")
    run.save_figure(gap_histogram(report, data=what), "gap_histogram")
    run.save_figure(elbo_scatter(report, data=what), "elbo_scatter")
    run.save_figure(local_vi_curves({f"{n} q*": f for n, f in fits.items()}, data=what),
                    "local_vi")
    return ["gaps.png", "gap_histogram.png", "elbo_scatter.png", "local_vi.png"]


def _mcmc_section(tr: Trained, guides: dict, x, kw, rows: Rows, *, local_steps, warmup, samples,
                  seed, extra) -> None:
    """Batched HMC on ``x`` (test rows ``rows``) against amortized q and local q*.

    Writes the report's posterior section, its figures (:func:`_mcmc_figures`) and the draws as
    ArviZ netCDF.
    """
    from ..analysis.compare import compare_posteriors
    from ..infer.diagnostics import diagnostics, to_inference_data
    from ..infer.hmc import hmc
    from ..infer.local.vi import fit_local

    test_rows = tuple(int(i) for i in rows.indices)
    with record_warnings() as found:
        t0 = time.perf_counter()
        res = hmc(tr.model, x, num_chains=4, num_warmup=warmup, num_samples=samples,
                  model_kwargs=kw)
        idata = res.to_inference_data().assign_coords(datapoint=list(test_rows))
        diag = res.diagnostics if res.diagnostics is not None else diagnostics(idata)
        seconds = time.perf_counter() - t0
        local = {f"{n} q*": fit_local(tr.model, x, GUIDES[n].local_family, g,
                                      num_steps=local_steps, model_kwargs=kw)
                 for n, g in guides.items()}
        amortized = {f"{n} q": g for n, g in guides.items()}
        cmp = compare_posteriors(tr.model, x, res, {**amortized, **local}, num_samples=1000,
                                 mcmc_name="HMC", model_kwargs=kw)
        # label the datapoints by their test rows (positions in x index the summaries)
        cmp = cmp._replace(datapoints=test_rows)
    run = tr.run
    shown_rows, figures, figure_md = _mcmc_figures(run, cmp, idata, diag, rows)
    with replacing(run.file("posterior_mcmc.nc")) as tmp:
        idata.to_netcdf(tmp)
    files = ["posterior_mcmc.nc"]
    for s in cmp.summaries[1:]:
        fname = "posterior_" + s.method.replace(" ", "_").replace("*", "star") + ".nc"
        draws = s.samples[: s.samples.shape[0] // 4 * 4]  # iid draws as 4 chains: R-hat ~ 1
        with replacing(run.file(fname)) as tmp:
            to_inference_data({"z": draws.reshape(4, -1, *draws.shape[1:])},
                              datapoints=cmp.datapoints).to_netcdf(tmp)
        files.append(fname)
    rhat, ess = float(diag.rhat.max()), float(diag.ess_bulk.min())
    mean_kl = {s.method: float(s.kl_to_mcmc.mean()) for s in cmp.summaries[1:]}
    md = (f"Batched HMC (4 chains, {warmup} warm-up + {samples} draws, {seconds:.1f} s) on test "
          f"rows {list(test_rows)} ({rows.describe()}): max R-hat {rhat:.3f}, min bulk ESS "
          f"{ess:.0f}. Warnings name these points by their position in this list "
          "(datapoint 0 is its first).\n\n"
          "| method | mean KL(q ‖ Gaussian fit of HMC) over these points |\n|---|---|\n"
          + "".join(f"| {m} | {v:.3f} |\n" for m, v in mean_kl.items())
          + "\nPer datapoint (by test row):\n\n" + cmp.to_markdown()
          + "\n\nFigures: " + figure_md + "; draws: " + ", ".join(f"`{f}`" for f in files)
          + " (datapoint coordinate: the test row).")
    prov = provenance(run, seed=seed, rows={"mcmc": rows.record(), "figure": shown_rows.record()},
                      extra_guides=extra)
    run.set_section("posterior", "Posterior comparison with MCMC", md, {
        "datapoints": list(test_rows), "max_rhat": rhat, "min_ess_bulk": ess,
        "mean_kl_to_mcmc": mean_kl, "files": files, "seconds": seconds},
        provenance=prov, warnings=found, files=[*figures, *files])


def _worst(diag, test_rows: tuple[int, ...], points: int, coords: int
           ) -> tuple[list[int], list[int]]:
    """The ``points`` test rows with the largest R-hat, and their ``coords`` worst coordinates."""
    import numpy as np

    rhat = np.nan_to_num(np.asarray(diag.rhat, dtype=float), nan=np.inf)  # [M, D]
    at = sorted(np.argsort(-rhat.max(1), kind="stable")[:points].tolist())
    dims = sorted(np.argsort(-rhat[at].max(0), kind="stable")[:coords].tolist())
    return [test_rows[i] for i in at], [int(d) for d in dims]


def _mcmc_figures(run, cmp, idata, diag, rows: Rows) -> tuple[Rows, list[str], str]:
    """posterior_pairs.png (two points chosen like the rows), mcmc_trace.png, mcmc_rank.png.

    The trace and rank plots show the points and coordinates with the largest R-hat. Returns the
    rows of the pair plot, the file names and their description for the report.
    """
    from ..analysis.posterior_figures import mcmc_ranks, mcmc_traces, posterior_pairs

    shown, shown_rows = rows.subset(2)
    pair_rows = [cmp.datapoints[int(j)] for j in shown]
    run.save_figure(posterior_pairs(cmp, datapoints=pair_rows, datapoint_label="test row"),
                    "posterior_pairs")
    worst_rows, worst_dims = _worst(diag, cmp.datapoints, 2, 3)
    why = "those with the largest R-hat"
    run.save_figure(mcmc_traces(idata, datapoints=worst_rows, dims=worst_dims[:2],
                                datapoint_label="test row", sampler="HMC", note=why),
                    "mcmc_trace")
    run.save_figure(mcmc_ranks(idata, datapoints=worst_rows, dims=worst_dims,
                               datapoint_label="test row", sampler="HMC", note=why),
                    "mcmc_rank")
    text = (f"`posterior_pairs.png` (corner plots of HMC, each q and q* at test rows "
            f"{pair_rows}), `mcmc_trace.png` and `mcmc_rank.png` (ArviZ trace and rank plots at "
            f"test rows {worst_rows}, {why})")
    return shown_rows, ["posterior_pairs.png", "mcmc_trace.png", "mcmc_rank.png"], text
