"""``ppvae train``: train a model and guide from the zoo into a run directory.

:func:`train_run` builds data, model and guide from a configuration
(:func:`ppvae.app.trained.build`), trains them with :func:`ppvae.fit` (checkpoint every epoch,
``metrics.jsonl`` appended per epoch, resumable after an interruption), and writes the training
section of the report, the learning curves with the learning rate (``training.png``) and the
guide's posterior samples for a few test points (ArviZ netCDF, :func:`guide_posterior`). For image
data it also writes the samples section (:func:`ppvae.app.sample.sample_run`: prior samples, the
latent manifold of a 2-D latent, traversals, interpolations). :func:`main` is the command:
configuration
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
import shlex
import shutil
import sys
from pathlib import Path

import pyro
import torch

from ..data.downloads import missing_folders
from ..guides.sparse import CODE_ACTIVATIONS
from ..train.corruption import CORRUPTIONS
from ..train.wae import KERNELS
from .files import HOLDER, RunLock, replacing
from .inputs import (
    TRAIN_DEFAULTS,
    UsageError,
    add_data_arguments,
    check_device,
    positive_float,
    positive_int,
    train_config,
)
from .runs import RunDir, RunError, command_line, provenance, record_warnings
from .sample import model_device, sample_run
from .trained import Rows, Trained, build, label_kw
from .zoo import DEFAULT_NOISE, GUIDES, MODELS, OBJECTIVES, make_objective

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
    p.add_argument("--latent-dim", dest="latent_dim", type=positive_int)
    p.add_argument("--hidden", type=positive_int, nargs="+", help="hidden layer sizes")
    p.add_argument("--top-latent-dim", dest="top_latent_dim", type=positive_int,
                   help="hierarchical model: size of the top layer")
    p.add_argument("--num-flows", dest="num_flows", type=positive_int, help="flow guide layers")
    p.add_argument("--channels", type=positive_int, help="conv model/guide channels")
    p.add_argument("--objective", choices=tuple(OBJECTIVES))
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", dest="batch_size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--particles", type=positive_int, help="ELBO particles per datapoint")
    p.add_argument("--iwae-k", dest="iwae_k", type=positive_int, help="objective iwae: k")
    p.add_argument("--beta", type=float, help="objective beta: the KL weight")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=positive_int,
                   help="objective kl-warmup: steps")
    p.add_argument("--mmd-weight", dest="mmd_weight", type=positive_float,
                   help="objective wae: lambda, the MMD penalty's weight")
    p.add_argument("--kernel", choices=KERNELS, help="objective wae: the MMD kernel")
    p.add_argument("--l1", type=float,
                   help="sparse-ae: the L1 penalty's weight (a Laplace prior of that rate)")
    p.add_argument("--top-k", dest="top_k", type=positive_int,
                   help="sparse guide: keep the k largest code units (k-sparse autoencoder)")
    p.add_argument("--code-activation", dest="code_activation", choices=CODE_ACTIVATIONS,
                   help="sparse guide: the code's activation")
    p.add_argument("--target-rate", dest="target_rate", type=float,
                   help="add the KL-to-target-rate sparsity penalty (sigmoid codes): the "
                   "target mean activation of each code unit")
    p.add_argument("--sparsity-weight", dest="sparsity_weight", type=float,
                   help="the KL-to-target-rate penalty's weight")
    p.add_argument("--corruption", choices=CORRUPTIONS,
                   help="denoising: train the guide on corrupted inputs (any model)")
    p.add_argument("--noise", type=positive_float,
                   help="the corruption's level: probability per input (masking, "
                   "salt-and-pepper) or the gaussian noise's sd")
    p.add_argument("--patience", type=positive_int,
                   help="early stopping (epochs without improvement)")
    p.add_argument("--jit", action="store_true", default=None,
                   help="replay the training step from a captured graph (faster at small "
                   "batches; see ppvae.capture)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    add_data_arguments(p)  # the likelihood and the user's data: --likelihood, --image-* flags


def main(args) -> int:
    """Run ``ppvae train``; returns the exit code.

    0 trained; 3 stopped on non-finite values (the last finite epoch is kept); 130 interrupted.
    Everything that can be checked without training is checked before the run directory is
    written (the configuration, the data, the pair's contract on a first minibatch, the run
    directory's report and log); a run that fails before its first epoch is saved leaves the
    directory as it found it.
    """
    from .cli import EXIT_INTERRUPTED

    try:
        prepared = _preflight(args)
    except KeyboardInterrupt:
        print("ppvae: interrupted before training started; nothing was written",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    cfg, out, built = prepared
    created = missing_folders(out)
    run = RunDir(out)
    lock = RunLock(out, command_line())
    try:
        RunDir.create(out)
        lock.acquire()
    except BaseException:
        _remove_empty(created, own_lock=False)  # folders this command made, while empty
        raise
    try:  # from here on this command holds the lock: what it undoes is its own
        before = {p.name for p in run.path.iterdir()}
        if not args.resume and run.config_path.exists():  # written since the first check
            raise UsageError(f"{out} already holds a run (config.toml); continue it with "
                             "--resume or choose another --out")
        res = _train_or_undo(cfg, run, args, built, before, created)
    finally:
        lock.release()
    if isinstance(res, int):
        return res
    valid = f", validation ELBO {res.valid_elbo[-1]:.3f}" if res.valid_elbo else ""
    print(f"trained {res.epochs} epochs ({res.stopped}){valid}")
    print(f"run directory: {run.path}\nreport: {run.file('report.md')}")
    return 0


def _train_or_undo(cfg: dict, run: RunDir, args, built: tuple, before: set[str],
                   created: list[Path]):
    """Train; the caller holds the lock.

    A new run that fails before its first epoch is saved is undone. Returns the FitResult, or
    the exit code of an interruption or a non-finite stop.
    """
    from .cli import EXIT_INTERRUPTED, EXIT_NON_FINITE

    resume_cmd = shlex.join(["ppvae", "train", "--out", str(run.path), "--resume"])
    try:
        res = train_run(cfg, run, resume=args.resume, quiet=getattr(args, "quiet", False),
                        built=built)
    except KeyboardInterrupt:  # train_run marked the sections of the older model stale
        if _undo_failed_start(run, before, created, args.resume):
            print("ppvae: interrupted before the first epoch finished; nothing was kept",
                  file=sys.stderr)
        else:
            print(f"ppvae: interrupted; the last finished epoch is saved. Continue with: "
                  f"{resume_cmd}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        _undo_failed_start(run, before, created, args.resume)
        raise
    if res.stopped == "non_finite":
        if _undo_failed_start(run, before, created, args.resume) or res.epochs == 0:
            kept = "nothing was kept"
        else:
            kept = (f"the last finite epoch ({res.epochs}) is saved in {run.checkpoint}; a "
                    "resume keeps the run's settings, so train again with a smaller --lr "
                    "into a new --out")
        print(f"ppvae: training stopped on non-finite values: {res.message}; {kept}",
              file=sys.stderr)
        return EXIT_NON_FINITE
    return res


def _preflight(args) -> tuple[dict, Path, tuple]:
    """Everything ``train`` checks before it writes: (config, run directory, built pair)."""
    from ..core.contract import ContractError, check_pair

    cfg, out = train_config(args)
    if not args.resume and (out / "config.toml").exists():
        raise UsageError(f"{out} already holds a run (config.toml); continue it with --resume "
                         "or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a directory")
    check_device(cfg.get("device"))
    if args.resume:
        _check_resumable(RunDir(out))
    pyro.set_rng_seed(cfg.get("seed", 0))  # network initialization is part of the run
    built = build(cfg)
    data, model, guide = built
    rows = data.train[: int({**TRAIN_DEFAULTS, **cfg["train"]}["batch_size"])]
    try:
        with torch.no_grad():  # the pair keeps the contract on a first minibatch
            check_pair(model, guide, rows, model_kwargs=label_kw(cfg, data, "train",
                                                                  slice(0, rows.shape[0])))
    except ContractError as e:
        raise ContractError(f"model '{cfg['model']}' with guide '{cfg['guide']}' on data "
                            f"'{cfg['data']}': {e}") from e
    return cfg, out, built


def _check_resumable(run: RunDir) -> None:
    """Refuse a resume whose run directory is broken, before anything changes.

    The checkpoint, when present, must be a readable file; metrics.jsonl and report.json must
    parse (each error names the file).
    """
    from ..train.checkpoint import read_meta

    ck = run.checkpoint
    if ck.exists() or ck.is_symlink():
        if not ck.is_file():
            raise RunError(f"{ck} is not a checkpoint file; move it away, or start a new run")
        read_meta(ck)
    run.read_metrics()
    run.read_report()


def _undo_failed_start(run: RunDir, before: set[str], created: list[Path], resume: bool
                       ) -> bool:
    """After a new run failed before saving its first epoch: remove what it wrote.

    The files that were not in the directory before, and the folders the command created.
    Returns True when it did (a new run without a checkpoint); False otherwise (a resumed run,
    or one with a saved epoch, is kept).
    """
    if resume or run.checkpoint.exists():
        return False
    for p in run.path.iterdir() if run.path.is_dir() else ():
        if p.name not in before and p.name != HOLDER:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    _remove_empty(created, own_lock=True)
    return True


def _remove_empty(folders: list[Path], *, own_lock: bool) -> None:
    """Remove ``folders`` (deepest first) that hold nothing.

    ``own_lock``: also those holding only the lock file, which this command holds.
    """
    for folder in folders:
        with contextlib.suppress(OSError):
            holder = folder / HOLDER
            if own_lock and holder.exists() and len(list(folder.iterdir())) == 1:
                holder.unlink()
            folder.rmdir()


def train_run(cfg: dict, run: RunDir, *, resume: bool = False, quiet: bool = False,
              built: tuple | None = None):
    """Train the configured pair into ``run``; returns the :class:`ppvae.FitResult`.

    ``built``: the ``(data, model, guide)`` of :func:`ppvae.app.trained.build` for ``cfg``,
    when the caller built them already (seeded with the run's seed first); else built here.

    Writes the training section of the report (with its provenance and the diagnostic warnings
    training raised). Report sections computed from an older checkpoint (before a resume that
    trains further; also when training is interrupted or fails after changing the checkpoint)
    are marked stale.
    """
    from ..train.checkpoint import read_meta
    from ..train.fit import fit

    if built is None:
        pyro.set_rng_seed(cfg.get("seed", 0))  # network initialization is part of the run
        built = build(cfg)
    data, model, guide = built
    t = {**TRAIN_DEFAULTS, **cfg["train"]}
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
            res = fit(model, guide, data, epochs=int(t["epochs"]),
                      batch_size=int(t["batch_size"]), lr=float(t["lr"]),
                      objective=make_objective(t), seed=cfg.get("seed", 0),
                      device=cfg.get("device"), patience=t.get("patience"),
                      restore_best=False, checkpoint=ckpt, jit=bool(t.get("jit", False)),
                      resume=run.checkpoint if resume else None,
                      progress=False if quiet else None,
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
    if meta is None or meta.epoch < int({**TRAIN_DEFAULTS, **cfg["train"]}["epochs"]):
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


_OBJECTIVE_NAMES = {"elbo": "ELBO", "iwae": "IWAE bound", "beta": "beta-ELBO",
                    "kl-warmup": "ELBO with KL warm-up", "mean-field": "mean-field ELBO",
                    "wae": "WAE-MMD"}


def _objective_label(t: dict) -> str:
    """The training objective of a run's ``[train]`` table in words, e.g. 'IWAE bound (k=5)'."""
    name = t.get("objective", "elbo")
    label = _OBJECTIVE_NAMES.get(name, name)
    option = {"iwae": ("iwae_k", "k"), "beta": ("beta", "beta"),
              "kl-warmup": ("warmup_steps", "warm-up steps"),
              "wae": ("mmd_weight", "lambda")}.get(name)
    if option is not None and t.get(option[0]) is not None:
        label += f" ({option[1]}={t[option[0]]})"
    if t.get("corruption") is not None:
        label = f"denoising {label}, {t['corruption']} {t.get('noise', DEFAULT_NOISE):g}"
    return label


def _train_report(run: RunDir, res, model, guide, data, cfg, found: list[str]) -> None:
    from ..analysis.figures import training_curves

    history = run.read_metrics() or res  # every epoch, including those before a resume
    figures = []
    if res.epochs > 0:  # no epoch finished (non-finite in the first): no curve to draw
        fig = training_curves(history, objective=_objective_label(cfg["train"]),
                              data=f"{cfg['data']} ({data.train.shape[0]} training rows)")
        run.save_figure(fig, "training")
        figures.append("training.png")
    last = lambda v: v[-1] if v else math.nan  # noqa: E731
    md = (f"Objective: {_objective_label(cfg['train'])}.\n\n"
          "| epochs | steps | train objective | validation ELBO | steps/s | stopped |\n"
          "|---|---|---|---|---|---|\n"
          f"| {res.epochs} | {res.steps} | {last(res.train_objective):.3f} | "
          f"{last(res.valid_elbo):.3f} | {res.steps_per_second:.1f} | {res.stopped} |\n\n"
          f"{res.message}." + (" Learning curves and the learning rate per epoch: "
                               "`training.png`; per-epoch values: `metrics.jsonl`."
                               if figures else ""))
    seed = cfg.get("seed", 0)
    rows = Rows.select(data, "test", 8, seed)
    dev = model_device(model)
    x = rows.take(data).to(dev)
    kw = {k: v.to(dev) for k, v in rows.kw(cfg, data).items()}
    nc = guide_posterior(model, guide, x, run, "posterior_guide.nc", model_kwargs=kw,
                         datapoints=rows.indices.tolist())
    if nc:
        md += (f"\nGuide posterior samples for test rows {rows.indices.tolist()} "
               f"({rows.describe()}): `{nc}` (ArviZ netCDF; datapoint coordinate: the test "
               "row).")
    sparsity = _sparsity(guide, data, dev)
    if sparsity is not None:
        md += f"\nCode sparsity on the {data.test.shape[0]} test rows: {sparsity.summary()}."
    wae_md, wae_json = _wae_numbers(model, guide, data, dev, cfg)
    dis_md, dis_json = _disentanglement(model, guide, data, dev, cfg)
    md += wae_md + dis_md
    if data.image_shape is not None and res.stopped != "non_finite":
        md += ("\nPrior samples and latent-space figures: section 'Samples and latent space' "
               "(`ppvae sample` redraws them).")
    prov = provenance(run, seed=seed, rows={
        "training": Rows.select(data, "train", None, seed).record(),
        "guide_posterior": rows.record()})
    run.set_section("train", "Training", md, {
        "epochs": res.epochs, "steps": res.steps, "train_objective": res.train_objective,
        "valid_elbo": res.valid_elbo, "stopped": res.stopped, "message": res.message,
        "steps_per_second": res.steps_per_second, "wall_time": res.wall_time,
        **wae_json, **dis_json, **({} if sparsity is None else {"code_sparsity": {
            "active_per_datapoint": sparsity.mean_active, "dead_fraction": sparsity.dead_fraction,
            "mean_l1": sparsity.mean_l1, "hoyer": sparsity.mean_hoyer}})},
        provenance=prov, warnings=found, files=[*figures, *([nc] if nc else [])])
    if data.image_shape is not None and res.stopped != "non_finite":
        sample_run(Trained(model, guide, data, cfg, run), require_samples=False)


def _wae_numbers(model, guide, data, dev, cfg) -> tuple[str, dict]:
    """A WAE run's latent MMD to the prior and prior-sample score on held-out rows."""
    from ..analysis.sample_quality import prior_sample_score
    from ..train.wae import latent_mmd

    if cfg["train"].get("objective") != "wae" or data.test.shape[0] < 20:
        return "", {}
    test = data.test.to(dev)
    m = latent_mmd(model, guide, test, seed=cfg.get("seed", 0))
    md = (f"\nMMD² (IMQ kernel) between the guide's codes of the {test.shape[0]} test rows and "
          f"prior draws: {m.mmd:.4f} ± {m.stderr:.4f} (`ppvae.latent_mmd`; 0 when the "
          "aggregate posterior matches the prior).")
    out = {"latent_mmd": m.mmd, "latent_mmd_stderr": m.stderr}
    if cfg.get("likelihood", "bernoulli") == "bernoulli" and data.valid.shape[0] >= 20:
        s = prior_sample_score(model, data.valid.to(dev), seed=cfg.get("seed", 0))
        md += (f" Prior samples' NLL under a {s.components}-component Bernoulli mixture fitted "
               f"to the {data.valid.shape[0]} validation rows: {s.sample_nll:.2f} ± "
               f"{s.sample_stderr:.2f} nats (the validation rows' own: {s.data_nll:.2f}; "
               "`ppvae.prior_sample_score`, lower is better).")
        out.update(prior_sample_nll=s.sample_nll, data_nll=s.data_nll)
    return md, out


def _disentanglement(model, guide, data, dev, cfg) -> tuple[str, dict]:
    """MIG and FactorVAE score on the test rows of data with known factors (sprites)."""
    from ..analysis.disentangle import disentanglement
    from ..core.contract import ContractError

    if getattr(data, "factors", None) is None or data.test.shape[0] < 100:
        return "", {}
    try:
        rep = disentanglement(model, guide, data.test.to(dev), data.factors[2].to(dev),
                              data.factor_names, seed=cfg.get("seed", 0))
    except ContractError as e:  # e.g. discrete codes: no MIG of a continuous latent
        return f"\nDisentanglement not measured: {e}.", {}
    table = "\n".join(f"| {n} | {float(rep.mig_per_factor[k]):.3f} | z[{int(rep.best_latent[k])}] |"
                      for k, n in enumerate(rep.factor_names))
    md = (f"\n\nDisentanglement on the {rep.num_data} test rows ({rep.num_active}/"
          f"{rep.activity.numel()} active units): MIG {rep.mig:.3f} (Chen et al. 2018), "
          f"FactorVAE score {rep.factor_vae_score:.3f} (Kim and Mnih 2018); "
          "`ppvae.disentanglement`.\n\n| factor | MIG | most informative coordinate |\n"
          f"|---|---|---|\n{table}\n")
    return md, {"disentanglement": {"mig": rep.mig, "factor_vae_score": rep.factor_vae_score,
                                    "mig_per_factor": dict(zip(rep.factor_names,
                                                               rep.mig_per_factor.tolist(),
                                                               strict=True))}}


def _sparsity(guide, data, dev):
    """The code sparsity of a sparse guide on the test split (None for other guides)."""
    from ..analysis.sparsity import code_sparsity
    from ..guides.sparse import SparseEncoder

    if not isinstance(guide, SparseEncoder) or data.test.shape[0] == 0:
        return None
    return code_sparsity(guide, data.test.to(dev))


def guide_posterior(model, guide, x, run: RunDir, name: str, num_samples: int = 500,
                    *, model_kwargs=None, datapoints=None) -> str | None:
    """Save ``num_samples`` guide draws per row of ``x`` as ArviZ netCDF, in 4 chains.

    The draws are independent, so split into chains R-hat is finite and near 1
    (:func:`ppvae.guide_inference_data`, with the ``log_likelihood`` group).
    ``datapoints``: the datapoint coordinate (e.g. the rows' indices in their split; default
    0..N-1). None when the pair has no continuous latent to sample this way (e.g. a point-mass
    guide).
    """
    from ..core.contract import ContractError
    from ..infer.guide_draws import guide_inference_data

    chains = 4
    try:
        idata = guide_inference_data(model, guide, x, num_chains=chains,
                                     num_draws=max(1, num_samples // chains),
                                     model_kwargs=model_kwargs, datapoints=datapoints)
    except (ContractError, NotImplementedError, ValueError):
        return None
    with replacing(run.file(name)) as tmp:
        idata.to_netcdf(tmp)
    return name
