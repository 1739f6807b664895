"""A run's model, guide and data, shared by the commands that train and use them.

* :func:`open_run` (public as ``ppvae.open_run``): a trained run directory, ready for any API
  call in a notebook or script::

      run = ppvae.open_run("runs/x")              # after `ppvae train --out runs/x`
      ppvae.elbo(run.model, run.guide, run.data.test, model_kwargs=run.model_kwargs("test"))
      run.guides                                   # {"diag": ..., "flow": ...}: every guide
      run.config, run.path, run.epoch              # config.toml, the folder, epochs trained

  It rebuilds model, guide and data from ``config.toml``, loads the checkpoint's parameters
  (read-only: nothing in the folder changes), and loads every further guide that ``ppvae gaps``
  trained on the frozen model (``guide-<name>.pt``) into :attr:`Trained.guides`.
* :func:`locked_run`: the same under the run directory's lock, for the commands.
* :func:`build`: data, model and guide from a run's configuration (names looked up in the zoo
  table, :mod:`ppvae.app.zoo`; data by :func:`ppvae.app.inputs.load_data`), not yet trained.
* :func:`label_kw`: the keyword arguments (the labels, ``y=``) that model and guide take for
  rows of a split, when the model takes labels.
* :func:`select_rows` and :class:`Rows`: the one place a subset of a split's rows is chosen
  (``--num-data``, the reconstructions figure, the MCMC points, ...): a seeded random subset by
  default, the first N rows on request; the report records the indices.
* :func:`data_shape`: what the zoo's builders need to know of a data set.

Several runs in one process. Pyro keeps parameters in one global store, by name, and a
``PyroModule`` adopts the stored tensor of its name, so two runs of the same model would share
(and overwrite) each other's parameters. :func:`open_run` therefore loads each run into its own
tensors (inside :meth:`pyro.params.param_store.ParamStoreDict.scope`), makes them the store's
entries, and gives the run's model and guides a forward pre-hook that puts the run's tensors
back into the store whenever one of them is called, so ``a = open_run(x); b = open_run(y)``
leaves ``a.model`` and ``b.model`` computing with their own parameters, whichever is called.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from .files import RunLock
from .inputs import load_data
from .runs import RunDir, RunError, command_line, describe_rows
from .zoo import (
    GUIDES,
    MODELS,
    DataShape,
    ModelSpec,
    build_guide,
    build_model,
    resolve_likelihood,
)

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["Rows", "Trained", "build", "data_shape", "label_kw", "locked_run", "open_run",
           "select_rows"]

_TENSORS = ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")


class Trained(NamedTuple):
    """A trained run: its model and guides with their data, configuration and run directory.

    Returned by :func:`open_run`. The model and guides are ready for any ppvae call on the
    run's device (``ppvae.elbo(run.model, run.guide, run.data.test)``); a model that takes
    labels needs them as keyword arguments, :meth:`model_kwargs`.
    """

    model: Callable[..., Any]  # the trained model (a PyroModule for the zoo's models)
    guide: Callable[..., Any]  # the run's own amortized guide, trained with the model
    data: Dataset  # train / valid / test splits (and labels), on the run's device
    config: dict  # config.toml as a dict
    run: RunDir  # the run directory (report, checkpoint, files)
    extra_guides: Mapping[str, Any] = MappingProxyType({})  # guide-<name>.pt, by name
    epoch: int | None = None  # epochs the checkpoint has trained

    @property
    def guides(self) -> dict[str, Any]:
        """Every guide of the run by name.

        The run's own (``config["guide"]``) first, then those ``ppvae gaps`` trained on the
        frozen model (:attr:`extra_guides`).
        """
        return {self.config["guide"]: self.guide, **self.extra_guides}

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.run.path

    @property
    def device(self) -> torch.device:
        """The device of the data (and of the networks)."""
        return self.data.train.device

    def model_kwargs(self, split: str = "test", rows=None) -> dict:
        """The keyword arguments model and guides take for ``rows`` of ``split``.

        The labels ``y`` of those rows when the model takes labels (a conditional VAE, M2),
        else ``{}``. ``rows``: an index (slice, indices, mask) into the split; None: all rows.
        """
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        return label_kw(self.config, self.data, split, slice(None) if rows is None else rows)

    def __repr__(self) -> str:
        """The run, its pair and guides, the data's splits, epochs and device, on one line."""
        d = self.data
        splits = ", ".join(f"{k} {int(getattr(d, k).shape[0])}" for k in ("train", "valid", "test"))
        epochs = "" if self.epoch is None else f", {self.epoch} epochs"
        return (f"Trained({self.path}: model {self.config['model']}, guides "
                f"{', '.join(self.guides)}; data {d.name} ({splits} rows of {d.data_dim})"
                f"{epochs}, {self.device})")


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


def build(cfg: dict, *, progress: bool | None = None):
    """(data, model, guide) from a configuration, the networks freshly initialized.

    The data come from :func:`ppvae.app.inputs.load_data` (``progress``: its bar for a
    download or a folder of images); the model has the configuration's ``likelihood`` (None:
    Bernoulli for 0/1 data, else Gaussian).
    """
    data = load_data(cfg, progress=progress)
    spec, shape = ModelSpec.from_sizes(cfg.get("sizes", {})), data_shape(data)
    model = build_model(cfg["model"], spec, shape, likelihood=resolve_likelihood(cfg, data))
    guide = build_guide(cfg["guide"], model, cfg["model"], spec, shape)
    return data, model, guide


def open_run(path: str | Path, *, device: str | torch.device | None = None,
             extra_guides: bool = True) -> Trained:
    """A trained run directory's model, guides and data, with the checkpoint loaded.

    Args:
        path: the run directory (``ppvae train --out``); nothing in it is written.
        device: where to put networks and data; None: the run's configured device (``auto``:
            CUDA when available).
        extra_guides: also load the guides ``ppvae gaps`` trained on the frozen model
            (``guide-<name>.pt``, into :attr:`Trained.guides`). One that cannot be loaded
            (another model's, corrupt) is left out with a ``RuntimeWarning`` naming the file.

    Returns:
        :class:`Trained`: ``model``, ``guide``, ``guides``, ``data`` (the splits), ``config``,
        ``path``, ``epoch`` and :meth:`Trained.model_kwargs` (the labels a conditional model
        takes). Several runs can be open at once (module docstring).

    Raises:
        ppvae.app.runs.RunError: not a run directory, or one without a checkpoint.
        ppvae.CheckpointError: a checkpoint that does not fit the configured model and guide.
    """
    import pyro

    from ..core.device import resolve_device
    from ..train.checkpoint import load_checkpoint

    run = RunDir.open(path)
    cfg = run.read_config()
    if not run.checkpoint.is_file():
        raise RunError(f"{run.checkpoint} is missing: train the run first ('ppvae train')")
    dev = resolve_device(cfg.get("device") if device is None else device)
    with pyro.get_param_store().scope() as state:  # this run's own tensors, by name
        data, model, guide = build(cfg)
        data = data._replace(**{f: getattr(data, f).to(dev) for f in _TENSORS
                                if getattr(data, f) is not None})
        for m in (model, guide):
            if isinstance(m, torch.nn.Module):
                m.to(dev)
        meta = load_checkpoint(run.checkpoint, params=_params(model, guide, cfg, data),
                               model=model, guide=guide, restore_rng=False)
        extras = _extra_guides(run, cfg, data, model) if extra_guides else {}
    _activate(state)
    for m in (model, guide, *extras.values()):
        if isinstance(m, torch.nn.Module):
            m.register_forward_pre_hook(lambda module, args, _state=state: _activate(_state))
    return Trained(model, guide, data, cfg, run, MappingProxyType(extras), meta.epoch)


def _params(model, guide, cfg: dict, data) -> dict[str, torch.Tensor]:
    """The pair's parameters by store name, from one ELBO evaluation on 8 training rows."""
    from ..core.contract import check_pair
    from ..train.objectives import ELBO
    from ..train.params import collect_params

    x = data.train[:8]
    kw = label_kw(cfg, data, "train", slice(0, 8))
    info = check_pair(model, guide, x, model_kwargs=kw)
    return collect_params(lambda: ELBO().loss(model, guide, x, info=info, kwargs=kw))


def _extra_guides(run: RunDir, cfg: dict, data, model) -> dict[str, Any]:
    """The guides ``ppvae gaps`` trained on the frozen model, loaded from ``guide-<name>.pt``.

    Built as :func:`ppvae.app.gaps.train_extra_guide` builds them (label ``guide_<name>``) and
    loaded like the run's checkpoint; one that fails is left out with a ``RuntimeWarning``.
    """
    from pyro import poutine

    from ..train.checkpoint import CheckpointError, load_checkpoint

    frozen = poutine.block(model, hide_types=["param"])  # as it was trained: the model frozen
    spec, shape = ModelSpec.from_sizes(cfg.get("sizes", {})), data_shape(data)
    out: dict[str, Any] = {}
    for file in sorted(run.path.glob("guide-*.pt")):
        name = file.stem.removeprefix("guide-")
        if name == cfg["guide"] or name not in GUIDES:
            continue
        try:
            guide = build_guide(name, model, cfg["model"], spec, shape, label=f"guide_{name}")
            if isinstance(guide, torch.nn.Module):
                guide.to(data.train.device)
            load_checkpoint(file, params=_params(frozen, guide, cfg, data), guide=guide,
                            restore_rng=False)
        except (CheckpointError, ValueError, RuntimeError) as e:
            warnings.warn(f"{file}: guide '{name}' not loaded ({e}); Trained.guides leaves it "
                          "out", RuntimeWarning, stacklevel=3)
            continue
        out[name] = guide
    return out


def _activate(state: Mapping[str, Any]) -> None:
    """Make a run's tensors (a param-store ``state``) the global store's entries of their names.

    Entries that already hold them are left alone, so the check costs a dictionary pass.
    """
    import pyro

    store = pyro.get_param_store()
    current = dict(store.named_parameters())
    stale = [k for k, v in state["params"].items() if current.get(k) is not v]
    for k in stale:
        if k in current:
            del store[k]
    if stale:
        store.set_state({"params": {k: state["params"][k] for k in stale},
                         "constraints": {k: state["constraints"][k] for k in stale}})


@contextmanager
def locked_run(path: str | Path) -> Iterator[Trained]:
    """A trained run (:func:`open_run`) under the run directory's lock.

    For a command that writes report sections: the lock (:class:`ppvae.app.files.RunLock`)
    refuses a second command on the directory, and report.json is read first, so a broken
    one is reported before any computation. The guides of ``ppvae gaps`` are not loaded
    (the commands that use them train or reuse them themselves).
    """
    run = RunDir.open(path)
    with RunLock(run.path, command_line()):
        run.read_report()
        yield open_run(run.path, extra_guides=False)
