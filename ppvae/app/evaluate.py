"""``ppvae evaluate``: the ELBO and log p-hat(x) of a trained run on a split, and reconstructions.

:func:`evaluate_run` estimates log p(x) by IWAE (Burda et al. 2016) or AIS (Neal 2001) from the
run's guide, writes the report's evaluation section and the reconstructions figure, and returns
the numbers; :func:`main` is the command, printing them in one line. For a point-mass guide
(the zoo's ``point_mass``) the report says that its 'ELBO' and 'IWAE' are the MAP objective
log p(x, z*), not bounds on log p(x).

``--num-data N`` takes a seeded random subset of N rows of the split (``--first-rows``: the
first N, which is a biased sample of a split stored in class order), and the reconstructions
figure shows 10 of them chosen the same way, labelled by their rows; the report records the
indices. ``--image-shape H W`` (or ``C H W``) draws rows that are not stored as images as images.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pyro
import torch

from .inputs import nonnegative_int, positive_int
from .runs import provenance, record_warnings
from .sample import check_image_shape
from .trained import Rows, Trained, locked_run
from .zoo import GUIDES

__all__ = ["ESTIMATORS", "add_arguments", "evaluate_run", "main"]

ESTIMATORS = ("iwae", "ais", "both")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae evaluate``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test")
    p.add_argument("--estimator", choices=ESTIMATORS, default="iwae")
    p.add_argument("--k", type=positive_int, default=1000, help="IWAE samples per datapoint")
    p.add_argument("--ais-steps", type=positive_int, default=2000,
                   help="AIS temperatures (default 2000, as ppvae.ais)")
    p.add_argument("--ais-chains", type=positive_int, default=256,
                   help="AIS chains per datapoint (default 256, as ppvae.ais)")
    p.add_argument("--bdmc", action="store_true",
                   help="certify AIS: BDMC with the same settings on 20 datapoints simulated "
                        "from the model; the gap is printed next to the AIS number")
    p.add_argument("--num-data", type=positive_int,
                   help="N rows of the split, a seeded random subset (default all rows)")
    p.add_argument("--first-rows", action="store_true",
                   help="with --num-data: the first N rows instead of a random subset")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seed of the row subset and the Monte Carlo (default: the run's seed)")
    p.add_argument("--image-shape", dest="image_shape", type=positive_int, nargs="+",
                   metavar="N", help="reconstructions figure: draw each row as an H W (or C H "
                   "W) image (default: the run's image shape, else a square, else a D x 1 "
                   "strip)")


def main(args) -> int:
    """Run ``ppvae evaluate``; returns the exit code."""
    with locked_run(args.run) as tr:
        out = evaluate_run(tr, split=args.split, estimator=args.estimator, k=args.k,
                           num_data=args.num_data, ais_steps=args.ais_steps,
                           ais_chains=args.ais_chains, bdmc=args.bdmc, seed=args.seed,
                           first_rows=args.first_rows, image_shape=args.image_shape)
    print(f"{out['split']} (N = {out['num_data']}): ELBO {out['elbo']:.3f} ± "
          f"{out['elbo_se']:.3f}" + "".join(f", log p(x) {r['log_px']:.3f} ± "
                                            f"{r['log_px_se']:.3f} ({r['estimator']})"
                                            for r in out["estimates"]))
    print(f"report: {tr.run.file('report.md')}")
    return 0


def evaluate_run(tr: Trained, *, split: str = "test", estimator: str = "iwae", k: int = 1000,
                 num_data: int | None = None, ais_steps: int = 2000, ais_chains: int = 256,
                 bdmc: bool = False, seed: int | None = None, first_rows: bool = False,
                 image_shape: Sequence[int] | None = None) -> dict:
    """ELBO and log p-hat(x) on a split by ``estimator`` ("iwae", "ais" or "both").

    Writes the report's evaluation section (with its provenance and diagnostic warnings) and the
    reconstructions figure. Returns the numbers.

    Args:
        tr: the trained run (:func:`ppvae.app.trained.open_run`).
        split: "test", "valid" or "train".
        estimator: "iwae", "ais" or "both".
        k: IWAE samples per datapoint.
        num_data: rows of the split to evaluate (None: all). They are a seeded random subset
            (:func:`ppvae.app.trained.select_rows`), or the first ``num_data`` rows with
            ``first_rows``; the reconstructions figure shows 10 of them chosen the same way.
        ais_steps: AIS temperatures.
        ais_chains: AIS chains per datapoint; AIS runs in blocks of datapoints so that about
            32k chains are in memory at once.
        bdmc: run BDMC with the AIS settings on 20 datapoints simulated from the model and
            attach the gap to the AIS estimate (:func:`ppvae.infer.bdmc.certify`; an
            :class:`ppvae.AISWarning` when it does not certify).
        seed: seeds the subset and the Monte Carlo estimates (None: the run's seed).
        first_rows: take the first ``num_data`` rows instead of a random subset.
        image_shape: (H, W) or (C, H, W) to draw the reconstructions as (default: the data's).

    Returns:
        ``split``, ``num_data``, ``elbo``, ``elbo_se``, the first estimator's ``estimator``,
        ``log_px`` and ``log_px_se``, every estimator's in ``estimates``, and ``rows`` (the row
        record: selection, seed, count and the indices into the split).
    """
    from ..analysis.plots import reconstructions
    from ..core.bounds import elbo, iwae
    from ..distributed.sharded import sharded_ais
    from ..infer.bdmc import bdmc as run_bdmc
    from ..infer.bdmc import certify

    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{estimator}'; choose iwae, ais or both")
    seed = tr.config.get("seed", 0) if seed is None else seed
    shape = check_image_shape(image_shape, int(tr.data.test.shape[1])) or tr.data.image_shape
    pyro.set_rng_seed(seed)
    rows_ = Rows.select(tr.data, split, num_data, seed, first_rows)
    x, kw = rows_.take(tr.data), rows_.kw(tr.config, tr.data)
    n, rows = x.shape[0], []
    with record_warnings() as found:
        with torch.no_grad():
            e = elbo(tr.model, tr.guide, x, 100, model_kwargs=kw)
            if estimator in ("iwae", "both"):
                b = iwae(tr.model, tr.guide, x, k, model_kwargs=kw)
                rows.append((f"IWAE_{k} from the guide", b.per_datapoint, b.stderr))
            if estimator in ("ais", "both"):
                r = sharded_ais(tr.model, x, guide=tr.guide, num_steps=ais_steps,
                                num_chains=ais_chains, seed=seed, batch_kw=kw,
                                block_size=max(1, 32768 // ais_chains))
                label = f"AIS, {ais_steps} steps x {ais_chains} chains from the guide"
                if bdmc:
                    m = min(20, n)
                    r = certify(r, run_bdmc(tr.model, x[:m], guide=tr.guide, num_steps=ais_steps,
                                            num_chains=ais_chains,
                                            model_kwargs={kk: v[:m] for kk, v in kw.items()}))
                    label += f"; {r.certificate}"
                rows.append((label, r.per_datapoint, r.stderr))
        shown, shown_rows = rows_.subset(10)
        fig = reconstructions(tr.model, tr.guide, x[shown.to(x.device)], image_shape=shape,
                              labels=shown_rows.indices.tolist(),
                              datapoint_label=f"{split} row",
                              model_kwargs={kk: v[shown.to(v.device)] for kk, v in kw.items()})
    tr.run.save_figure(fig, "reconstructions")
    est = [{"estimator": label, "log_px": float(lp.mean()),
            "log_px_se": float(se.pow(2).sum().sqrt() / n)} for label, lp, se in rows]
    out = {"split": split, "num_data": n, "elbo": e.mean, "elbo_se": e.mean_stderr,
           **est[0], "estimates": est, "rows": rows_.record()}
    prov = provenance(tr.run, seed=seed, rows={"evaluated": rows_.record(),
                                               "reconstructions": shown_rows.record()})
    tr.run.set_section("evaluate", "Evaluation", _markdown(
        out, point_mass=GUIDES[tr.config["guide"]].point_mass, rows=rows_.describe()), out,
        provenance=prov, warnings=found, files=["reconstructions.png"])
    return out


def _markdown(out: dict, *, point_mass: bool, rows: str) -> str:
    """The evaluation section: one table row per estimator."""
    split, n = out["split"], out["num_data"]
    return ("| split | N | ELBO | log p̂(x) | estimator |\n|---|---|---|---|---|\n" + "".join(
        f"| {split} | {n} | {out['elbo']:.3f} ± {out['elbo_se']:.3f} | {r['log_px']:.3f} ± "
        f"{r['log_px_se']:.3f} | {r['estimator']} |\n" for r in out["estimates"])
        + f"\nNats per datapoint, mean ± Monte Carlo s.e., over {rows}. Reconstructions of 10 "
        "of these rows: `reconstructions.png`."
        + ("\n\nThe guide is a point mass: its 'ELBO' and 'IWAE' are the MAP objective "
           "log p(x, z*), not bounds on log p(x)." if point_mass else ""))
