"""The ``ppvae`` command line.

Subcommands:
    train     train a model and guide into a run directory (config.toml, metrics.jsonl,
              checkpoint, report); --resume continues an interrupted run
    evaluate  log p-hat(x) by IWAE or AIS on a split, and a reconstructions figure
    gaps      the inference-gap report for a run and more guide families, optional MCMC
    sample    images from the prior (one row per label for a conditional model)
    demo      the main job: VAE on the bundled digits, gaps for diagonal and flow guides,
              MCMC comparison, report with figures
    ppca      the PPCA study on synthetic data or on a user's .npy/.csv file
    info      versions, the device ppvae would use, where data is looked for

Configuration comes from flags or a TOML file (``--config``; flags override it). Errors a user
can cause print one line naming the problem and exit with code 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

# config keys: top level, [sizes] and [train] (the run directory's config.toml has this shape)
_TOP = ("model", "guide", "data", "data_path", "binarize", "seed", "device")
_SIZES = ("latent_dim", "hidden", "top_latent_dim", "num_flows", "channels")
_TRAIN = ("objective", "epochs", "batch_size", "lr", "particles", "iwae_k", "beta",
          "warmup_steps", "patience", "jit")
_DEFAULTS = {"model": "vae", "data": "digits", "seed": 0, "device": "auto",
             "sizes": {"latent_dim": 4, "hidden": [128]},
             "train": {"objective": "elbo", "epochs": 30, "batch_size": 64, "lr": 3e-3}}


class UsageError(Exception):
    """A problem with the user's input, reported in one line with exit code 2."""


def _load_matrix(path: str):
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"data file not found: {p}")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        else:
            raise UsageError(f"{p}: unsupported data file type '{p.suffix}' (use .npy or .csv)")
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{p}: could not read a numeric matrix ({e})") from e
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise UsageError(f"{p}: expected a 2-D array [N, D] with N >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UsageError(f"{p}: the data contain non-finite values")
    return torch.as_tensor(arr, dtype=torch.float64)


def _check_device(device: str | None) -> None:
    from ..core.device import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as e:
        raise UsageError(str(e)) from e


def _merge(base: dict, over: dict, where: str) -> dict:
    out = {**base, "sizes": dict(base.get("sizes", {})), "train": dict(base.get("train", {}))}
    for k, v in over.items():
        if k in ("sizes", "train"):
            if not isinstance(v, dict):
                raise UsageError(f"{where}: '{k}' must be a table")
            allowed = _SIZES if k == "sizes" else _TRAIN
            bad = sorted(set(v) - set(allowed))
            if bad:
                raise UsageError(f"{where}: unknown key(s) {bad} in [{k}]; valid: "
                                 f"{', '.join(allowed)}")
            out[k].update(v)
        elif k in _TOP:
            out[k] = v
        else:
            raise UsageError(f"{where}: unknown key '{k}'; valid: {', '.join(_TOP)}, "
                             "[sizes], [train]")
    return out


def _train_config(args) -> tuple[dict, Path]:
    from .runs import read_toml
    from .zoo import DEFAULT_GUIDE

    cfg = _merge(_DEFAULTS, {}, "defaults")
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
        if not (out / "config.toml").is_file():
            raise UsageError(f"cannot resume: {out / 'config.toml'} not found")
        cfg = _merge(cfg, read_toml(out / "config.toml"), str(out / "config.toml"))
    if args.config:
        cfg = _merge(cfg, read_toml(args.config), args.config)
    flags = {k: getattr(args, k) for k in _TOP if getattr(args, k, None) is not None}
    flags["sizes"] = {k: getattr(args, k) for k in _SIZES if getattr(args, k, None) is not None}
    flags["train"] = {k: getattr(args, k) for k in _TRAIN if getattr(args, k, None) is not None}
    cfg = _merge(cfg, flags, "command line")
    cfg.setdefault("guide", DEFAULT_GUIDE.get(cfg["model"], "diag"))
    if "binarize" not in cfg and cfg["data"] in ("digits", "mnist", "fashion-mnist"):
        cfg["binarize"] = "static"
    if out is None:
        out = Path("runs") / f"{cfg['model']}-{cfg['guide']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, out


def _cmd_train(args) -> int:
    from .runs import RunDir
    from .workflow import train_run
    from .zoo import check_names

    cfg, out = _train_config(args)
    if not args.resume and (out / "config.toml").exists():
        raise UsageError(f"{out} already holds a run (config.toml); continue it with --resume "
                         "or choose another --out")
    check_names(cfg["model"], cfg["guide"])
    _check_device(cfg.get("device"))
    run = RunDir.create(out)
    try:
        res = train_run(cfg, run, resume=args.resume, quiet=args.quiet, load_matrix=_load_matrix)
    except KeyboardInterrupt:
        print(f"ppvae: interrupted; the last finished epoch is saved. Continue with: "
              f"ppvae train --out {run.path} --resume", file=sys.stderr)
        return 130
    valid = f", validation ELBO {res.valid_elbo[-1]:.3f}" if res.valid_elbo else ""
    print(f"trained {res.epochs} epochs ({res.stopped}){valid}")
    print(f"run directory: {run.path}\nreport: {run.file('report.md')}")
    return 0


def _open(args):
    from .workflow import open_run

    return open_run(args.run, load_matrix=_load_matrix)


def _cmd_evaluate(args) -> int:
    from .workflow import evaluate_run

    tr = _open(args)
    out = evaluate_run(tr, split=args.split, estimator=args.estimator, k=args.k,
                       num_data=args.num_data, ais_steps=args.ais_steps)
    print(f"{out['split']} (N = {out['num_data']}): ELBO {out['elbo']:.3f} ± "
          f"{out['elbo_se']:.3f}" + "".join(f", log p(x) {r['log_px']:.3f} ± "
                                            f"{r['log_px_se']:.3f} ({r['estimator']})"
                                            for r in out["estimates"]))
    print(f"report: {tr.run.file('report.md')}")
    return 0


def _cmd_gaps(args) -> int:
    from .study import gaps_run

    tr = _open(args)
    report = gaps_run(tr, args.guides, num_data=args.num_data, local_steps=args.local_steps,
                      num_samples=args.samples, log_px=args.log_px, k=args.k,
                      ais_steps=args.ais_steps, guide_epochs=args.guide_epochs,
                      mcmc_points=args.mcmc, mcmc_warmup=args.mcmc_warmup,
                      mcmc_samples=args.mcmc_samples, quiet=args.quiet)
    print(report.to_markdown())
    print(f"report: {tr.run.file('report.md')}")
    return 0


def _cmd_sample(args) -> int:
    from .workflow import sample_run

    tr = _open(args)
    print(f"wrote {tr.run.file(sample_run(tr, num=args.num))}")
    return 0


def _cmd_demo(args) -> int:
    from .study import demo

    _check_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    res = demo(out, seed=args.seed, quiet=args.quiet, epochs=args.epochs,
               flow_epochs=args.flow_epochs, num_data=args.num_data,
               local_steps=args.local_steps, k=args.k, mcmc_points=args.mcmc,
               latent_dim=args.latent_dim, hidden=args.hidden, ais_steps=args.ais_steps,
               mcmc_warmup=args.mcmc_warmup, mcmc_samples=args.mcmc_samples,
               device=args.device)
    print("\n" + res.table)
    print(f"finished in {res.seconds:.0f} s; report: {res.run / 'report.md'} "
          f"(figures and ArviZ netCDF files in {res.run})")
    return 0


def _cmd_ppca(args) -> int:
    from .ppca import run_ppca_study

    x = _load_matrix(args.data) if args.data else None
    if x is not None and not 0 < args.latent_dim < x.shape[1]:
        raise UsageError(
            f"--latent-dim must be between 1 and D - 1 = {x.shape[1] - 1}, got {args.latent_dim}"
        )
    study = run_ppca_study(
        x, latent_dim=args.latent_dim, num_data=args.num_data, data_dim=args.data_dim,
        steps=args.steps, num_samples=args.num_samples, iwae_k=args.iwae_k, seed=args.seed,
    )
    print(study.to_markdown())
    return 0


def _cmd_info(args) -> int:
    import arviz
    import pyro
    import torch

    from .. import __version__
    from ..core.device import resolve_device
    from ..data import DATASETS, default_root

    print(f"ppvae {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, arviz {arviz.__version__}")
    print(f"device: {resolve_device()} (CUDA available: {torch.cuda.is_available()})")
    print(f"data sets: {', '.join(DATASETS)} (digits is bundled); downloads go to "
          f"{default_root()} (set PPVAE_DATA to change)")
    return 0


def _parser() -> argparse.ArgumentParser:
    from .args import add_commands

    p = argparse.ArgumentParser(
        prog="ppvae", description="Honest inference for deep latent-variable models: train, "
        "evaluate, inference-gap reports with MCMC references, samples. Each command works "
        "on a run directory; 'ppvae demo' runs the main job on the bundled digits.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: 1 for demo, torch's choice otherwise)")
    sub = p.add_subparsers(dest="command", required=True)
    add_commands(sub, {"train": _cmd_train, "evaluate": _cmd_evaluate, "gaps": _cmd_gaps,
                       "sample": _cmd_sample, "demo": _cmd_demo, "ppca": _cmd_ppca,
                       "info": _cmd_info})
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..core.contract import ContractError
    from ..train.checkpoint import CheckpointError
    from ..train.speedup.capture import CaptureError
    from .runs import RunError
    from .zoo import BuildError

    return (UsageError, BuildError, RunError, CheckpointError, ContractError, CaptureError,
            ValueError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")  # figures go to files; no display needed
        threads = args.threads or (1 if args.command == "demo" else None)
        if threads:  # the demo's networks are tiny: one thread beats OpenMP spinning
            import torch

            torch.set_num_threads(threads)
        return args.func(args)
    except _user_errors() as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split())  # one line
        if len(msg) > 500:
            msg = msg[:500] + " ... (--debug shows all)"
        print(f"ppvae: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
