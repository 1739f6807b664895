"""What the user hands the command line, checked: data files, the device, a run's configuration.

* :class:`UsageError`: a problem with the user's input, reported in one line with exit code 2.
* :func:`load_matrix`: a ``.npy`` / ``.csv`` file as an [N, D] float64 tensor, refusing
  missing, unreadable, non-2-D and non-finite data in one line each.
* :func:`check_device`: a device the user named that is not there (e.g. ``cuda`` without CUDA).
* :func:`train_config`: the configuration of ``ppvae train`` and the run directory it goes to.
  Built-in defaults, then (with ``--resume``) the run's own ``config.toml``, then a
  ``--config`` TOML file, then the flags: each overrides the ones before it.
* :func:`build_data`: a :class:`ppvae.data.Dataset` from a data set name or a user's file.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .runs import read_toml
from .zoo import BuildError, default_guide

__all__ = ["UsageError", "build_data", "check_device", "load_matrix", "train_config"]

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


def load_matrix(path: str) -> torch.Tensor:
    """The numeric matrix [N, D] (N >= 2, finite) in a ``.npy``, ``.csv`` or ``.txt`` file."""
    import numpy as np

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


def check_device(device: str | None) -> None:
    """Raise :class:`UsageError` when ``device`` cannot be used here."""
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


def train_config(args) -> tuple[dict, Path]:
    """The configuration of ``ppvae train`` from its parsed ``args``, and the run directory.

    The directory is ``--out``, default ``runs/<model>-<guide>-<time>``.
    """
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
    cfg.setdefault("guide", default_guide(cfg["model"]))
    if "binarize" not in cfg and cfg["data"] in ("digits", "mnist", "fashion-mnist"):
        cfg["binarize"] = "static"
    if out is None:
        out = Path("runs") / f"{cfg['model']}-{cfg['guide']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, out


def _split_file(x: torch.Tensor, seed: int):
    """80 / 10 / 10 seeded split of a user's matrix."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, n // 10)
    return x[perm[2 * n_hold:]], x[perm[:n_hold]], x[perm[n_hold:2 * n_hold]]


def build_data(name: str, *, binarize: str | None = None, path: str | None = None,
               seed: int = 0, download: bool = True):
    """A :class:`ppvae.data.Dataset` from a data set name or a ``.npy`` / ``.csv`` file.

    A file is read by :func:`load_matrix`, and its rows are split 80 / 10 / 10 with ``seed``.
    """
    from ..data import DATASETS, Dataset, load_dataset
    from ..data import binarize as binarize_images

    if name in DATASETS:
        try:
            return load_dataset(name, binarize=binarize, path=path, seed=seed,
                                download=download)
        except FileNotFoundError as e:
            raise BuildError(f"data file missing: {e}") from e
        except (ValueError, RuntimeError) as e:
            raise BuildError(f"data set '{name}': {e}") from e
    if Path(name).suffix in (".npy", ".csv", ".txt"):
        x = load_matrix(name).to(torch.float32)
        if binarize is not None and binarize != "dynamic":
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise BuildError(f"{name}: binarize needs values in [0, 1]")
            x = binarize_images(x, binarize, seed=seed)
        train, valid, test = _split_file(x, seed)
        return Dataset(Path(name).name, train, valid, test, None, None, None, None, binarize)
    raise BuildError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}, or a "
                     ".npy / .csv file of rows")
