"""Small network helpers shared by models and guides: unique parameter-store names, MLPs, rows.

Unique names.
Pyro's ``PyroModule`` and ``pyro.module`` key parameters by name in a global store, and a module
whose name is already in the store silently adopts the stored values (``pyro/nn/module.py``).
Two guides of one class with the same name would therefore share parameters. Models and guides
in ppvae take ``name=None`` and get a fresh name per instance from :func:`unique_name`: the first
instance of a kind gets the bare prefix, later ones ``prefix_1``, ``prefix_2``, ... (stable for a
script that builds its modules in the same order). Pass an explicit ``name`` to pin it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["flatten_rows", "mlp", "unique_name"]

_COUNTERS: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def unique_name(prefix: str, name: str | None = None) -> str:
    """``name`` if given, else ``prefix`` for the first call with that prefix, then ``prefix_i``."""
    if name is not None:
        return name
    i = next(_COUNTERS[prefix])
    return prefix if i == 0 else f"{prefix}_{i}"


def flatten_rows(x: torch.Tensor, data_dim: int, owner: str) -> torch.Tensor:
    """``x`` as rows ``[N, data_dim]``; a clear error naming ``owner`` when the size is wrong."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != data_dim:
        raise ValueError(f"{owner} expects {data_dim} features per datapoint, got x of shape "
                         f"{tuple(x.shape)}")
    return flat


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
