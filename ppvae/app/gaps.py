"""``ppvae gaps``: the inference-gap report of a trained run, optionally against MCMC.

:func:`gaps_run` takes a trained run, trains any further amortized guide families on the
frozen model (:func:`train_extra_guide`, e.g. an IAF flow encoder next to the run's diagonal
one; saved as ``guide-<name>.pt`` and reused), and decomposes each guide's inference gap on test
data into approximation and amortization gaps (Cremer, Li and Duvenaud 2018; :func:`ppvae.gaps`,
local q* by :func:`ppvae.fit_local` in the family the zoo table names for the guide, log p(x) by
IWAE from the best q* or by AIS). Optionally it runs batched HMC on a few datapoints and compares
amortized q, local q* and MCMC (:func:`ppvae.compare_posteriors`), saving the draws as ArviZ
netCDF. It writes ``gaps.png``, ``gaps.json`` and the report's gaps and posterior sections.
"""

from __future__ import annotations

import argparse
import time

from .trained import Trained, data_shape, label_kw, open_run
from .zoo import GUIDES, ModelSpec, build_guide

__all__ = ["add_arguments", "gap_guides", "gaps_run", "main", "train_extra_guide"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae gaps``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--guides", nargs="*", default=["flow"],
                   help="guide families trained on the frozen model next to the run's own "
                   "guide (default: flow)")
    p.add_argument("--guide-epochs", type=int, default=20)
    p.add_argument("--num-data", type=int, default=300, help="first N test rows")
    p.add_argument("--local-steps", type=int, default=300, help="per-datapoint VI steps")
    p.add_argument("--samples", type=int, default=500, help="samples per ELBO")
    p.add_argument("--log-px", choices=("iwae", "ais"), default="iwae")
    p.add_argument("--k", type=int, default=1000, help="IWAE samples for log p(x)")
    p.add_argument("--ais-steps", type=int, default=200)
    p.add_argument("--mcmc", type=int, default=0,
                   help="compare with batched HMC on this many test rows (0: no MCMC)")
    p.add_argument("--mcmc-warmup", type=int, default=300)
    p.add_argument("--mcmc-samples", type=int, default=500)
    p.add_argument("--quiet", action="store_true")


def main(args) -> int:
    """Run ``ppvae gaps``: print the gap table; returns the exit code."""
    tr = open_run(args.run)
    report = gaps_run(tr, args.guides, num_data=args.num_data, local_steps=args.local_steps,
                      num_samples=args.samples, log_px=args.log_px, k=args.k,
                      ais_steps=args.ais_steps, guide_epochs=args.guide_epochs,
                      mcmc_points=args.mcmc, mcmc_warmup=args.mcmc_warmup,
                      mcmc_samples=args.mcmc_samples, quiet=args.quiet)
    print(report.to_markdown())
    print(f"report: {tr.run.file('report.md')}")
    return 0


def gap_guides() -> tuple[str, ...]:
    """The guide names the gap report takes: those with a local q* family in the zoo."""
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
    t = cfg["train"]
    fit(frozen, guide, data.train, valid=data.valid, epochs=epochs,
        batch_size=int(t.get("batch_size", 64)), lr=float(t.get("lr", 3e-3)),
        seed=cfg.get("seed", 0), device=data.train.device, restore_best=False,
        checkpoint=path, resume=path, quiet=quiet, batch_kw=label_kw(cfg, data, "train"),
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


def gaps_run(tr: Trained, guide_names=(), *, num_data: int = 300, local_steps: int = 300,
             num_samples: int = 500, log_px: str = "iwae", k: int = 1000,
             ais_steps: int = 200, guide_epochs: int = 20, mcmc_points: int = 0,
             mcmc_warmup: int = 300, mcmc_samples: int = 500, quiet: bool = True):
    """The gap report of the run's guide and ``guide_names`` on test data; returns it."""
    import pyro

    from ..analysis.gaps import gaps

    cfg = tr.config
    pyro.set_rng_seed(cfg.get("seed", 0))  # a rerun reproduces the report (on the CPU)
    names = [cfg["guide"], *[g for g in guide_names if g != cfg["guide"]]]
    for n in names:
        if n not in gap_guides():
            raise ValueError(f"the gap report needs an amortized guide of one latent site "
                             f"(one of {', '.join(gap_guides())}); got '{n}'")
    guides = {cfg["guide"]: _plain(tr.guide)}
    for n in names[1:]:
        if not quiet:
            print(f"training the {n} guide on the frozen model ({guide_epochs} epochs)",
                  flush=True)
        guides[n] = _plain(train_extra_guide(tr, n, epochs=guide_epochs, quiet=quiet))
    x = tr.data.test[:num_data]
    kw = label_kw(cfg, tr.data, "test", slice(0, num_data))
    options = {"k": k} if log_px == "iwae" else {"num_steps": ais_steps, "init": "guide"}
    report = gaps(tr.model, guides, x, log_px=log_px, local_steps=local_steps,
                  families={n: GUIDES[n].local_family for n in names}, num_samples=num_samples,
                  log_px_options=options, model_kwargs=kw)
    run = tr.run
    report.plot(run.file("gaps.png"))  # a bare Figure: nothing to close
    run.file("gaps.json").write_text(report.to_json())
    run.set_section("gaps", "Inference gaps", report.to_markdown().rstrip() + (
        "\n\nFigure: `gaps.png`; per-datapoint values: `gaps.json` "
        "(ppvae.GapReport.from_json)."), _summary_data(report))
    if mcmc_points > 0:
        _mcmc_section(tr, guides, x[:mcmc_points], {k_: v[:mcmc_points] for k_, v in kw.items()},
                      local_steps=local_steps, warmup=mcmc_warmup, samples=mcmc_samples)
    return report


def _mcmc_section(tr: Trained, guides: dict, x, kw, *, local_steps, warmup, samples) -> None:
    """Batched HMC on ``x`` against amortized q and local q*.

    Writes the report's posterior section, ``posterior.png`` and the draws as ArviZ netCDF.
    """
    from ..analysis.compare import compare_posteriors
    from ..infer.diagnostics import diagnostics, to_inference_data
    from ..infer.hmc import hmc
    from ..infer.local.vi import fit_local

    t0 = time.perf_counter()
    res = hmc(tr.model, x, num_chains=4, num_warmup=warmup, num_samples=samples,
              num_leapfrog=8, model_kwargs=kw)
    idata = res.to_inference_data()
    diag = diagnostics(idata)
    seconds = time.perf_counter() - t0
    local = {f"{n} q*": fit_local(tr.model, x, GUIDES[n].local_family, g,
                                  num_steps=local_steps, model_kwargs=kw)
             for n, g in guides.items()}
    amortized = {f"{n} q": g for n, g in guides.items()}
    cmp = compare_posteriors(tr.model, x, res, {**amortized, **local}, num_samples=1000,
                             mcmc_name="HMC", model_kwargs=kw)
    run = tr.run
    shown = min(3, len(cmp.datapoints))  # a readable figure: the first three datapoints
    cmp._replace(datapoints=cmp.datapoints[:shown], summaries=tuple(
        s._replace(samples=s.samples[:, :shown]) for s in cmp.summaries)).plot(
        str(run.file("posterior.png")))
    import matplotlib.pyplot as plt

    plt.close("all")
    idata.to_netcdf(run.file("posterior_mcmc.nc"))
    files = ["posterior_mcmc.nc"]
    for s in cmp.summaries[1:]:
        fname = "posterior_" + s.method.replace(" ", "_").replace("*", "star") + ".nc"
        to_inference_data({"z": s.samples.unsqueeze(0)}, datapoints=cmp.datapoints).to_netcdf(
            run.file(fname))
        files.append(fname)
    rhat, ess = float(diag.rhat.max()), float(diag.ess_bulk.min())
    mean_kl = {s.method: float(s.kl_to_mcmc.mean()) for s in cmp.summaries[1:]}
    md = (f"Batched HMC (4 chains, {warmup} warm-up + {samples} draws, {seconds:.1f} s) on test "
          f"points {list(cmp.datapoints)}: max R-hat {rhat:.3f}, min bulk ESS {ess:.0f}.\n\n"
          "| method | mean KL(q ‖ Gaussian fit of HMC) over these points |\n|---|---|\n"
          + "".join(f"| {m} | {v:.3f} |\n" for m, v in mean_kl.items())
          + "\nPer datapoint:\n\n" + cmp.to_markdown()
          + "\n\nFigure: `posterior.png` (first 3 datapoints); draws: "
          + ", ".join(f"`{f}`" for f in files) + ".")
    run.set_section("posterior", "Posterior comparison with MCMC", md, {
        "datapoints": list(cmp.datapoints), "max_rhat": rhat, "min_ess_bulk": ess,
        "mean_kl_to_mcmc": mean_kl, "files": files, "seconds": seconds})
