"""The steps behind ``ppvae train``, ``evaluate`` and ``sample``, on a run directory.

* :func:`train_run` builds model, guide and data from a configuration (:mod:`ppvae.builders`),
  trains them with :func:`ppvae.fit` (checkpoint every epoch, ``metrics.jsonl`` appended per
  epoch, resumable after an interruption), and writes the training section of the report, the
  learning curve and the guide's posterior samples for a few test points (ArviZ netCDF).
* :func:`open_run` rebuilds a trained run from its ``config.toml`` and checkpoint.
* :func:`evaluate_run`: the ELBO and log p-hat(x) by IWAE (Burda et al. 2016) or AIS (Neal 2001)
  on a split, and a reconstructions figure.
* :func:`sample_run`: decoded draws from the prior (one row per label for a conditional model).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import torch

from .runs import RunDir
from .zoo import ModelSpec, build_data, build_guide, build_model

__all__ = ["OBJECTIVES", "Trained", "evaluate_run", "guide_posterior", "label_kw", "open_run",
           "sample_run", "train_run"]

OBJECTIVES = ("elbo", "iwae", "beta", "kl-warmup", "mean-field")
_LABELLED = ("cvae",)  # models taking the labels as y=
_TENSORS = ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")


class Trained(NamedTuple):
    model: object
    guide: object
    data: object  # ppvae.data.Dataset
    config: dict
    run: RunDir


def _objective(cfg: dict):
    from ..train import objectives

    t = cfg["train"]
    name = t.get("objective", "elbo")
    if name == "elbo":
        return objectives.ELBO(t.get("particles", 1))
    if name == "iwae":
        return objectives.IWAE(t.get("iwae_k", 5))
    if name == "beta":
        return objectives.beta_vae(t.get("beta", 2.0))
    if name == "kl-warmup":
        return objectives.kl_warmup(t.get("warmup_steps", 500))
    if name == "mean-field":
        return objectives.mean_field(t.get("particles", 1))
    raise ValueError(f"unknown objective '{name}'; choose one of: {', '.join(OBJECTIVES)}")


def _spec(cfg: dict) -> ModelSpec:
    s = cfg.get("sizes", {})
    d = ModelSpec()
    return ModelSpec(int(s.get("latent_dim", d.latent_dim)),
                     tuple(int(h) for h in s.get("hidden", d.hidden)),
                     int(s.get("top_latent_dim", d.top_latent_dim)),
                     int(s.get("num_flows", d.num_flows)), int(s.get("channels", d.channels)))


def _num_classes(data) -> int | None:
    return None if data.train_labels is None else int(data.train_labels.max()) + 1


def label_kw(cfg: dict, data, split: str, rows=slice(None)) -> dict:
    """Keyword arguments of model and guide for rows of a split (the labels, if the model
    takes them)."""
    if cfg["model"] not in _LABELLED:
        return {}
    return {"y": getattr(data, f"{split}_labels")[rows]}


def build(cfg: dict, load_matrix=None):
    """(data, model, guide) from a configuration."""
    data = build_data(cfg["data"], binarize=cfg.get("binarize") or None,
                      path=cfg.get("data_path") or None, seed=cfg.get("seed", 0),
                      load_matrix=load_matrix)
    spec, nc = _spec(cfg), _num_classes(data)
    binary = data.binarization is not None or bool(
        ((data.train == 0) | (data.train == 1)).all())
    model = build_model(cfg["model"], spec, data.data_dim, image_shape=data.image_shape,
                        num_classes=nc, binary=binary)
    guide = build_guide(cfg["guide"], model, cfg["model"], spec, data.data_dim,
                        image_shape=data.image_shape, num_classes=nc)
    return data, model, guide


def train_run(cfg: dict, run: RunDir, *, resume: bool = False, quiet: bool = False,
              load_matrix=None):
    """Train the configured pair into ``run``; returns the :class:`ppvae.FitResult`."""
    from ..train.checkpoint import read_meta
    from ..train.fit import fit

    pyro.set_rng_seed(cfg.get("seed", 0))  # network initialization is part of the run
    data, model, guide = build(cfg, load_matrix)
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
    res = fit(model, guide, data, epochs=int(t.get("epochs", 30)),
              batch_size=int(t.get("batch_size", 64)), lr=float(t.get("lr", 3e-3)),
              objective=_objective(cfg), seed=cfg.get("seed", 0), device=cfg.get("device"),
              patience=t.get("patience"), restore_best=False, checkpoint=ckpt,
              jit=bool(t.get("jit", False)),
              resume=run.checkpoint if resume else None, quiet=quiet, on_epoch=on_epoch,
              batch_kw=label_kw(cfg, data, "train"), valid_batch_kw=label_kw(cfg, data, "valid"))
    if not prepared:  # the checkpoint was taken, with no epoch left to train
        _prepare_run(cfg, run, meta)
    _train_report(run, res, model, guide, data, cfg)
    return res


def _prepare_run(cfg: dict, run: RunDir, meta) -> None:
    """Write the run's config; on resume, bring metrics.jsonl to the checkpoint's epoch; drop
    extra guides trained on a model that is about to train further."""
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


def _train_report(run: RunDir, res, model, guide, data, cfg) -> None:
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
    x = data.test[:8].to(_device(model))
    kw = label_kw(cfg, data, "test", slice(0, 8))
    nc = guide_posterior(model, guide, x, run, "posterior_guide.nc", **kw)
    if nc:
        md += f"\nGuide posterior samples for test points 0-7: `{nc}` (ArviZ netCDF)."
    run.set_section("train", "Training", md, {
        "epochs": res.epochs, "steps": res.steps, "train_objective": res.train_objective,
        "valid_elbo": res.valid_elbo, "stopped": res.stopped, "message": res.message,
        "steps_per_second": res.steps_per_second, "wall_time": res.wall_time})


def _device(module) -> torch.device:
    p = next(iter(module.parameters()), None) if isinstance(module, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def guide_posterior(model, guide, x, run: RunDir, name: str, num_samples: int = 500,
                    **kwargs) -> str | None:
    """Save ``num_samples`` guide draws per row of ``x`` as ArviZ netCDF; None when the pair
    has no continuous latent to sample this way (e.g. a point-mass guide)."""
    from ..core.contract import ContractError
    from ..core.potential import Potential
    from ..infer.hmc import to_inference_data

    try:
        with torch.no_grad():
            pot = Potential(model, x, guide=guide, **kwargs)
            values, _ = pot.unflatten(pot.sample_init(num_samples))  # u: [S, N, D]
            per = pot.per_datapoint_values(values)  # site -> [S, N, size]
    except (ContractError, NotImplementedError, ValueError):
        return None
    to_inference_data({k: v.unsqueeze(0) for k, v in per.items()}).to_netcdf(run.file(name))
    return name


def open_run(path, load_matrix=None) -> Trained:
    """Rebuild the model and guide of a run and load its checkpoint (read-only)."""
    from ..core.contract import check_pair
    from ..core.device import resolve_device
    from ..train.checkpoint import load_checkpoint
    from ..train.objectives import ELBO
    from ..train.state import collect_params
    from .runs import RunError

    run = RunDir.open(path)
    cfg = run.read_config()
    if not run.checkpoint.is_file():
        raise RunError(f"{run.checkpoint} is missing: train the run first ('ppvae train')")
    data, model, guide = build(cfg, load_matrix)
    dev = resolve_device(cfg.get("device"))
    data = data._replace(**{f: getattr(data, f).to(dev) for f in _TENSORS
                            if getattr(data, f) is not None})
    for m in (model, guide):
        m.to(dev)
    x = data.train[:8]
    kw = label_kw(cfg, data, "train", slice(0, 8))
    info = check_pair(model, guide, x, **kw)
    params = collect_params(lambda: ELBO().loss(model, guide, x, info=info, kwargs=kw))
    load_checkpoint(run.checkpoint, params=params, model=model, guide=guide, restore_rng=False)
    return Trained(model, guide, data, cfg, run)


def evaluate_run(tr: Trained, *, split: str = "test", estimator: str = "iwae", k: int = 1000,
                 num_data: int | None = None, ais_steps: int = 200) -> dict:
    """ELBO and log p-hat(x) on a split by ``estimator`` ("iwae", "ais" or "both"); writes the
    report's evaluation section and the reconstructions figure. Returns the numbers."""
    from ..analysis.plots import reconstructions
    from ..core.bounds import elbo, iwae
    from ..infer.ais import ais

    if estimator not in ("iwae", "ais", "both"):
        raise ValueError(f"unknown estimator '{estimator}'; choose iwae, ais or both")
    pyro.set_rng_seed(tr.config.get("seed", 0))
    x = getattr(tr.data, split)[:num_data]
    kw = label_kw(tr.config, tr.data, split, slice(0, num_data))
    n, rows = x.shape[0], []
    with torch.no_grad():
        e = elbo(tr.model, tr.guide, x, 100, **kw)
        if estimator in ("iwae", "both"):
            b = iwae(tr.model, tr.guide, x, k, **kw)
            rows.append((f"IWAE_{k} from the guide", b.per_datapoint, b.stderr))
        if estimator in ("ais", "both"):
            r = ais(tr.model, x, num_steps=ais_steps, guide=tr.guide, **kw)
            rows.append((f"AIS, {ais_steps} steps from the guide", r.per_datapoint, r.stderr))
    fig = reconstructions(tr.model, tr.guide, x[:10], image_shape=tr.data.image_shape,
                          **{kk: v[:10] for kk, v in kw.items()})
    tr.run.save_figure(fig, "reconstructions")
    est = [{"estimator": label, "log_px": float(lp.mean()),
            "log_px_se": float(se.pow(2).sum().sqrt() / n)} for label, lp, se in rows]
    out = {"split": split, "num_data": n, "elbo": e.mean, "elbo_se": e.mean_stderr,
           **est[0], "estimates": est}
    md = ("| split | N | ELBO | log p̂(x) | estimator |\n|---|---|---|---|---|\n" + "".join(
        f"| {split} | {n} | {e.mean:.3f} ± {e.mean_stderr:.3f} | {r['log_px']:.3f} ± "
        f"{r['log_px_se']:.3f} | {r['estimator']} |\n" for r in est)
        + "\nNats per datapoint, mean ± Monte Carlo s.e. Reconstructions: `reconstructions.png`."
        + ("\n\nThe guide is a point mass: its 'ELBO' and 'IWAE' are the MAP objective "
           "log p(x, z*), not bounds on log p(x)." if tr.config["guide"] == "delta" else ""))
    tr.run.set_section("evaluate", "Evaluation", md, out)
    return out


def sample_run(tr: Trained, *, num: int = 64) -> str:
    """Prior samples figure (per label for a conditional model); writes the samples section."""
    from ..analysis.plots import sample_grid

    template = tr.data.test[:1]
    if tr.config["model"] in _LABELLED:
        c = int(tr.data.train_labels.max()) + 1
        per = c  # a c x c grid: one row per label
        y = torch.arange(c, device=template.device).repeat_interleave(per)  # [c * per]
        fig = sample_grid(tr.model, template, c * per, image_shape=tr.data.image_shape, y=y)
        what = f"{per} draws for each of {c} labels"
    else:
        fig = sample_grid(tr.model, template, num, image_shape=tr.data.image_shape)
        what = f"{num} draws from the prior"
    tr.run.save_figure(fig, "samples")
    tr.run.set_section("samples", "Samples", f"`samples.png`: decoded means of {what}.",
                       {"num": num, "what": what})
    return "samples.png"
