"""The data :func:`ppvae.fit` trains on: the forms it takes, its rows on the device, minibatches.

Accepted forms (:func:`data_source`), for the training data and likewise for ``valid``:

* a tensor or numpy array ``[N, ...]``; per-datapoint keyword tensors (labels of a conditional
  model) come as ``batch_kw={"y": labels}`` and are minibatched with the rows;
* a :class:`ppvae.data.Dataset` record (:func:`unpack_data`: its train and valid splits, dynamic
  binarization when the record asks for it);
* a ``torch.utils.data.TensorDataset``: its tensors, trained on as tensor data (the first is x);
* a map-style ``torch.utils.data.Dataset``: each minibatch is fetched by index
  (``dataset.__getitems__(indices)`` when it has one, else ``dataset[i]`` for each) and collated
  with ``torch.utils.data.default_collate``; only a minibatch is in memory at a time;
* a ``torch.utils.data.DataLoader``: streamed, iterated once per epoch; the loader decides the
  batches and their order (for data that do not fit in memory); N is
  ``len(loader.dataset)`` when it has a length. One process only.

Items of a Dataset (batches of a DataLoader) are split by a :class:`Layout`: a tensor is x; a
tuple or list is ``(x, *rest)`` with the trailing elements named by ``batch_kw=("y", ...)``; a
dict holds x under ``data_key`` (default ``"x"``) and keyword arguments under its other keys
(``batch_kw`` names may pick some). Tensors are moved to fit's device.

Tensors and map-style Datasets are *indexed* sources: an epoch's minibatches are taken by index
from a permutation seeded per (seed, epoch) (:class:`IndexedEpoch`), so a fixed seed reproduces
a run exactly and resuming needs no data state. :func:`check_training_pair` is the contract check
fit makes (global latents allowed); :func:`check_valid` makes it on the validation rows so that a
failure says it is ``valid`` that does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, default_collate

from ..core.contract import ContractError, PairInfo, check_pair

__all__ = [
    "DatasetSource",
    "IndexedEpoch",
    "Layout",
    "LoaderSource",
    "Minibatch",
    "Source",
    "TensorSource",
    "TrainData",
    "as_rows",
    "check_training_pair",
    "check_valid",
    "data_source",
    "unpack_data",
]

Batch = tuple[torch.Tensor, dict]  # (x, per-datapoint keyword arguments)


def as_rows(t, what: str) -> torch.Tensor:
    """``t`` as a tensor ``[N, ...]`` with N >= 1 (a numpy array converted).

    Anything else is an error naming ``what``.
    """
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or array [N, ...], a ppvae.data.Dataset, a "
                        f"torch.utils.data.Dataset or a DataLoader, got {type(t).__name__}")
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(f"{what} has no rows (shape {tuple(t.shape)}): it must be [N, ...], "
                         "N >= 1")
    return t


def unpack_data(data, valid, transform):
    """The training and validation data, and the transform, of what fit was given.

    A :class:`ppvae.data.Dataset` record gives its splits (and dynamic binarization when it asks
    for it); anything else is returned as it is.
    """
    if not isinstance(data, (Dataset, DataLoader)) and hasattr(data, "train") \
            and hasattr(data, "valid"):  # a ppvae.data.Dataset record
        if transform is None and getattr(data, "binarization", None) == "dynamic":
            from ..data.binarize import dynamic_binarize
            transform = dynamic_binarize
        data, valid = data.train, data.valid if valid is None else valid
    return data, valid, transform


class Layout(NamedTuple):
    """How a Dataset item or DataLoader batch splits into x and keyword arguments."""

    names: tuple[str, ...] = ()  # the trailing tuple elements' names, or the dict keys to pass
    data_key: str = "x"  # where a dict item holds x

    def split(self, batch, where: str) -> Batch:
        """``(x, kwargs)`` of ``batch``; ``where`` names it in errors ("DataLoader batch 3")."""
        if isinstance(batch, torch.Tensor):
            if self.names:
                raise ValueError(f"{where} is a single tensor, but batch_kw names "
                                 f"{list(self.names)}: give items (x, {', '.join(self.names)})")
            return batch, {}
        if isinstance(batch, (tuple, list)):
            if len(batch) != 1 + len(self.names):
                raise ValueError(
                    f"{where} is a {type(batch).__name__} of {len(batch)} items but batch_kw names "
                    f"{len(self.names)} ({list(self.names)}): name the {len(batch) - 1} item(s) "
                    "after x, e.g. batch_kw=(" + ", ".join(
                        f"'{n}'" for n in ("y", "z", "w")[:max(len(batch) - 1, 0)]) + ")")
            return _tensor_x(batch[0], where), dict(zip(self.names, batch[1:], strict=True))
        if isinstance(batch, Mapping):
            if self.data_key not in batch:
                raise ValueError(f"{where} is a dict without the data key '{self.data_key}' "
                                 f"(keys {sorted(batch)}): say which key holds x with data_key=")
            keys = self.names or tuple(k for k in batch if k != self.data_key)
            missing = [k for k in keys if k not in batch]
            if missing:
                raise ValueError(f"{where} has no key(s) {missing} that batch_kw names "
                                 f"(keys {sorted(batch)})")
            return _tensor_x(batch[self.data_key], where), {k: batch[k] for k in keys}
        raise TypeError(f"{where} is a {type(batch).__name__}: items must be a tensor x, a tuple "
                        "(x, ...) or a dict with x under data_key")


def _tensor_x(x, where: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(f"{where}: x must be a tensor [B, ...], got {type(x).__name__}")
    return x


def _to(batch: Batch, device) -> Batch:
    x, kw = batch
    return x.to(device), {k: v.to(device) if isinstance(v, torch.Tensor) else v
                          for k, v in kw.items()}


class Minibatch(NamedTuple):
    """One optimizer step's data: row indices of an indexed epoch, or a streamed batch."""

    rows: torch.Tensor | None  # indices into the epoch's rows; None for a streamed batch
    x: torch.Tensor | None = None  # a streamed batch's data
    kwargs: dict | None = None  # and its keyword arguments


class Epoch(Protocol):
    """One epoch's minibatches."""

    def minibatches(self, size: int) -> Iterator[Minibatch]:
        """The epoch's minibatches of ``size`` rows (a stream: as it comes)."""
        ...

    def fetch(self, rows: torch.Tensor) -> Batch:
        """The rows ``rows`` of the epoch (indexed sources only)."""
        ...


@dataclass(frozen=True)
class IndexedEpoch:
    """An indexed source's epoch: its row permutation and how rows are fetched."""

    perm: torch.Tensor  # [N] the epoch's row order
    fetch: Callable[[torch.Tensor], Batch]  # rows -> (x, kwargs) on the device

    def minibatches(self, size: int) -> Iterator[Minibatch]:
        """Consecutive slices of the permutation, ``size`` rows each (the last may be short)."""
        for b in range(math.ceil(len(self.perm) / size)):
            yield Minibatch(self.perm[b * size:(b + 1) * size])


class Source(Protocol):
    """Training or validation data in one of the accepted forms."""

    indexed: bool  # rows can be fetched by index (tensors, map-style Datasets)
    n: int | None  # the number of rows (None: a stream that does not say)
    device: torch.device  # where its batches are put

    def epoch(self, seed: int, epoch: int) -> Epoch:
        """The epoch's minibatches (the permutation seeded by (seed, epoch) when indexed)."""
        ...

    def head(self, rows: int, seed: int = 0) -> Batch:
        """The first ``rows`` rows of epoch 0 (a stream: its first batch)."""
        ...

    def chunks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Rows ``start:stop`` in order, ``size`` at a time (a stream: its batches)."""
        ...


class TensorSource:
    """Rows held as tensors on the device, with per-datapoint keyword tensors."""

    indexed = True

    def __init__(self, x: torch.Tensor, batch_kw: Mapping[str, torch.Tensor], transform,
                 device):
        self.x, self.transform, self.device = x.to(device), transform, torch.device(device)
        self.batch_kw = {k: v.to(device) for k, v in batch_kw.items()}
        self.n: int | None = self.x.shape[0]

    def rows(self, x: torch.Tensor, rows) -> Batch:
        """Rows ``rows`` (indices or a slice) of ``x`` and of the keyword tensors."""
        return x[rows], {k: v[rows] for k, v in self.batch_kw.items()}

    def epoch(self, seed: int, epoch: int) -> IndexedEpoch:
        """The (transformed) rows and permutation, both from one generator seeded per epoch."""
        g = torch.Generator(device=self.device).manual_seed(seed * 100003 + epoch)
        xe = self.transform(self.x, g) if self.transform is not None else self.x
        perm = torch.randperm(self.x.shape[0], generator=g, device=self.device)
        return IndexedEpoch(perm, lambda rows: self.rows(xe, rows))

    def head(self, rows: int, seed: int = 0) -> Batch:
        """The first ``rows`` rows of epoch 0 (transformed)."""
        if self.transform is None:
            return self.rows(self.x, slice(0, rows))
        return self.epoch(seed, 0).fetch(torch.arange(min(rows, self.x.shape[0]),
                                                      device=self.device))

    def chunks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Rows ``start:stop`` (untransformed) in slices of ``size``."""
        stop = self.x.shape[0] if stop is None else stop
        for s in range(start, stop, size):
            yield self.rows(self.x, slice(s, min(s + size, stop)))


class DatasetSource:
    """A map-style ``torch.utils.data.Dataset``, fetched a minibatch at a time by index."""

    indexed = True

    def __init__(self, dataset: Dataset, layout: Layout, device, what: str):
        try:
            self.n: int | None = len(dataset)  # type: ignore[arg-type]  # map-style: has len
        except TypeError as e:
            raise TypeError(f"{what}: a map-style Dataset needs __len__ (or pass a DataLoader)"
                            ) from e
        if not self.n:
            raise ValueError(f"{what} has no rows (len 0)")
        self.dataset, self.layout, self.what = dataset, layout, what
        self.device = torch.device(device)

    def fetch(self, rows: torch.Tensor) -> Batch:
        """The items at ``rows``, collated and split, on the device."""
        idx = [int(i) for i in rows.tolist()]
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(idx) if getitems is not None else [self.dataset[i] for i in idx]
        where = f"Dataset items {idx[:3]}{'...' if len(idx) > 3 else ''} ({self.what})"
        return _to(self.layout.split(default_collate(items), where), self.device)

    def epoch(self, seed: int, epoch: int) -> IndexedEpoch:
        """A permutation of the dataset's indices, seeded per (seed, epoch)."""
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        return IndexedEpoch(torch.randperm(int(self.n or 0), generator=g), self.fetch)

    def head(self, rows: int, seed: int = 0) -> Batch:
        """The first ``rows`` items."""
        return self.fetch(torch.arange(min(rows, int(self.n or 0))))

    def chunks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Items ``start:stop`` in order, ``size`` at a time."""
        stop = int(self.n or 0) if stop is None else stop
        for s in range(start, stop, size):
            yield self.fetch(torch.arange(s, min(s + size, stop)))


class LoaderSource:
    """A ``DataLoader``, streamed: its batches, in its order, once per epoch."""

    indexed = False

    def __init__(self, loader: DataLoader, layout: Layout, device, what: str):
        self.loader, self.layout, self.what = loader, layout, what
        self.device = torch.device(device)
        try:
            self.n: int | None = len(loader.dataset)  # type: ignore[arg-type]  # may lack len
        except TypeError:  # an IterableDataset without a length
            self.n = None

    def batches(self) -> Iterator[Batch]:
        """The loader's batches, split and on the device."""
        for i, batch in enumerate(self.loader):
            yield _to(self.layout.split(batch, f"DataLoader batch {i} ({self.what})"),
                      self.device)

    def epoch(self, seed: int, epoch: int) -> _StreamEpoch:
        """One pass over the loader (its own shuffling draws from torch's seeded generator)."""
        return _StreamEpoch(self)

    def head(self, rows: int, seed: int = 0) -> Batch:
        """The loader's first batch."""
        for batch in self.batches():
            return batch
        raise ValueError(f"{self.what} gives no batches")

    def chunks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """The loader's batches (all of them: a stream has no row ranges)."""
        if start != 0 or stop is not None:
            raise ValueError(f"{self.what} is streamed: it cannot be split into row ranges")
        return self.batches()


@dataclass(frozen=True)
class _StreamEpoch:
    source: LoaderSource

    def minibatches(self, size: int) -> Iterator[Minibatch]:
        for x, kw in self.source.batches():
            yield Minibatch(None, x, kw)

    def fetch(self, rows: torch.Tensor) -> Batch:
        raise TypeError(f"{self.source.what} is streamed: rows cannot be fetched by index")


def _names(batch_kw, what: str) -> tuple[str, ...]:
    """``batch_kw`` as item names for a Dataset / DataLoader (a dict of tensors is refused)."""
    if batch_kw is None:
        return ()
    if isinstance(batch_kw, Mapping):
        raise TypeError(f"{what}: batch_kw={{...}} holds per-datapoint tensors for tensor data; "
                        "with a torch Dataset or DataLoader, batch_kw names the elements after x "
                        "of its tuple items, e.g. batch_kw=('y',)")
    names = (batch_kw,) if isinstance(batch_kw, str) else tuple(batch_kw)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what}: batch_kw names must be strings, got {names!r}")
    return names


def data_source(data, *, what: str, batch_kw, data_key: str, transform, device) -> Source:
    """``data`` in one of the accepted forms (module docstring) as a :class:`Source`."""
    if isinstance(data, (DataLoader, Dataset)) and transform is not None:
        raise ValueError(f"{what}: transform= applies to tensor data; transform the items of a "
                         "torch Dataset or DataLoader in the dataset itself")
    if isinstance(data, DataLoader):
        return LoaderSource(data, Layout(_names(batch_kw, what), data_key), device, what)
    if isinstance(data, IterableDataset):
        raise TypeError(f"{what} is an IterableDataset: wrap it in a DataLoader to stream it")
    if isinstance(data, TensorDataset):
        x, *rest = data.tensors
        names = _names(batch_kw, what)
        if len(rest) != len(names):
            raise ValueError(f"{what} is a TensorDataset of {len(data.tensors)} tensors but "
                             f"batch_kw names {len(names)} ({list(names)}): name the tensors "
                             "after x")
        return TensorSource(as_rows(x, what), dict(zip(names, rest, strict=True)), None, device)
    if isinstance(data, Dataset):
        return DatasetSource(data, Layout(_names(batch_kw, what), data_key), device, what)
    if batch_kw is not None and not isinstance(batch_kw, Mapping):
        raise TypeError(f"batch_kw={batch_kw!r} names the elements of Dataset / DataLoader items; "
                        f"with tensor {what} pass the tensors, e.g. batch_kw={{'y': labels}}")
    return TensorSource(as_rows(data, what), dict(batch_kw or {}), transform, device)


def check_training_pair(model, guide, x: torch.Tensor, kwargs: Mapping[str, Any]) -> PairInfo:
    """:func:`ppvae.check_pair` as fit makes it: global latents allowed (fit trains them)."""
    return check_pair(model, guide, x, model_kwargs=kwargs, allow_globals=True)


def check_valid(model, guide, valid: Source, fixed_kw: dict, rows: int) -> None:
    """The contract check on the validation data's first ``rows``.

    A failure says it is ``valid`` that does not fit (its shape, dtype or values), not the
    training data.
    """
    x, kw = valid.head(rows)
    try:
        check_training_pair(model, guide, x, {**fixed_kw, **kw})
    except ContractError as e:
        raise ContractError(f"valid (validation data): {e}") from e


@dataclass(frozen=True)
class TrainData:
    """Training (and validation) data as sources on one device, and fixed keyword arguments."""

    train: Source
    valid: Source | None
    fixed_kw: dict  # passed unchanged to model and guide
    device: torch.device

    @classmethod
    def on(cls, device, data, valid, *, transform=None, batch_kw=None, valid_batch_kw=None,
           fixed_kw: dict | None = None, data_key: str = "x") -> TrainData:
        """The data as sources on ``device`` (validation items named as the training items)."""
        device = torch.device(device)
        train = data_source(data, what="data", batch_kw=batch_kw, data_key=data_key,
                            transform=transform, device=device)
        if valid is not None and valid_batch_kw is None and isinstance(
                valid, (Dataset, DataLoader)) and not isinstance(batch_kw, Mapping):
            valid_batch_kw = batch_kw  # items of the same form as the training items
        v = data_source(valid, what="valid", batch_kw=valid_batch_kw, data_key=data_key,
                        transform=None, device=device) if valid is not None else None
        return cls(train, v, dict(fixed_kw or {}), device)

    @property
    def n(self) -> int | None:
        """The number of training rows (None: a stream that does not say)."""
        return self.train.n

    def kwargs(self, kw: Mapping[str, Any]) -> dict:
        """The model's and guide's keyword arguments: the fixed ones and ``kw``."""
        return {**self.fixed_kw, **kw}
