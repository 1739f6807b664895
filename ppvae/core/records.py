"""Notebook-friendly result records: a compact ``repr`` and ``to_dataframe``.

ppvae's results (:class:`ppvae.Bound`, :class:`ppvae.GapReport`, :class:`ppvae.AISResult`,
...) are NamedTuples or dataclasses of per-datapoint tensors. Their default ``repr`` prints
every tensor in full; :func:`record_repr` prints one line per field instead, each tensor as its
shape with a summary (mean, and the range for small-integer or boolean values), so a notebook
cell or a log shows what was computed at a glance::

    Bound(
      value=tensor[100] float32  mean -95.31  (min -140.2, max -61.07),
      stderr=tensor[100] float32  mean 0.104,
      k=1000,
    )

:func:`frame` builds the pandas DataFrame that a record's ``to_dataframe()`` returns: one row
per datapoint (index ``datapoint``), one column per per-datapoint quantity. pandas comes with
ArviZ, so it is always installed.

A record class opts in with ``__repr__ = record_repr`` and a ``to_dataframe`` method that
calls :func:`frame` (or :func:`per_datapoint_frame` for the fields of length N).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["frame", "per_datapoint_frame", "record_fields", "record_repr", "summarize"]

_MAX_INLINE = 6  # a tensor with at most this many elements is shown in full


def record_fields(obj: Any) -> dict[str, Any]:
    """The fields of a NamedTuple or dataclass instance, in declaration order."""
    if hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.repr}
    raise TypeError(f"{type(obj).__name__} is not a NamedTuple or dataclass record")


def _number(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def _tensor(t: torch.Tensor | np.ndarray) -> str:
    a = t.detach().cpu() if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    dtype = str(a.dtype).removeprefix("torch.")
    shape = "[" + ", ".join(str(s) for s in a.shape) + "]"
    if a.numel() == 0:
        return f"tensor{shape} {dtype} (empty)"
    if a.numel() <= _MAX_INLINE:
        vals = ", ".join(_number(float(v)) if a.is_floating_point() else str(v.item())
                         for v in a.reshape(-1))
        return f"tensor{shape} {dtype} [{vals}]" if a.dim() else f"tensor({vals}) {dtype}"
    if a.dtype == torch.bool:
        return f"tensor{shape} bool  {int(a.sum())} true"
    if not (a.is_floating_point() or a.is_complex()):
        return f"tensor{shape} {dtype}  range {int(a.min())}..{int(a.max())}"
    f = a.double()
    finite = f[torch.isfinite(f)]
    text = f"tensor{shape} {dtype}  mean {_number(float(f.mean()))}"
    if finite.numel():
        text += f"  (min {_number(float(finite.min()))}, max {_number(float(finite.max()))})"
    if finite.numel() < f.numel():
        text += f"  {f.numel() - finite.numel()} non-finite"
    return text


def summarize(value: Any, indent: str = "  ") -> str:
    """One field's value, compact: tensors summarized, records nested, long lists counted."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return _tensor(value)
    if hasattr(value, "_asdict") or (dataclasses.is_dataclass(value)
                                     and not isinstance(value, type)):
        return record_repr(value, indent=indent + "  ")
    if isinstance(value, Mapping):
        if len(value) > _MAX_INLINE:
            return f"{{{len(value)} entries: {', '.join(map(repr, list(value)[:3]))}, ...}}"
        inner = ", ".join(f"{k!r}: {summarize(v, indent + '  ')}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple) and len(value) > _MAX_INLINE:
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str) and len(value) > 120:
        return repr(value[:117] + "...")
    return repr(value)


def record_repr(self: Any, indent: str = "  ") -> str:
    """``ClassName(field=summary, ...)`` with one field per line."""
    fields = record_fields(self)
    name = type(self).__name__
    if not fields:
        return f"{name}()"
    close = indent[:-2]
    lines = [f"{indent}{k}={summarize(v, indent)}," for k, v in fields.items()]
    return f"{name}(\n" + "\n".join(lines) + f"\n{close})"


def _column(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16 or v.dtype == torch.float16:
            v = v.float()
        return v.numpy()
    return np.asarray(v)


def frame(columns: Mapping[str, Any], *, index: Any = None, index_name: str = "datapoint"):
    """A pandas DataFrame of 1-D per-datapoint columns (tensors or arrays of equal length).

    Args:
        columns: column name to values ``[N]``; a ``[N, D]`` value becomes D columns
            ``name[0]`` ... ``name[D-1]``.
        index: the row labels (default ``0 .. N-1``).
        index_name: the index's name.
    """
    import pandas as pd

    data: dict[str, np.ndarray] = {}
    n = None
    for name, v in columns.items():
        a = _column(v)
        if a.ndim == 0:
            raise ValueError(f"column {name!r} is a scalar; frame() takes per-datapoint values")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(f"column {name!r} has {a.shape[0]} rows, the others {n}")
        if a.ndim == 1:
            data[name] = a
        else:
            flat = a.reshape(a.shape[0], -1)
            for j in range(flat.shape[1]):
                data[f"{name}[{j}]"] = flat[:, j]
    df = pd.DataFrame(data, index=index)
    df.index.name = index_name
    return df


def per_datapoint_frame(obj: Any, *, skip: tuple[str, ...] = (), index: Any = None):
    """The fields of ``obj`` that are tensors with the leading length of its first such field.

    For records whose per-datapoint values are plain tensor fields ``[N]`` (or ``[N, D]``);
    scalars and differently shaped tensors (per-step traces, draws) are left out.
    """
    cols: dict[str, Any] = {}
    n = None
    for k, v in record_fields(obj).items():
        if k in skip or not isinstance(v, torch.Tensor | np.ndarray) or v.ndim == 0:
            continue
        if n is None:
            n = v.shape[0]
        if v.shape[0] == n and v.ndim <= 2:
            cols[k] = v
    if not cols:
        raise ValueError(f"{type(obj).__name__} holds no per-datapoint values")
    return frame(cols, index=index)
