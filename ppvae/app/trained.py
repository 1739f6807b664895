"""A run's model, guide and data, shared by the commands that train and use them.

* :func:`build`: data, model and guide from a run's configuration (names looked up in the zoo
  table, :mod:`ppvae.app.zoo`; data by :func:`ppvae.app.inputs.build_data`), not yet trained.
* :func:`open_run`: a trained run (``ppvae evaluate``, ``gaps``, ``sample``, the demo) rebuilt
  from its ``config.toml`` with the checkpoint's parameters loaded, on the run's device;
  :func:`locked_run` the same under the run directory's lock, for the commands.
* :func:`label_kw`: the keyword arguments (the labels, ``y=``) that model and guide take for
  rows of a split, when the model takes labels.
* :func:`select_rows` and :class:`Rows`: the one place a subset of a split's rows is chosen
  (``--num-data``, the reconstructions figure, the MCMC points, ...): a seeded random subset by
  default, the first N rows on request; the report records the indices.
* :func:`data_shape`: what the zoo's builders need to know of a data set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from .files import RunLock
from .inputs import build_data
from .runs import RunDir, RunError, command_line, describe_rows
from .zoo import MODELS, DataShape, ModelSpec, build_guide, build_model

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["Rows", "Trained", "build", "data_shape", "label_kw", "locked_run", "open_run",
           "select_rows"]

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


def select_rows(n_total: int, num_data: int | None, seed: int, first: bool = False,
                ) -> torch.Tensor:
    """Sorted int64 indices of ``num_data`` of ``n_total`` rows.

    A seeded random subset (``torch.randperm`` with its own generator seeded by ``seed``, so the
    global RNG is untouched and the same seed picks the same rows in every command), or the first
    ``num_data`` rows when ``first`` is true. ``num_data`` None, or at least ``n_total``: all
    rows, in order.

    Data sets are often stored sorted (binarized MNIST's test split is ordered by class), so the
    first N rows are a biased sample; a random subset is not.

    Raises:
        ValueError: ``num_data`` is below 1.
    """
    if num_data is not None and num_data < 1:
        raise ValueError(f"the number of rows must be at least 1, got {num_data}")
    n = n_total if num_data is None else min(num_data, n_total)
    if first or n == n_total:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:n].sort().values


class Rows(NamedTuple):
    """Rows of one split chosen by :func:`select_rows`, with how they were chosen."""

    split: str  # "train", "valid" or "test"
    indices: torch.Tensor  # sorted int64 positions in the split
    total: int  # rows in the split
    seed: int
    first: bool  # the first rows rather than a seeded random subset

    @classmethod
    def select(cls, data, split: str, num_data: int | None, seed: int,
               first: bool = False) -> Rows:
        """``num_data`` rows of ``split`` of ``data`` (None: all), by :func:`select_rows`."""
        total = int(getattr(data, split).shape[0])
        return cls(split, select_rows(total, num_data, seed, first), total, int(seed), first)

    @property
    def num_rows(self) -> int:
        """The number of rows chosen."""
        return int(self.indices.shape[0])

    @property
    def selection(self) -> str:
        """``"all"``, ``"first"`` or ``"random"``."""
        if self.num_rows == self.total:
            return "all"
        return "first" if self.first else "random"

    def take(self, data) -> torch.Tensor:
        """These rows of the split's data tensor."""
        x = getattr(data, self.split)
        return x[self.indices.to(x.device)]

    def kw(self, cfg: dict, data) -> dict:
        """The model's keyword arguments (labels) for these rows (:func:`label_kw`)."""
        labels = getattr(data, f"{self.split}_labels", None)
        idx = self.indices if labels is None else self.indices.to(labels.device)
        return label_kw(cfg, data, self.split, idx)

    def subset(self, num: int | None) -> tuple[torch.Tensor, Rows]:
        """``num`` of these rows, chosen the same way (seeded random or first).

        Returns their positions among these rows (to index tensors already taken with
        :meth:`take`) and the chosen rows as :class:`Rows` of the same split.
        """
        pos = select_rows(self.num_rows, num, self.seed, self.first)
        return pos, self._replace(indices=self.indices[pos])

    def record(self) -> dict:
        """The JSON record of the report: split, selection, seed, count, total and indices.

        ``indices`` is None when every row of the split was used.
        """
        sel = self.selection
        return {"split": self.split, "selection": sel, "seed": self.seed if sel == "random"
                else None, "count": self.num_rows, "of": self.total,
                "indices": None if sel == "all" else [int(i) for i in self.indices]}

    def describe(self) -> str:
        """One phrase for the report, e.g. '300 of 10000 test rows, seeded random (seed 0)'."""
        return describe_rows(self.record())


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


@contextmanager
def locked_run(path: str | Path) -> Iterator[Trained]:
    """A trained run (:func:`open_run`) under the run directory's lock.

    For a command that writes report sections: the lock (:class:`ppvae.app.files.RunLock`)
    refuses a second command on the directory, and report.json is read first, so a broken
    one is reported before any computation.
    """
    run = RunDir.open(path)
    with RunLock(run.path, command_line()):
        run.read_report()
        yield open_run(run.path)
