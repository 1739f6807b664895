"""A run's model, guide and data, shared by the commands that train and use them.

* :func:`build`: data, model and guide from a run's configuration (names looked up in the zoo
  table, :mod:`ppvae.app.zoo`; data by :func:`ppvae.app.inputs.build_data`), not yet trained.
* :func:`open_run`: a trained run (``ppvae evaluate``, ``gaps``, ``sample``, the demo) rebuilt
  from its ``config.toml`` with the checkpoint's parameters loaded, on the run's device.
* :func:`label_kw`: the keyword arguments (the labels, ``y=``) that model and guide take for
  rows of a split, when the model takes labels.
* :func:`data_shape`: what the zoo's builders need to know of a data set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .inputs import build_data
from .runs import RunDir, RunError
from .zoo import MODELS, DataShape, ModelSpec, build_guide, build_model

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["Trained", "build", "data_shape", "label_kw", "open_run"]

_TENSORS = ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")


class Trained(NamedTuple):
    """A trained model and guide with their data, configuration and run directory."""

    model: Callable[..., Any]
    guide: Callable[..., Any]
    data: Dataset
    config: dict
    run: RunDir


def data_shape(data) -> DataShape:
    """Features per row, image shape and number of classes (None: no labels) of ``data``."""
    nc = None if data.train_labels is None else int(data.train_labels.max()) + 1
    return DataShape(data.data_dim, data.image_shape, nc)


def label_kw(cfg: dict, data, split: str, rows=slice(None)) -> dict:
    """Keyword arguments of model and guide for rows of a split.

    They are the labels, if the model takes them.
    """
    entry = MODELS.get(cfg["model"])
    if entry is None or not entry.takes_labels:
        return {}
    return {"y": getattr(data, f"{split}_labels")[rows]}


def build(cfg: dict):
    """(data, model, guide) from a configuration, the networks freshly initialized."""
    data = build_data(cfg["data"], binarize=cfg.get("binarize") or None,
                      path=cfg.get("data_path") or None, seed=cfg.get("seed", 0))
    spec, shape = ModelSpec.from_sizes(cfg.get("sizes", {})), data_shape(data)
    binary = data.binarization is not None or bool(
        ((data.train == 0) | (data.train == 1)).all())
    model = build_model(cfg["model"], spec, shape, binary=binary)
    guide = build_guide(cfg["guide"], model, cfg["model"], spec, shape)
    return data, model, guide


def open_run(path: str | Path) -> Trained:
    """Rebuild the model and guide of a run and load its checkpoint (read-only)."""
    from ..core.contract import check_pair
    from ..core.device import resolve_device
    from ..train.checkpoint import load_checkpoint
    from ..train.objectives import ELBO
    from ..train.params import collect_params

    run = RunDir.open(path)
    cfg = run.read_config()
    if not run.checkpoint.is_file():
        raise RunError(f"{run.checkpoint} is missing: train the run first ('ppvae train')")
    data, model, guide = build(cfg)
    dev = resolve_device(cfg.get("device"))
    data = data._replace(**{f: getattr(data, f).to(dev) for f in _TENSORS
                            if getattr(data, f) is not None})
    for m in (model, guide):
        m.to(dev)
    x = data.train[:8]
    kw = label_kw(cfg, data, "train", slice(0, 8))
    info = check_pair(model, guide, x, model_kwargs=kw)
    params = collect_params(lambda: ELBO().loss(model, guide, x, info=info, kwargs=kw))
    load_checkpoint(run.checkpoint, params=params, model=model, guide=guide, restore_rng=False)
    return Trained(model, guide, data, cfg, run)
