"""The typed schema of a run's configuration, and its check.

A ``ppvae train`` configuration comes in layers, each overriding the one before: the built-in
defaults, the run's own ``config.toml`` (with ``--resume``), a ``--config`` TOML file, the
flags. Every layer is checked against one schema (:data:`SCHEMA`) before anything is built or
written, and an error names the key and the layer it came from (the file, or the flag):

* types are exact: no string, float or boolean is cast to an integer (``epochs = "2"``,
  ``epochs = 1.7`` and ``epochs = true`` are refused), and a boolean is ``true`` or ``false``
  (``jit = "no"`` is refused rather than read as true); an integer is accepted where a float
  is asked for;
* ranges: sizes, epochs and counts at least 1, a finite learning rate above 0, a seed that
  torch and numpy both accept;
* names: model, guide, objective, likelihood and binarization among the zoo's
  (:mod:`ppvae.app.zoo`); a model or guide may also be the user's own, ``module:function``;
* the combination (:func:`check_combination`): the guide fits the model, the likelihood is one
  the model has, and a size, an objective option or a data option that the chosen model,
  guide, objective and data would ignore is refused rather than dropped without a word
  (``--iwae-k 50`` with objective ``elbo``, ``--image-size`` with a CSV file).

Data keys: ``data`` (a data set name, a folder of images, or a ``.npy`` / ``.csv`` / ``.txt``
file), ``data_path`` (binarized MNIST's files), ``binarize``, ``likelihood`` (written by
``ppvae train`` once resolved, so config.toml records it), ``image_size`` ``[H, W]`` and
``image_mode`` (``"L"`` or ``"RGB"``) for a folder of images, ``image_shape`` ``[H, W]`` or
``[C, H, W]`` for a file of rows that are images.

What needs the data (labels for a conditional pair, whether the likelihood fits the values,
the pair's contract) is checked when the run is built, still before the run directory is
written.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..guides.sparse import CODE_ACTIVATIONS
from ..train.corruption import CORRUPTIONS
from ..train.wae import KERNELS
from .zoo import (
    GUIDES,
    LIKELIHOODS,
    MODELS,
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    check_names,
    is_user_name,
)

__all__ = ["SCHEMA", "ConfigError", "Field", "Layer", "check_combination", "check_layer",
           "data_kind", "describe", "source_of"]

BINARIZE = ("static", "threshold", "dynamic", "none")  # none: keep grey levels
IMAGE_MODES = ("L", "RGB")
TABLE_SUFFIXES = (".npy", ".csv", ".txt")
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


class ConfigError(ValueError):
    """A configuration value of the wrong type, out of range, or in a bad combination."""


@dataclass(frozen=True)
class Field:
    """One configuration key: its type, range or choices, and its flag."""

    kind: str  # "int", "float", "str", "bool" or "ints" (a non-empty list of integers)
    low: float | None = None  # smallest allowed value (ints: of every element)
    high: float | None = None
    choices: Sequence[str] | None = None
    above: bool = False  # the value must be strictly above ``low``
    lengths: Sequence[int] | None = None  # "ints": the lengths allowed (None: any)
    user_names: bool = False  # "str": a user's module:function is allowed besides the choices

    def check(self, value: Any) -> str | None:
        """None when ``value`` fits, else what is wrong (to follow the key's name)."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                return f"must be true or false, got {_show(value)}"
            return None
        if self.kind == "str":
            if not isinstance(value, str):
                return f"must be a string, got {_show(value)}"
            if (self.choices is not None and value not in self.choices
                    and not (self.user_names and is_user_name(value))):
                own = ", or module:function for your own" if self.user_names else ""
                return (f"\0unknown {{key}} '{value}'; choose one of: "
                        f"{', '.join(self.choices)}{own}")
            if not value:
                return "must not be empty"
            return None
        if self.kind == "ints":
            if not isinstance(value, list | tuple) or not value:
                return f"must be a non-empty list of integers, e.g. [128], got {_show(value)}"
            for v in value:
                bad = self._number(v, integer=True)
                if bad:
                    return f"must be a list of integers >= {_num(self.low)}; an element {bad}"
            if self.lengths is not None and len(value) not in self.lengths:
                return (f"must be a list of {' or '.join(map(str, self.lengths))} integers, got "
                        f"{len(value)}: {list(value)!r}")
            return None
        return self._number(value, integer=self.kind == "int")

    def _number(self, value: Any, *, integer: bool) -> str | None:
        want = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {want}, got {_show(value)}"
        if integer and not isinstance(value, int):
            return f"must be {want}, got {_show(value)}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return (f"must be {want} {'>' if self.above else '>='} {_num(self.low)}, got "
                    f"{value}")
        if self.high is not None and value > self.high:
            return f"must be {want} <= {_num(self.high)}, got {value}"
        return None


def _num(x: float | None) -> str:
    """A bound as written: 1, not 1.0."""
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    """A value as the user wrote it, with its TOML type."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return f"the list {list(value)!r}"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


# (table, key) -> Field; table None: the top level
SCHEMA: Mapping[tuple[str | None, str], Field] = {
    (None, "model"): Field("str", choices=tuple(MODELS), user_names=True),
    (None, "guide"): Field("str", choices=tuple(GUIDES), user_names=True),
    (None, "data"): Field("str"),
    (None, "data_path"): Field("str"),
    (None, "binarize"): Field("str", choices=BINARIZE),
    (None, "likelihood"): Field("str", choices=LIKELIHOODS),
    (None, "image_size"): Field("ints", 1, lengths=(2,)),
    (None, "image_mode"): Field("str", choices=IMAGE_MODES),
    (None, "image_shape"): Field("ints", 1, lengths=(2, 3)),
    (None, "seed"): Field("int", 0, SEED_MAX),
    (None, "device"): Field("str"),
    ("sizes", "latent_dim"): Field("int", 1),
    ("sizes", "hidden"): Field("ints", 1),
    ("sizes", "top_latent_dim"): Field("int", 1),
    ("sizes", "num_flows"): Field("int", 1),
    ("sizes", "channels"): Field("int", 1),
    ("sizes", "l1"): Field("float", 0),
    ("sizes", "top_k"): Field("int", 1),
    ("sizes", "code_activation"): Field("str", choices=CODE_ACTIVATIONS),
    ("train", "objective"): Field("str", choices=tuple(OBJECTIVES)),
    ("train", "epochs"): Field("int", 1),
    ("train", "batch_size"): Field("int", 1),
    ("train", "lr"): Field("float", 0, above=True),
    ("train", "particles"): Field("int", 1),
    ("train", "iwae_k"): Field("int", 1),
    ("train", "beta"): Field("float", 0, above=True),
    ("train", "warmup_steps"): Field("int", 1),
    ("train", "corruption"): Field("str", choices=CORRUPTIONS),
    ("train", "noise"): Field("float", 0, above=True),
    ("train", "mmd_weight"): Field("float", 0, above=True),
    ("train", "kernel"): Field("str", choices=KERNELS),
    ("train", "target_rate"): Field("float", 0, 1, above=True),
    ("train", "sparsity_weight"): Field("float", 0),
    ("train", "patience"): Field("int", 1),
    ("train", "jit"): Field("bool"),
}
TABLES = ("sizes", "train")


def describe(table: str | None, key: str, where: str) -> str:
    """How an error names a key.

    ``--latent-dim`` on the command line, else ``<file>: [sizes] latent_dim``.
    """
    if where == "command line":
        return "--" + key.replace("_", "-")
    return f"{where}: " + (f"[{table}] {key}" if table else key)


@dataclass(frozen=True)
class Layer:
    """One layer of a configuration: where it came from and its values."""

    where: str  # a file name, "command line" or "built-in defaults"
    values: Mapping[str, Any]


def check_layer(layer: Layer) -> None:
    """Check every key of one layer against :data:`SCHEMA`; :class:`ConfigError` names it."""
    where = layer.where
    for k, v in layer.values.items():
        if k in TABLES:
            if not isinstance(v, Mapping):
                raise ConfigError(f"{where}: '{k}' must be a table ([{k}]), got {_show(v)}")
            for kk, vv in v.items():
                field = SCHEMA.get((k, kk))
                if field is None:
                    valid = [key for t, key in SCHEMA if t == k]
                    raise ConfigError(f"{where}: unknown key '{kk}' in [{k}]{_close(kk, valid)}"
                                      f"; valid: {', '.join(valid)}")
                _raise(field.check(vv), k, kk, where)
            continue
        field = SCHEMA.get((None, k))
        if field is None:
            valid = [key for t, key in SCHEMA if t is None]
            raise ConfigError(f"{where}: unknown key '{k}'{_close(k, [*valid, *TABLES])}; "
                              f"valid: {', '.join(valid)}, [sizes], [train]")
        _raise(field.check(v), None, k, where)


def _close(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match among ``options``, else empty."""
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _raise(bad: str | None, table: str | None, key: str, where: str) -> None:
    """Raise the :class:`ConfigError` of a failed :meth:`Field.check`, naming key and layer."""
    if bad is None:
        return
    if bad.startswith("\0"):  # a whole sentence about the key, e.g. "unknown model 'x'; ..."
        text = bad[1:].replace("{key}", key.replace("_", " "))
        raise ConfigError(text if where == "command line" else f"{where}: {text}")
    raise ConfigError(f"{describe(table, key, where)} {bad}")


def source_of(layers: Sequence[Layer], table: str | None, key: str) -> str | None:
    """The last layer (not the defaults) that set ``key``; None: only the defaults did."""
    for layer in reversed(layers):
        values = layer.values.get(table, {}) if table else layer.values
        if layer.where != "built-in defaults" and isinstance(values, Mapping) and key in values:
            return layer.where
    return None


def check_combination(cfg: Mapping[str, Any], layers: Sequence[Layer]) -> None:
    """Check the merged configuration's model, guide, objective and the options they use.

    Raises:
        ConfigError: a guide that does not fit the model (:func:`ppvae.app.zoo.check_names`),
            a likelihood the model does not have, or a size, objective or data option set by
            the user that the chosen model, guide, objective and data do not use, naming the
            key and where it was set.
    """
    check_names(cfg["model"], cfg["guide"])
    model, guide = MODELS[cfg["model"]], GUIDES[cfg["guide"]]
    likelihood = cfg.get("likelihood")
    if likelihood is not None and not model.likelihoods:
        set_in = source_of(layers, None, "likelihood") or "built-in defaults"
        raise ConfigError(f"{describe(None, 'likelihood', set_in)} {likelihood}: model "
                          f"'{cfg['model']}' is your own and states its likelihood; remove it")
    if likelihood is not None and likelihood not in model.likelihoods:
        set_in = source_of(layers, None, "likelihood") or "built-in defaults"
        has = " or ".join(f"'{m}'" for m, e in MODELS.items() if likelihood in e.likelihoods)
        raise ConfigError(f"{describe(None, 'likelihood', set_in)} {likelihood}: model "
                          f"'{cfg['model']}' has only {', '.join(model.likelihoods)}; use model "
                          f"{has}")
    _check_data_options(cfg, layers)
    used = set(model.sizes) | set(guide.sizes)
    for key in sorted(cfg.get("sizes", {})):
        where = source_of(layers, "sizes", key)
        if where is not None and key not in used:
            raise ConfigError(
                f"{describe('sizes', key, where)} is not used by model '{cfg['model']}' with "
                f"guide '{cfg['guide']}' (they use {', '.join(sorted(used))}); remove it")
    _check_corruption(cfg["train"], layers)
    _check_sparsity(cfg["train"], layers)
    sizes = cfg.get("sizes", {})
    if sizes.get("top_k") is not None and sizes["top_k"] > sizes.get("latent_dim", 1):
        where = source_of(layers, "sizes", "top_k") or "built-in defaults"
        raise ConfigError(f"{describe('sizes', 'top_k', where)} {sizes['top_k']} keeps more "
                          f"code units than the code has (latent_dim {sizes.get('latent_dim')});"
                          " lower it or raise --latent-dim")
    objective = cfg["train"].get("objective", "elbo")
    takes = OBJECTIVE_OPTIONS[objective]
    for key in sorted(set().union(*OBJECTIVE_OPTIONS.values())):
        where = source_of(layers, "train", key)
        if where is not None and key in cfg["train"] and key not in takes:
            users = [o for o, opts in OBJECTIVE_OPTIONS.items() if key in opts]
            raise ConfigError(
                f"{describe('train', key, where)} is used only by objective "
                f"{' or '.join(repr(u) for u in users)}; this run's objective is '{objective}'")


def _check_corruption(train: Mapping[str, Any], layers: Sequence[Layer]) -> None:
    """Refuse a noise level without a corruption, or a probability level of 1 or more."""
    noise, kind = train.get("noise"), train.get("corruption")
    where = source_of(layers, "train", "noise")
    if noise is None or where is None:
        return
    if kind is None:
        raise ConfigError(f"{describe('train', 'noise', where)} sets the level of a corruption, "
                          "but none is set: add --corruption gaussian, masking or "
                          "salt-and-pepper (or use model denoising-ae)")
    if kind != "gaussian" and not noise < 1:
        raise ConfigError(f"{describe('train', 'noise', where)} {noise}: the {kind} "
                          "corruption's level is the probability that an input is corrupted "
                          "and must be below 1")


def _check_sparsity(train: Mapping[str, Any], layers: Sequence[Layer]) -> None:
    """Refuse a sparsity weight without a target rate, or a target rate of 1."""
    where = source_of(layers, "train", "sparsity_weight")
    if where is not None and train.get("target_rate") is None:
        raise ConfigError(f"{describe('train', 'sparsity_weight', where)} weights the "
                          "KL-to-target-rate penalty, but no target rate is set: add "
                          "--target-rate (e.g. 0.05)")
    rate = train.get("target_rate")
    if rate is not None and not rate < 1:
        where = source_of(layers, "train", "target_rate") or "built-in defaults"
        raise ConfigError(f"{describe('train', 'target_rate', where)} {rate}: the target mean "
                          "activation of a code unit must lie in (0, 1)")


def data_kind(data: str) -> str:
    """``"name"`` (a data set of :mod:`ppvae.data`), ``"folder"`` (images) or ``"table"``.

    A name with a ``.npy`` / ``.csv`` / ``.txt`` suffix is a table, an existing folder is a
    folder of images, anything else a data set name.
    """
    if Path(data).suffix in TABLE_SUFFIXES:
        return "table"
    if Path(data).is_dir():
        return "folder"
    return "name"


def _check_data_options(cfg: Mapping[str, Any], layers: Sequence[Layer]) -> None:
    """Refuse an image option the data would ignore (set by the user, not by a default)."""
    kind = data_kind(cfg["data"])
    used = {"folder": ("image_size", "image_mode"), "table": ("image_shape",)}.get(kind, ())
    for key in ("image_size", "image_mode", "image_shape"):
        where = source_of(layers, None, key)
        if where is not None and key in cfg and key not in used:
            what = ("a folder of images" if key != "image_shape"
                    else "a .npy / .csv / .txt file of rows")
            raise ConfigError(f"{describe(None, key, where)} applies to {what}; data "
                              f"'{cfg['data']}' is {_KINDS[kind]}")


_KINDS = {"name": "a named data set (its shape is known)", "folder": "a folder of images",
          "table": "a file of rows"}
