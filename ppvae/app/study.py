"""The gap study of a trained run and the main job (``ppvae gaps``, ``ppvae demo``).

:func:`gaps_run` takes a trained run, trains any further amortized guide families on the
frozen model (e.g. an IAF flow encoder next to the run's diagonal one; saved as
``guide-<name>.pt`` and reused), and decomposes each guide's inference gap on test data into
approximation and amortization gaps (Cremer, Li and Duvenaud 2018; :func:`ppvae.gaps`, local
q* by :func:`ppvae.fit_local`, log p(x) by IWAE from the best q* or by AIS). Optionally it runs
batched HMC on a few datapoints and compares amortized q, local q* and MCMC
(:func:`ppvae.compare_posteriors`), saving the draws as ArviZ netCDF.

:func:`demo` is the main job: a VAE with a diagonal encoder trained on the bundled digits,
then :func:`gaps_run` with the diagonal and flow families, the MCMC comparison, evaluation
and samples, all into one run directory. Its sizes keep it to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from .runs import RunDir
from .workflow import Trained, _spec, label_kw

__all__ = ["FAMILY_OF", "DemoResult", "demo", "gaps_run", "train_extra_guide"]

FAMILY_OF = {"diag": "diag", "full": "full", "flow": "flow", "conv": "diag",
             "conditional": "diag"}  # the local q* family matching each guide name


class DemoResult(NamedTuple):
    run: Path
    table: str  # the gap table (markdown)
    seconds: float


def train_extra_guide(tr: Trained, name: str, *, epochs: int, quiet: bool = True):
    """Train guide ``name`` on the frozen model of ``tr`` (resumable, reused when done)."""
    import pyro
    from pyro import poutine

    from ..train.fit import fit
    from .zoo import build_guide

    cfg, data = tr.config, tr.data
    pyro.set_rng_seed(cfg.get("seed", 0))  # the new guide's initialization
    nc = None if data.train_labels is None else int(data.train_labels.max()) + 1
    guide = build_guide(name, tr.model, cfg["model"], _spec(cfg), data.data_dim,
                        image_shape=data.image_shape, num_classes=nc, label=f"guide_{name}")
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
    """A guide whose ``.distribution`` takes labels is hidden behind a plain function, so that
    local VI starts from moment-matched samples of its trace (which passes the labels)."""
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
        if n not in FAMILY_OF:
            raise ValueError(f"the gap report needs an amortized guide of one latent site "
                             f"(one of {', '.join(FAMILY_OF)}); got '{n}'")
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
                  families={n: FAMILY_OF[n] for n in names}, num_samples=num_samples,
                  log_px_options=options, **kw)
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
    from ..analysis.compare import compare_posteriors
    from ..infer.hmc import diagnostics, hmc, to_inference_data
    from ..infer.local.vi import fit_local

    t0 = time.perf_counter()
    res = hmc(tr.model, x, num_chains=4, num_warmup=warmup, num_samples=samples,
              num_leapfrog=8, **kw)
    idata = res.to_inference_data()
    diag = diagnostics(idata)
    seconds = time.perf_counter() - t0
    local = {f"{n} q*": fit_local(tr.model, x, FAMILY_OF[n], g, num_steps=local_steps, **kw)
             for n, g in guides.items()}
    cmp = compare_posteriors(tr.model, x, res, {**{f"{n} q": g for n, g in guides.items()},
                                                **local}, num_samples=1000, mcmc_name="HMC", **kw)
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


def demo(out, *, seed: int = 0, quiet: bool = False, epochs: int = 100, flow_epochs: int = 50,
         num_data: int = 300, local_steps: int = 1000, k: int = 5000, mcmc_points: int = 8,
         latent_dim: int = 8, hidden: int = 256, ais_steps: int = 100,
         mcmc_warmup: int = 500, mcmc_samples: int = 1000, device=None) -> DemoResult:
    """The main job on the bundled digits; returns the run directory and the gap table."""
    from .workflow import evaluate_run, open_run, sample_run, train_run

    t0 = time.perf_counter()
    run = RunDir.create(out)
    cfg = {"model": "vae", "guide": "diag", "data": "digits", "binarize": "static",
           "seed": seed, "device": device or "auto",
           "sizes": {"latent_dim": latent_dim, "hidden": [hidden], "num_flows": 2},
           "train": {"objective": "elbo", "epochs": epochs, "batch_size": 64, "lr": 3e-3}}
    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    say(f"[1/4] training a VAE (diagonal encoder) on digits, {epochs} epochs -> {run.path}")
    train_run(cfg, run, quiet=True)
    tr = open_run(run.path)
    say(f"[2/4] flow encoder for the frozen decoder ({flow_epochs} epochs); gap decomposition "
        f"on {num_data} test digits ({local_steps} local steps, IWAE_{k}); batched HMC on "
        f"{mcmc_points} digits (posterior.png shows the first 3)")
    report = gaps_run(tr, ["flow"], num_data=num_data, local_steps=local_steps, k=k,
                      num_samples=1000, guide_epochs=flow_epochs, mcmc_points=mcmc_points,
                      mcmc_warmup=mcmc_warmup, mcmc_samples=mcmc_samples)
    say(f"[3/4] evaluation (IWAE_{k} and AIS from the encoder) and reconstructions")
    evaluate_run(tr, num_data=num_data, k=k, estimator="both", ais_steps=ais_steps)
    say("[4/4] samples")
    sample_run(tr)
    table = report.to_markdown()
    return DemoResult(run.path, table, time.perf_counter() - t0)
