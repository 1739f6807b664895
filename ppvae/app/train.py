"""``ppvae train``: train a model and guide from the zoo into a run directory.

:func:`train_run` builds data, model and guide from a configuration
(:func:`ppvae.app.trained.build`), trains them with :func:`ppvae.fit` (checkpoint every epoch,
``metrics.jsonl`` appended per epoch, resumable after an interruption), and writes the training
section of the report, the learning curve and the guide's posterior samples for a few test
points (ArviZ netCDF, :func:`guide_posterior`). :func:`main` is the command: configuration
from defaults, ``--config`` and flags (:func:`ppvae.app.inputs.train_config`), then
:func:`train_run`; Ctrl-C keeps the last finished epoch and says how to continue.

Once the model has changed (a resume that trains further, or an interrupted one), every report
section computed from the older checkpoint is marked stale (:meth:`ppvae.app.runs.RunDir.
sweep_stale`: moved under ``stale`` in report.json and report.md, its files into ``stale/``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys

import pyro
import torch

from .inputs import UsageError, check_device, train_config
from .runs import RunDir, RunError, provenance, record_warnings
from .trained import Rows, build, label_kw
from .zoo import GUIDES, MODELS, OBJECTIVES, check_names, make_objective

__all__ = ["add_arguments", "guide_posterior", "main", "train_run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae train``.

    Training options default to None so that a ``--config`` TOML file (or, with ``--resume``,
    the run's own config.toml) supplies them unless a flag is given.
    """
    p.add_argument("--config", help="TOML file with the run's settings (flags override it)")
    p.add_argument("--out", help="run directory (default runs/<model>-<guide>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint")
    p.add_argument("--model", help=f"one of {', '.join(MODELS)} (default vae)")
    p.add_argument("--guide", help=f"one of {', '.join(GUIDES)} (default: the model's usual)")
    p.add_argument("--data", help="digits (bundled, default), binarized-mnist, mnist, "
                   "fashion-mnist, ppca, or a .npy/.csv file of rows")
    p.add_argument("--data-path", dest="data_path",
                   help="binarized-mnist: an .npz file or a folder of .amat files")
    p.add_argument("--binarize", choices=("static", "threshold", "dynamic"))
    p.add_argument("--latent-dim", dest="latent_dim", type=int)
    p.add_argument("--hidden", type=int, nargs="+", help="hidden layer sizes")
    p.add_argument("--top-latent-dim", dest="top_latent_dim", type=int,
                   help="hierarchical model: size of the top layer")
    p.add_argument("--num-flows", dest="num_flows", type=int, help="flow guide layers")
    p.add_argument("--channels", type=int, help="conv model/guide channels")
    p.add_argument("--objective", choices=tuple(OBJECTIVES))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--particles", type=int, help="ELBO particles per datapoint")
    p.add_argument("--iwae-k", dest="iwae_k", type=int, help="objective iwae: k")
    p.add_argument("--beta", type=float, help="objective beta: the KL weight")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int,
                   help="objective kl-warmup: steps")
    p.add_argument("--patience", type=int, help="early stopping (epochs without improvement)")
    p.add_argument("--jit", action="store_true", default=None,
                   help="replay the training step from a captured graph (faster at small "
                   "batches; see ppvae.capture)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    """Run ``ppvae train``; returns the exit code (130 when interrupted)."""
    cfg, out = train_config(args)
    if not args.resume and (out / "config.toml").exists():
        raise UsageError(f"{out} already holds a run (config.toml); continue it with --resume "
                         "or choose another --out")
    check_names(cfg["model"], cfg["guide"])
    check_device(cfg.get("device"))
    run = RunDir.create(out)
    try:
        res = train_run(cfg, run, resume=args.resume, quiet=args.quiet)
    except KeyboardInterrupt:  # train_run marked the sections of the older model stale
        print(f"ppvae: interrupted; the last finished epoch is saved. Continue with: "
              f"ppvae train --out {run.path} --resume", file=sys.stderr)
        return 130
    valid = f", validation ELBO {res.valid_elbo[-1]:.3f}" if res.valid_elbo else ""
    print(f"trained {res.epochs} epochs ({res.stopped}){valid}")
    print(f"run directory: {run.path}\nreport: {run.file('report.md')}")
    return 0


def train_run(cfg: dict, run: RunDir, *, resume: bool = False, quiet: bool = False):
    """Train the configured pair into ``run``; returns the :class:`ppvae.FitResult`.

    Writes the training section of the report (with its provenance and the diagnostic warnings
    training raised). Report sections computed from an older checkpoint (before a resume that
    trains further; also when training is interrupted or fails after changing the checkpoint)
    are marked stale.
    """
    from ..train.checkpoint import read_meta
    from ..train.fit import fit

    pyro.set_rng_seed(cfg.get("seed", 0))  # network initialization is part of the run
    data, model, guide = build(cfg)
    t = cfg["train"]
    meta = read_meta(run.checkpoint) if resume and run.checkpoint.is_file() else None
    # a resume changes the run directory only once fit has taken the checkpoint (a refused one,
    # e.g. other settings, leaves config, metrics and extra guides as they were)
    prepared = meta is None
    if prepared:
        _prepare_run(cfg, run, meta)

    def on_epoch(**record):
        nonlocal prepared
        if not prepared:
            _prepare_run(cfg, run, meta)
            prepared = True
        run.append_metrics(**record)

    ckpt = run.checkpoint if (resume or t.get("checkpoint", True)) else None
    try:
        with record_warnings() as found:
            res = fit(model, guide, data, epochs=int(t.get("epochs", 30)),
                      batch_size=int(t.get("batch_size", 64)), lr=float(t.get("lr", 3e-3)),
                      objective=make_objective(t), seed=cfg.get("seed", 0),
                      device=cfg.get("device"), patience=t.get("patience"),
                      restore_best=False, checkpoint=ckpt, jit=bool(t.get("jit", False)),
                      resume=run.checkpoint if resume else None, quiet=quiet,
                      on_epoch=on_epoch, batch_kw=label_kw(cfg, data, "train"),
                      valid_batch_kw=label_kw(cfg, data, "valid"))
    except BaseException:
        with contextlib.suppress(RunError):  # a broken report.json must not hide the error
            run.sweep_stale("training stopped (interrupted or failed) after the checkpoint "
                            "changed")
        raise
    if not prepared:  # the checkpoint was taken, with no epoch left to train
        _prepare_run(cfg, run, meta)
    if meta is None:
        run.sweep_stale("the model was trained anew", unknown=True)
    elif res.epochs > meta.epoch:
        run.sweep_stale(f"the model trained on from epoch {meta.epoch} to {res.epochs}",
                        unknown=True)
    _train_report(run, res, model, guide, data, cfg, found)
    return res


def _prepare_run(cfg: dict, run: RunDir, meta) -> None:
    """Write the run's config; on resume, bring metrics.jsonl to the checkpoint's epoch.

    Also drop extra guides trained on a model that is about to train further.
    """
    run.write_config(cfg)
    if meta is None or meta.epoch < int(cfg["train"].get("epochs", 30)):
        for stale in run.path.glob("guide-*.pt"):  # trained on the frozen model being replaced
            stale.unlink()
    if meta is not None:
        run.truncate_metrics(meta.epoch)
        have = {r.get("epoch") for r in run.read_metrics()}
        h = meta.state  # fill epochs the checkpoint has but the log missed (interrupted)
        for e in range(1, meta.epoch + 1):
            if e not in have:
                run.append_metrics(epoch=e, train=h["train"][e - 1], valid=h["valid"][e - 1]
                                   if h["valid"] else None, lr=h["lr"][e - 1], step=None,
                                   seconds=None, recovered=True)
    elif run.metrics_path.is_file():
        run.metrics_path.unlink()


def _train_report(run: RunDir, res, model, guide, data, cfg, found: list[str]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ep = range(1, len(res.train_objective) + 1)
    ax.plot(ep, res.train_objective, label="train objective")
    if res.valid_elbo:
        ax.plot(ep, res.valid_elbo, label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    run.save_figure(fig, "training")
    last = lambda v: v[-1] if v else math.nan  # noqa: E731
    md = ("| epochs | steps | train objective | validation ELBO | steps/s | stopped |\n"
          "|---|---|---|---|---|---|\n"
          f"| {res.epochs} | {res.steps} | {last(res.train_objective):.3f} | "
          f"{last(res.valid_elbo):.3f} | {res.steps_per_second:.1f} | {res.stopped} |\n\n"
          f"{res.message}. Learning curve: `training.png`; per-epoch values: `metrics.jsonl`.")
    seed = cfg.get("seed", 0)
    rows = Rows.select(data, "test", 8, seed)
    dev = _device(model)
    x = rows.take(data).to(dev)
    kw = {k: v.to(dev) for k, v in rows.kw(cfg, data).items()}
    nc = guide_posterior(model, guide, x, run, "posterior_guide.nc", model_kwargs=kw,
                         datapoints=rows.indices.tolist())
    if nc:
        md += (f"\nGuide posterior samples for test rows {rows.indices.tolist()} "
               f"({rows.describe()}): `{nc}` (ArviZ netCDF; datapoint coordinate: the test "
               "row).")
    prov = provenance(run, seed=seed, rows={
        "training": Rows.select(data, "train", None, seed).record(),
        "guide_posterior": rows.record()})
    run.set_section("train", "Training", md, {
        "epochs": res.epochs, "steps": res.steps, "train_objective": res.train_objective,
        "valid_elbo": res.valid_elbo, "stopped": res.stopped, "message": res.message,
        "steps_per_second": res.steps_per_second, "wall_time": res.wall_time},
        provenance=prov, warnings=found, files=["training.png", *([nc] if nc else [])])


def _device(module) -> torch.device:
    p = next(iter(module.parameters()), None) if isinstance(module, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def guide_posterior(model, guide, x, run: RunDir, name: str, num_samples: int = 500,
                    *, model_kwargs=None, datapoints=None) -> str | None:
    """Save ``num_samples`` guide draws per row of ``x`` as ArviZ netCDF.

    ``datapoints``: the datapoint coordinate (e.g. the rows' indices in their split; default
    0..N-1). None when the pair has no continuous latent to sample this way (e.g. a point-mass
    guide).
    """
    from ..core.contract import ContractError
    from ..core.potential import Potential
    from ..infer.diagnostics import to_inference_data

    try:
        with torch.no_grad():
            pot = Potential(model, x, guide=guide, model_kwargs=model_kwargs)
            values, _ = pot.unflatten(pot.sample_init(num_samples))  # u: [S, N, D]
            per = pot.per_datapoint_values(values)  # site -> [S, N, size]
    except (ContractError, NotImplementedError, ValueError):
        return None
    to_inference_data({k: v.unsqueeze(0) for k, v in per.items()},
                      datapoints=datapoints).to_netcdf(run.file(name))
    return name
