"""``ppvae demo``: the main job on the bundled digits, into one run directory.

:func:`demo` trains a VAE with a diagonal encoder on the digits (:func:`ppvae.app.train.
train_run`, which also draws the prior samples and latent-space figures), then runs the gap study
with the diagonal and flow families and the MCMC comparison (:func:`ppvae.app.gaps.gaps_run`) and
the evaluation by IWAE and AIS (:func:`ppvae.app.evaluate.evaluate_run`). The run directory then
holds every figure of those commands: ``training.png``, ``samples.png``, ``traversals.png``,
``interpolation.png`` (``manifold.png`` with ``--latent-dim 2``), ``gaps.png``,
``gap_histogram.png``, ``elbo_scatter.png``, ``local_vi.png``, ``posterior_pairs.png``,
``mcmc_trace.png``, ``mcmc_rank.png`` and ``reconstructions.png``, each listed in report.md.
Its sizes keep it to a few minutes on 2 CPU cores. :func:`main` is the command: it prints the
progress, the gap table and where the report is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

from .evaluate import evaluate_run
from .files import RunLock
from .gaps import gaps_run
from .inputs import check_device, nonnegative_int, positive_int
from .runs import RunDir, command_line
from .train import train_run
from .trained import open_run

__all__ = ["DemoResult", "add_arguments", "demo", "main"]


class DemoResult(NamedTuple):
    """What ``ppvae demo`` made: its run directory, the gap table and the wall time."""
    run: Path
    table: str  # the gap table (markdown)
    seconds: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae demo`` (its defaults are the main job's sizes)."""
    p.add_argument("--out", help="run directory (default runs/demo-<time>)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    p.add_argument("--epochs", type=positive_int, default=100, help="VAE epochs")
    p.add_argument("--flow-epochs", type=positive_int, default=50)
    p.add_argument("--num-data", type=positive_int, default=300,
                   help="test digits in the gap study and the evaluation (a seeded random "
                   "subset)")
    p.add_argument("--first-rows", action="store_true",
                   help="the first --num-data test digits instead of a random subset")
    p.add_argument("--local-steps", type=positive_int, default=1000)
    p.add_argument("--k", type=positive_int, default=5000, help="IWAE samples for log p(x)")
    p.add_argument("--mcmc", type=nonnegative_int, default=8, help="test digits compared with HMC")
    p.add_argument("--latent-dim", type=positive_int, default=8)
    p.add_argument("--hidden", type=positive_int, default=256, help="hidden units (one layer)")
    p.add_argument("--ais-steps", type=positive_int, default=100,
                   help="AIS steps in the evaluation")
    p.add_argument("--mcmc-warmup", type=positive_int, default=500)
    p.add_argument("--mcmc-samples", type=positive_int, default=1000)


def main(args) -> int:
    """Run ``ppvae demo``; returns the exit code."""
    check_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    res = demo(out, seed=args.seed, quiet=getattr(args, "quiet", False), epochs=args.epochs,
               flow_epochs=args.flow_epochs, num_data=args.num_data,
               local_steps=args.local_steps, k=args.k, mcmc_points=args.mcmc,
               latent_dim=args.latent_dim, hidden=args.hidden, ais_steps=args.ais_steps,
               mcmc_warmup=args.mcmc_warmup, mcmc_samples=args.mcmc_samples,
               device=args.device, first_rows=args.first_rows)
    print("\n" + res.table)
    print(f"finished in {res.seconds:.0f} s; report: {res.run / 'report.md'} "
          f"(figures and ArviZ netCDF files in {res.run})")
    return 0


def demo(out, *, seed: int = 0, quiet: bool = False, epochs: int = 100, flow_epochs: int = 50,
         num_data: int = 300, local_steps: int = 1000, k: int = 5000, mcmc_points: int = 8,
         latent_dim: int = 8, hidden: int = 256, ais_steps: int = 100,
         mcmc_warmup: int = 500, mcmc_samples: int = 1000, device=None,
         first_rows: bool = False) -> DemoResult:
    """The main job on the bundled digits; returns the run directory and the gap table.

    The gap study and the evaluation use the same ``num_data`` test digits, a random subset
    seeded by ``seed`` (``first_rows``: the first ones); the report records their indices.
    """
    t0 = time.perf_counter()
    run = RunDir.create(out)
    with RunLock(run.path, command_line()):
        cfg = {"model": "vae", "guide": "diag", "data": "digits", "binarize": "static",
               "seed": seed, "device": device or "auto",
               "sizes": {"latent_dim": latent_dim, "hidden": [hidden], "num_flows": 2},
               "train": {"objective": "elbo", "epochs": epochs, "batch_size": 64, "lr": 3e-3}}
        say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
        say(f"[1/3] training a VAE (diagonal encoder) on digits, {epochs} epochs -> "
            f"{run.path}; then prior samples, latent traversals and interpolations")
        train_run(cfg, run, quiet=quiet)
        tr = open_run(run.path)
        say(f"[2/3] flow encoder for the frozen decoder ({flow_epochs} epochs); gap "
            f"decomposition on {num_data} test digits ({local_steps} local steps, IWAE_{k}); "
            f"batched HMC on {mcmc_points} of them (corner plots of 2, trace and rank plots "
            "where R-hat is worst)")
        report = gaps_run(tr, ["flow"], num_data=num_data, local_steps=local_steps, k=k,
                          num_samples=1000, guide_epochs=flow_epochs, mcmc_points=mcmc_points,
                          mcmc_warmup=mcmc_warmup, mcmc_samples=mcmc_samples, quiet=quiet,
                          first_rows=first_rows)
        say(f"[3/3] evaluation (IWAE_{k} and AIS from the encoder) and reconstructions")
        evaluate_run(tr, num_data=num_data, k=k, estimator="both", ais_steps=ais_steps,
                     first_rows=first_rows)
    table = report.to_markdown()
    return DemoResult(run.path, table, time.perf_counter() - t0)
