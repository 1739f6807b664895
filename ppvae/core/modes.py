"""Evaluation mode for the networks of a model and guide, restored afterwards.

Per-datapoint numbers must not depend on which other datapoints share the batch. Modules such
as ``BatchNorm`` and ``Dropout`` do in training mode, so every evaluation in ppvae (log weights
and the bounds on them, AIS, BDMC, HMC, NUTS, local VI) runs with the pair's modules in eval
mode, as ``torch.no_grad`` evaluation loops do, and puts each module back in the mode it had.

The modules are found from the callables themselves: an ``nn.Module`` model or guide (a
``PyroModule``), the object of a bound method (``vae.model``), the arguments of a
``functools.partial``, and modules captured in a function's closure (a plain-function guide
that calls ``pyro.module("encoder", enc)`` on an ``enc`` it closes over).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["evaluates", "evaluation", "modules_of"]


def modules_of(*fns) -> list[nn.Module]:
    """The ``nn.Module`` objects reachable from ``fns`` (see the module docstring)."""
    found: dict[int, nn.Module] = {}

    def visit(obj, depth: int = 0) -> None:
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
        elif depth < 2 and isinstance(obj, functools.partial):
            for a in (obj.func, *obj.args, *obj.keywords.values()):
                visit(a, depth + 1)
        elif depth < 2 and hasattr(obj, "__self__"):
            visit(obj.__self__, depth + 1)
        elif depth < 2 and getattr(obj, "__closure__", None):
            for cell in obj.__closure__:
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    continue

    for fn in fns:
        visit(fn)
    return list(found.values())


@contextmanager
def evaluation(*fns) -> Iterator[None]:
    """Put every module reachable from ``fns`` (and its children) in eval mode; restore after."""
    modes = [(m, m.training) for top in modules_of(*fns) for m in top.modules()]
    try:
        for m, _ in modes:
            m.training = False
        yield
    finally:
        for m, training in modes:
            m.training = training


def evaluates(fn):
    """Run the estimator ``fn(model, *args, guide=None, ...)`` under :func:`evaluation`.

    The modules are those of the model, the ``guide=`` keyword and any callable positional
    argument (an initializing guide).
    """

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        guides = [a for a in args if callable(a) and not isinstance(a, torch.Tensor)]
        with evaluation(model, kwargs.get("guide"), *guides):
            return fn(model, *args, **kwargs)

    return wrapper
