"""What the user hands the command line, checked: data files, the device, a run's configuration.

* :class:`UsageError`: a problem with the user's input, reported in one line with exit code 2.
* :func:`load_matrix`: a ``.npy`` / ``.csv`` / ``.txt`` file as an [N, D] float64 tensor (a
  header row of column names is skipped), refusing missing, unreadable, non-numeric (strings,
  complex; a cell that is not a number is named by line and column), non-2-D, empty and
  non-finite data in one line each (:func:`ppvae.data.read_table`).
* :func:`positive_int`, :func:`nonnegative_int`, :func:`positive_float`: argparse types that
  refuse out-of-range flag values (``--num 0``, ``--threads -1``) at parse time.
* :func:`check_device`: a device the user named that is not there (e.g. ``cuda`` without CUDA).
* :func:`train_config`: the configuration of ``ppvae train`` and the run directory it goes to.
  Built-in defaults (those of :func:`ppvae.fit` for the training options,
  :func:`train_defaults`), then (with ``--resume``) the run's own ``config.toml``, then a
  ``--config`` TOML file, then the flags: each overrides the ones before it, and each is
  checked against the typed schema of :mod:`ppvae.app.config` before anything is written.
  :func:`add_data_arguments` adds train's flags for the user's data and the likelihood.
* :func:`build_data`: a :class:`ppvae.data.Dataset` from a data set name, a folder of images
  or a user's file; :func:`load_data` the same from a run's configuration. Their errors name
  the command line's flags (``--data-path``, ``--image-size``, ...) where the data API's
  messages name its arguments.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .config import (
    BINARIZE,
    IMAGE_MODES,
    SCHEMA,
    Layer,
    check_combination,
    check_layer,
    data_kind,
    source_of,
)
from .runs import read_toml, toml_string
from .zoo import (
    DEFAULT_NOISE,
    GUIDES,
    LIKELIHOODS,
    MODELS,
    OBJECTIVE_DEFAULTS,
    BuildError,
    ModelSpec,
    default_guide,
)

__all__ = ["DATA_HELP", "TRAIN_DEFAULTS", "UsageError", "add_data_arguments", "build_data",
           "check_device", "load_data", "load_matrix", "nonnegative_int", "positive_float",
           "positive_int", "train_config", "train_defaults"]

# config keys: top level, [sizes] and [train] (the run directory's config.toml has this shape)
_TOP, _SIZES, _TRAIN = (tuple(k for t, k in SCHEMA if t == table)
                        for table in (None, "sizes", "train"))
_IMAGE_SETS = ("digits", "mnist", "fashion-mnist")  # grey levels: binarized by default


def _fit_defaults() -> dict[str, Any]:
    """epochs, batch_size and lr as :func:`ppvae.fit` defaults them (one source of truth)."""
    from ..train.fit import fit

    params = inspect.signature(fit).parameters
    return {k: params[k].default for k in ("epochs", "batch_size", "lr")}


_SPEC = ModelSpec()
# [train] keys when a config has none: ppvae.fit's defaults
TRAIN_DEFAULTS: Mapping[str, Any] = MappingProxyType({"objective": "elbo", **_fit_defaults()})
_DEFAULTS = {"model": "vae", "data": "digits", "seed": 0, "device": "auto",
             "sizes": {"latent_dim": _SPEC.latent_dim, "hidden": list(_SPEC.hidden)},
             "train": dict(TRAIN_DEFAULTS)}
DATA_HELP = ("digits (bundled), binarized-mnist, mnist, fashion-mnist, ppca; a folder of "
             "images (flat, or one subfolder per class: labels); or a .npy/.csv/.txt file of "
             "rows (a CSV header row is allowed)")


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

    ``.npy`` (no pickles), ``.csv`` or whitespace-separated ``.txt``, a first row of column
    names allowed (:func:`ppvae.data.read_table`). Anything else, a missing or unreadable file,
    strings, complex numbers, another shape or non-finite values raise :class:`UsageError`
    naming the file and the problem (for text files, the line and column).
    """
    from ..data.tables import read_table

    try:
        table = read_table(path, min_rows=min_rows)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e
    return torch.as_tensor(table.values)


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


def train_defaults() -> dict[str, Any]:
    """The built-in default of each ``ppvae train`` flag (by its dest), for ``--help``.

    The flags themselves default to None so that a ``--config`` file or a resumed run's
    config.toml can set them; these are the values used when none does. The training options
    are :func:`ppvae.fit`'s; the objectives' options those of :data:`ppvae.app.zoo.
    OBJECTIVE_DEFAULTS`.
    """
    d = ModelSpec()
    usual = ", ".join(f"{m}: {e.default_guide}" for m, e in MODELS.items())
    return {
        **{k: v for k, v in _DEFAULTS.items() if not isinstance(v, dict)},
        **_DEFAULTS["train"], **_DEFAULTS["sizes"],  # type: ignore[dict-item]
        "guide": f"the model's usual ({usual})",
        "binarize": "static for digits, mnist, fashion-mnist and image folders unless "
                    "--likelihood is not bernoulli; none otherwise",
        "likelihood": "bernoulli for 0/1 or binarized data, else gaussian, which only vae "
                      "has",
        "image_mode": "as found: L when every image is grey, else RGB",
        "top_latent_dim": d.top_latent_dim, "num_flows": d.num_flows, "channels": d.channels,
        "particles": OBJECTIVE_DEFAULTS["particles"], "iwae_k": OBJECTIVE_DEFAULTS["iwae_k"],
        "beta": f"{OBJECTIVE_DEFAULTS['beta']}, the command line's own: ppvae.beta_vae has "
                "none",
        "warmup_steps": f"{OBJECTIVE_DEFAULTS['warmup_steps']}, the command line's own: "
                        "ppvae.kl_warmup has none",
        "patience": "none, no early stopping",
        "mmd_weight": OBJECTIVE_DEFAULTS["mmd_weight"], "kernel": OBJECTIVE_DEFAULTS["kernel"],
        "l1": "0.1 for sparse-ae", "top_k": "none: every code unit",
        "code_activation": "relu, or linear with --top-k",
        "target_rate": "none: no rate penalty", "sparsity_weight": 1.0,
        "corruption": "none (masking for denoising-ae)", "noise": DEFAULT_NOISE,
    }


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``ppvae train``'s flags for the likelihood and the user's data (each unless present).

    ``--likelihood``, ``--image-size H W`` and ``--image-mode`` (a folder of images),
    ``--image-shape H W`` (a file of rows that are images); all feed :func:`train_config`
    (config keys ``likelihood``, ``image_size``, ``image_mode``, ``image_shape``). The help of
    existing ``--data``, ``--model`` and ``--guide`` flags is set to say what they accept
    (data folders and files, a user's ``module:function``).
    """
    have = p._option_string_actions
    if "--binarize" in have:
        have["--binarize"].choices = BINARIZE
        have["--binarize"].help = ("static (a seeded Bernoulli draw per pixel), threshold (> 0.5), "
                                   "dynamic (a fresh draw each epoch) or none (keep the grey "
                                   "levels)")
    if "--data" in have:
        have["--data"].help = f"{DATA_HELP} (default: digits)"
    for flag, table in (("--model", MODELS), ("--guide", GUIDES)):
        if flag in have:
            default = "vae" if flag == "--model" else "the model's usual"
            have[flag].help = (f"one of {', '.join(table)}, or your own as module:function "
                               f"(see ppvae.app.zoo) (default: {default})")
    if "--likelihood" not in have:
        p.add_argument("--likelihood", choices=LIKELIHOODS,
                       help="the model's p(x | z); recorded in config.toml")
    if "--image-size" not in have:
        p.add_argument("--image-size", dest="image_size", type=positive_int, nargs=2,
                       metavar=("H", "W"), help="folder of images: resize every image to H x W "
                       "(needed when their sizes differ)")
    if "--image-mode" not in have:
        p.add_argument("--image-mode", dest="image_mode", choices=IMAGE_MODES,
                       help="folder of images: L (one grey channel) or RGB")
    if "--image-shape" not in have:
        p.add_argument("--image-shape", dest="image_shape", type=positive_int, nargs="+",
                       metavar="N", help=".npy/.csv/.txt data: draw each row as an H W (or "
                       "C H W) image in figures")


def train_config(args) -> tuple[dict, Path]:
    """The configuration of ``ppvae train`` from its parsed ``args``, and the run directory.

    Layers (defaults, the run's config.toml with ``--resume``, ``--config``, flags) are each
    checked against :data:`ppvae.app.config.SCHEMA`, merged, and the merged configuration's
    combination checked (:func:`ppvae.app.config.check_combination`); nothing is written. The
    directory is ``--out``, default ``runs/<model>-<guide>-<time>``. Grey-level image data
    (digits, MNIST, Fashion-MNIST, a folder of images) are binarized statically unless the
    configuration says otherwise or asks for a likelihood other than Bernoulli.
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
    flags: dict[str, Any] = {k: _plain(getattr(args, k)) for k in _TOP
                             if getattr(args, k, None) is not None}
    for table, keys in (("sizes", _SIZES), ("train", _TRAIN)):
        given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
        if given:
            flags[table] = {k: _plain(v) for k, v in given.items()}
    layers.append(_layer("command line", flags))
    cfg: dict = {}
    for layer in layers:
        cfg = _merge(cfg, layer.values)
    cfg.setdefault("guide", default_guide(cfg["model"]))
    _model_defaults(cfg, layers)
    if ("binarize" not in cfg and cfg.get("likelihood", "bernoulli") == "bernoulli"
            and (cfg["data"] in _IMAGE_SETS or data_kind(cfg["data"]) == "folder")):
        cfg["binarize"] = "static"
    check_combination(cfg, layers)
    for key in ("data", "data_path"):
        if isinstance(cfg.get(key), str):
            toml_string(cfg[key], key)  # a name TOML cannot hold: refused before any write
    if out is None:
        out = Path("runs") / f"{cfg['model']}-{cfg['guide']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, out


def _model_defaults(cfg: dict, layers: list[Layer]) -> None:
    """The model's own defaults (:attr:`ppvae.app.zoo.ModelEntry.defaults`) for unset keys."""
    if cfg["model"] not in MODELS:
        return  # an unknown name: check_combination names it
    for table, values in MODELS[cfg["model"]].defaults.items():
        for key, value in values.items():
            if source_of(layers, table, key) is None:
                cfg.setdefault(table, {})[key] = value


def _plain(value: Any) -> Any:
    """A flag's value as TOML holds it (argparse's tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


# the data API's spelling of a fix -> the command line's flag
_CLI_WORDS = (
    (re.compile(r"\bpass path="), "pass --data-path"),
    (re.compile(r"\bsize=\(H, W\)"), "--image-size H W"),
    (re.compile(r"\bbinarize='(\w+)'"), r"--binarize \1"),
    (re.compile(r"\bno binarize option\b"), "no --binarize"),
    (re.compile(r"^binarize needs\b"), "--binarize needs"),
    (re.compile(r"\bimage_shape (\([^)]*\))"), r"--image-shape \1"),
)


def cli_words(message: str) -> str:
    """A data API error message with the command line's flags for the API's arguments."""
    for pattern, flag in _CLI_WORDS:
        message = pattern.sub(flag, message)
    return message


def build_data(name: str, *, binarize: str | None = None, path: str | None = None,
               seed: int = 0, download: bool = True, image_size: Sequence[int] | None = None,
               image_mode: str | None = None, image_shape: Sequence[int] | None = None,
               progress: bool | None = None):
    """A :class:`ppvae.data.Dataset` from a data set name, a folder of images or a file.

    Args:
        name: one of :data:`ppvae.data.DATASETS`; a folder of images
            (:func:`ppvae.data.load_image_folder`); or a ``.npy`` / ``.csv`` / ``.txt`` file
            of rows (:func:`ppvae.data.load_table`). User data are split 80 / 10 / 10 with
            ``seed``.
        binarize: None (or ``"none"``), ``"static"``, ``"threshold"`` or ``"dynamic"``.
        path: binarized MNIST's ``.npz`` file or folder of ``.amat`` files.
        seed: seeds the split and the binarization.
        download: fetch a named data set's missing files.
        image_size: ``(H, W)`` to resize a folder's images to.
        image_mode: ``"L"`` or ``"RGB"`` for a folder's images (None: as found).
        image_shape: ``(H, W)`` or ``(C, H, W)``: the rows of a file are images.
        progress: a bar while a folder's images are read (None: only on a terminal).

    Raises:
        BuildError: the data cannot be read, named with the problem; suggestions name the
            command line's flags.
    """
    from ..data import DATASETS, load_dataset, load_image_folder, load_table

    binarize = None if binarize == "none" else binarize  # the configuration's "keep grey"
    kind = data_kind(name)
    try:
        if name in DATASETS:
            return load_dataset(name, binarize=binarize, path=path, seed=seed,
                                download=download)
        if kind == "folder":
            return load_image_folder(name, size=image_size, mode=image_mode, binarize=binarize,
                                     seed=seed, progress=progress)
        if kind == "table":
            return load_table(name, image_shape=image_shape, binarize=binarize, seed=seed)
    except FileNotFoundError as e:
        raise BuildError(cli_words(f"data file missing: {e}" if name in DATASETS else str(e))
                         ) from e
    except (ValueError, RuntimeError) as e:
        raise BuildError(cli_words(f"data set '{name}': {e}" if name in DATASETS else str(e))
                         ) from e
    suffix = Path(name).suffix
    if suffix:
        raise BuildError(f"{name}: unsupported data file type '{suffix}'; use a .npy, .csv or "
                         ".txt file of rows, a folder of images, or one of the data sets: "
                         f"{', '.join(DATASETS)}")
    raise BuildError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}, a "
                     "folder of images, or a .npy / .csv file of rows")


def load_data(cfg: dict, *, progress: bool | None = None):
    """The :class:`ppvae.data.Dataset` of a run's configuration (:func:`build_data`).

    Reads ``data``, ``data_path``, ``binarize``, ``seed``, ``image_size``, ``image_mode`` and
    ``image_shape``. For a folder of images it records the colour mode it found as
    ``cfg["image_mode"]``, so that config.toml keeps it and the run reopens the same way even
    if images are added later.
    """
    data = build_data(cfg["data"], binarize=cfg.get("binarize") or None,
                      path=cfg.get("data_path") or None, seed=cfg.get("seed", 0),
                      image_size=cfg.get("image_size"), image_mode=cfg.get("image_mode"),
                      image_shape=cfg.get("image_shape"), progress=progress)
    if data_kind(cfg["data"]) == "folder" and data.image_shape is not None:
        cfg.setdefault("image_mode", "L" if len(data.image_shape) == 2 else "RGB")
    return data
