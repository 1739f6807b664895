"""What the user hands the command line, checked: data files, the device, a run's configuration.

* :class:`UsageError`: a problem with the user's input, reported in one line with exit code 2.
* :func:`load_matrix`: a ``.npy`` / ``.csv`` file as an [N, D] float64 tensor, refusing
  missing, unreadable, non-numeric (strings, complex), non-2-D, empty and non-finite data in
  one line each.
* :func:`positive_int`, :func:`nonnegative_int`, :func:`positive_float`: argparse types that
  refuse out-of-range flag values (``--num 0``, ``--threads -1``) at parse time.
* :func:`check_device`: a device the user named that is not there (e.g. ``cuda`` without CUDA).
* :func:`train_config`: the configuration of ``ppvae train`` and the run directory it goes to.
  Built-in defaults, then (with ``--resume``) the run's own ``config.toml``, then a
  ``--config`` TOML file, then the flags: each overrides the ones before it, and each is
  checked against the typed schema of :mod:`ppvae.app.config` before anything is written.
* :func:`build_data`: a :class:`ppvae.data.Dataset` from a data set name or a user's file.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import SCHEMA, Layer, check_combination, check_layer
from .runs import read_toml, toml_string
from .zoo import BuildError, default_guide

__all__ = ["UsageError", "build_data", "check_device", "load_matrix", "nonnegative_int",
           "positive_float", "positive_int", "train_config"]

# config keys: top level, [sizes] and [train] (the run directory's config.toml has this shape)
_TOP, _SIZES, _TRAIN = (tuple(k for t, k in SCHEMA if t == table)
                        for table in (None, "sizes", "train"))
_DEFAULTS = {"model": "vae", "data": "digits", "seed": 0, "device": "auto",
             "sizes": {"latent_dim": 4, "hidden": [128]},
             "train": {"objective": "elbo", "epochs": 30, "batch_size": 64, "lr": 3e-3}}


class UsageError(Exception):
    """A problem with the user's input, reported in one line with exit code 2."""


def _int_type(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = _int_type(1)  # argparse type: an integer >= 1
nonnegative_int = _int_type(0)  # argparse type: an integer >= 0


def positive_float(text: str) -> float:
    """Argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def load_matrix(path: str, *, min_rows: int = 2) -> torch.Tensor:
    """The real numeric matrix [N, D] (N >= ``min_rows``, D >= 1, finite) in a file.

    ``.npy`` (no pickles), ``.csv`` or whitespace-separated ``.txt``. Anything else, a missing
    or unreadable file, strings, complex numbers, another shape or non-finite values raise
    :class:`UsageError` naming the file and the problem.
    """
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise UsageError(f"data file not found: {p}")
    if not p.is_file():
        raise UsageError(f"data file {p} is not a file")
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
    if not isinstance(arr, np.ndarray):
        raise UsageError(f"{p}: expected one array, got {type(arr).__name__}")
    if arr.dtype.kind == "c":
        raise UsageError(f"{p}: the data are complex numbers ({arr.dtype}); ppvae models real "
                         "values")
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{p}: the data are not numbers (dtype {arr.dtype})")
    if arr.ndim != 2 or arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise UsageError(f"{p}: expected a 2-D array [N, D] with N >= {min_rows} rows and "
                         f"D >= 1 columns, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UsageError(f"{p}: the data contain non-finite values")
    return torch.as_tensor(arr.astype(np.float64))


def check_device(device: str | None) -> None:
    """Raise :class:`UsageError` when ``device`` cannot be used here."""
    from ..core.device import resolve_device

    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as e:
        if "Expected one of" in str(e) or "Invalid device" in str(e):
            raise UsageError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:<index> or "
                             "mps") from e
        raise UsageError(str(e)) from e


def _merge(base: dict, over: Mapping[str, Any]) -> dict:
    out = {**base, "sizes": dict(base.get("sizes", {})), "train": dict(base.get("train", {}))}
    for k, v in over.items():
        if k in ("sizes", "train"):
            out[k].update(v)
        else:
            out[k] = v
    return out


def _layer(where: str, values: Mapping[str, Any]) -> Layer:
    layer = Layer(where, values)
    check_layer(layer)
    return layer


def train_config(args) -> tuple[dict, Path]:
    """The configuration of ``ppvae train`` from its parsed ``args``, and the run directory.

    Layers (defaults, the run's config.toml with ``--resume``, ``--config``, flags) are each
    checked against :data:`ppvae.app.config.SCHEMA`, merged, and the merged configuration's
    combination checked (:func:`ppvae.app.config.check_combination`); nothing is written. The
    directory is ``--out``, default ``runs/<model>-<guide>-<time>``.
    """
    layers = [_layer("built-in defaults", _DEFAULTS)]
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
        if not (out / "config.toml").is_file():
            raise UsageError(f"cannot resume: {out / 'config.toml'} not found")
        layers.append(_layer(str(out / "config.toml"), read_toml(out / "config.toml")))
    if args.config:
        layers.append(_layer(args.config, read_toml(args.config)))
    flags: dict[str, Any] = {k: getattr(args, k) for k in _TOP
                             if getattr(args, k, None) is not None}
    for table, keys in (("sizes", _SIZES), ("train", _TRAIN)):
        given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
        if given:
            flags[table] = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    layers.append(_layer("command line", flags))
    cfg: dict = {}
    for layer in layers:
        cfg = _merge(cfg, layer.values)
    cfg.setdefault("guide", default_guide(cfg["model"]))
    if "binarize" not in cfg and cfg["data"] in ("digits", "mnist", "fashion-mnist"):
        cfg["binarize"] = "static"
    check_combination(cfg, layers)
    for key in ("data", "data_path"):
        if isinstance(cfg.get(key), str):
            toml_string(cfg[key], key)  # a name TOML cannot hold: refused before any write
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
    suffix = Path(name).suffix
    if suffix and suffix not in (".npy", ".csv", ".txt"):
        raise BuildError(f"{name}: unsupported data file type '{suffix}'; use a .npy, .csv or "
                         f".txt file of rows, or one of the data sets: {', '.join(DATASETS)}")
    if suffix:
        # 80 / 10 / 10: train, validation and test need a row each
        x = load_matrix(name, min_rows=3).to(torch.float32)
        if binarize is not None and binarize != "dynamic":
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise BuildError(f"{name}: binarize needs values in [0, 1]")
            x = binarize_images(x, binarize, seed=seed)
        train, valid, test = _split_file(x, seed)
        return Dataset(Path(name).name, train, valid, test, None, None, None, None, binarize)
    raise BuildError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}, or a "
                     ".npy / .csv file of rows")
