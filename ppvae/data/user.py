"""A user's own data as a :class:`ppvae.data.Dataset` record, split 80 / 10 / 10.

* :func:`from_tensor`: rows ``[N, D]`` (a tensor or array; images ``[N, H, W]`` or
  ``[N, C, H, W]`` are flattened), optional integer labels.
* :func:`from_torch_dataset`: any map-style or iterable ``torch.utils.data.Dataset`` whose items
  are ``x``, ``(x, label, ...)`` or ``{"x": x, "y": label}`` with ``x`` a tensor, an array or a
  PIL image (scaled to [0, 1] like :func:`ppvae.data.load_image_folder`). The items are read
  once into memory.
* :func:`load_table` (:mod:`ppvae.data.tables`) and :func:`ppvae.data.load_image_folder` build on
  :func:`from_tensor`.

The split is a seeded permutation (:func:`split_indices`): the last 80% of it train, the first
10% validation, the next 10% test, at least one row each. Binarization follows
:func:`ppvae.data.load_dataset` (:func:`ppvae.data.binarize.binarize_splits`).

Image shapes: ``(H, W)`` for one channel, ``(C, H, W)`` for several (rows are flattened in that
order, as ``torch`` lays out images).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .binarize import BINARIZATIONS, binarize_splits
from .datasets import Dataset
from .tables import read_table

__all__ = ["check_image_shape", "from_tensor", "from_torch_dataset", "load_table",
           "split_indices"]


def split_indices(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train, validation and test row indices of ``n`` rows (n >= 3): 80 / 10 / 10, seeded.

    ``torch.randperm`` with its own generator seeded by ``seed`` (the global RNG is untouched);
    validation and test get ``max(1, n // 10)`` rows each.
    """
    if n < 3:
        raise ValueError(f"a split into train, validation and test needs at least 3 rows, got "
                         f"{n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_hold = max(1, n // 10)
    return perm[2 * n_hold:], perm[:n_hold], perm[n_hold:2 * n_hold]


def check_image_shape(shape: Sequence[int], data_dim: int, where: str) -> tuple[int, ...]:
    """``shape`` as ``(H, W)`` or ``(C, H, W)`` when its product is ``data_dim``.

    Raises:
        ValueError: another length, a size below 1, or a product other than ``data_dim``
            (``where`` names the data in the message).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive sizes, got "
                         f"{shape}")
    if math.prod(shape) != data_dim:
        raise ValueError(f"image_shape {shape} has {math.prod(shape)} values per image but "
                         f"{where} has {data_dim} per row")
    return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape


def from_tensor(x, labels=None, *, name: str = "data", image_shape: Sequence[int] | None = None,
                binarize: str | None = None, seed: int = 0, columns: Sequence[str] | None = None,
                classes: Sequence[str] | None = None, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> Dataset:
    """A :class:`Dataset` of the rows of ``x``, split 80 / 10 / 10 with ``seed``.

    Args:
        x: ``[N, D]`` rows, or images ``[N, H, W]`` / ``[N, C, H, W]`` (flattened; their shape
            becomes ``image_shape``); finite real values, N >= 3.
        labels: ``[N]`` integer class labels >= 0 (for a conditional model), or None.
        name: the data set's name in reports.
        image_shape: ``(H, W)`` or ``(C, H, W)`` to draw rows as images (product D).
        binarize: None, ``"static"``, ``"threshold"`` or ``"dynamic"`` (values must be in
            [0, 1]); as in :func:`ppvae.data.load_dataset`.
        seed: seeds the split and the binarization.
        columns: names of the D columns (a CSV header), recorded on the record.
        classes: names of the label values 0, 1, ..., recorded on the record.
        dtype: dtype of the data tensors (labels are int64).
        device: device of the data and label tensors.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INTEGER):
        raise ValueError(f"{name}: the data must be real numbers, got dtype {t.dtype}")
    if t.dim() in (3, 4) and image_shape is None:
        image_shape = tuple(t.shape[1:])
    if t.dim() < 2:
        raise ValueError(f"{name}: expected rows [N, D] (or images [N, H, W] / [N, C, H, W]), "
                         f"got shape {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1).to(dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: the data contain non-finite values")
    if binarize not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
    if binarize is not None and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"{name}: binarize needs values in [0, 1], got values in "
                         f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
    shape = None if image_shape is None else check_image_shape(image_shape, t.shape[1], name)
    if columns is not None and len(columns) != t.shape[1]:
        raise ValueError(f"{name}: {len(columns)} column names for {t.shape[1]} columns")
    y = _labels(labels, t.shape[0], name)
    tr, va, te = split_indices(t.shape[0], seed)
    train, valid, test = (s.to(device) for s in binarize_splits(t[tr], t[va], t[te], binarize,
                                                                  seed))
    labs = (None, None, None) if y is None else tuple(y[i].to(device) for i in (tr, va, te))
    return Dataset(name, train, valid, test, labs[0], labs[1], labs[2], shape, binarize,
                   None if columns is None else tuple(columns),
                   None if classes is None else tuple(classes))


_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def _labels(labels, n: int, name: str) -> torch.Tensor | None:
    if labels is None:
        return None
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.shape != (n,) or y.is_floating_point() or y.is_complex() or (n and int(y.min()) < 0):
        raise ValueError(f"{name}: labels must be {n} integers >= 0 (one per row), got "
                         f"{tuple(y.shape)} {y.dtype}")
    return y.to(torch.int64)


def load_table(path: str | os.PathLike, *, image_shape: Sequence[int] | None = None,
               binarize: str | None = None, seed: int = 0, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> Dataset:
    """A :class:`Dataset` of the rows of a ``.npy`` / ``.csv`` / ``.txt`` file.

    Read by :func:`ppvae.data.tables.read_table` (a header row names the columns, recorded as
    the record's ``columns``), then :func:`from_tensor`; the name is the file's name.
    """
    table = read_table(path, min_rows=3)  # train, validation and test need a row each
    return from_tensor(table.values, name=Path(path).name, image_shape=image_shape,
                       binarize=binarize, seed=seed, columns=table.columns, dtype=dtype,
                       device=device)


def _item(item: Any, index: int) -> tuple[torch.Tensor, Any]:
    """(x, label or None) of one Dataset item."""
    label = None
    if isinstance(item, dict):
        if "x" not in item:
            raise ValueError(f"item {index} is a dict without key 'x' (keys {sorted(item)})")
        x, label = item["x"], item.get("y")
    elif isinstance(item, tuple | list):
        if not item:
            raise ValueError(f"item {index} is empty")
        x, label = item[0], (item[1] if len(item) > 1 else None)
    else:
        x = item
    if not isinstance(x, torch.Tensor | np.ndarray):
        from .folders import image_array

        try:
            x = np.ascontiguousarray(image_array(x).transpose(2, 0, 1))  # PIL: [C, H, W]
        except TypeError:
            raise ValueError(f"item {index}: x is a {type(x).__name__}, not a tensor, array "
                             "or PIL image") from None
    return torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x), label


def from_torch_dataset(dataset, *, name: str | None = None,
                       image_shape: Sequence[int] | None = None, binarize: str | None = None,
                       seed: int = 0, progress: bool | None = None,
                       dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> Dataset:
    """A :class:`Dataset` record of the items of a ``torch.utils.data.Dataset``, split 80/10/10.

    Every item is read once (a bar over items when ``progress`` says so,
    :mod:`ppvae.core.progress`) and must be ``x``, ``(x, label, ...)`` or ``{"x": x, "y":
    label}``: ``x`` a tensor, array or PIL image of the same shape in every item (images
    ``[H, W]`` or ``[C, H, W]`` give the record's ``image_shape``), ``label`` an integer or
    None in every item. For data that do not fit in memory, pass the Dataset (or a DataLoader)
    to :func:`ppvae.fit` itself, which streams it.

    Args:
        dataset: the items (map-style with ``__len__``, or iterable).
        name: the record's name (default: the Dataset's class name).
        image_shape: overrides the shape of the items for figures.
        binarize: as :func:`from_tensor`.
        seed: seeds the split and the binarization.
        progress: a bar over the items (None: only on a terminal).
        dtype: dtype of the data tensors.
        device: device of the data and label tensors.
    """
    from ..core.progress import bar

    name = name or type(dataset).__name__
    iterable = isinstance(dataset, torch.utils.data.IterableDataset) or not (
        hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"))
    items = iter(dataset) if iterable else (dataset[i] for i in range(len(dataset)))
    try:
        total = len(dataset)
    except TypeError:  # an iterable without a length
        total = None
    xs: list[torch.Tensor] = []
    ys: list[Any] = []
    with bar(progress, total=total, desc=f"reading {name}", unit="item") as b:
        for i, item in enumerate(items):
            x, y = _item(item, i)
            if xs and x.shape != xs[0].shape:
                raise ValueError(f"{name}: item {i} has shape {tuple(x.shape)}, item 0 "
                                 f"{tuple(xs[0].shape)}; every item needs the same shape")
            if xs and (y is None) != (ys[0] is None):
                raise ValueError(f"{name}: item {i} {'has no' if y is None else 'has a'} label "
                                 "unlike item 0")
            try:
                ys.append(None if y is None else int(y))
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"{name}: item {i} has the label {y!r}; labels must be "
                                 "integers") from None
            xs.append(x)
            b.update()
    if not xs:
        raise ValueError(f"{name}: the dataset has no items")
    x0 = xs[0]
    shape = image_shape if image_shape is not None else (
        tuple(x0.shape) if x0.dim() in (2, 3) else None)
    labels = None if ys[0] is None else torch.tensor(ys, dtype=torch.int64)
    return from_tensor(torch.stack([x.reshape(-1) for x in xs]), labels, name=name,
                       image_shape=shape, binarize=binarize, seed=seed,
                       classes=getattr(dataset, "classes", None), dtype=dtype, device=device)
