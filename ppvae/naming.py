"""Unique Pyro parameter-store names for modules.

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

__all__ = ["unique_name"]

_COUNTERS: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def unique_name(prefix: str, name: str | None = None) -> str:
    """``name`` if given, else ``prefix`` for the first call with that prefix, then ``prefix_i``."""
    if name is not None:
        return name
    i = next(_COUNTERS[prefix])
    return prefix if i == 0 else f"{prefix}_{i}"
