"""The training objective captured as a graph of tensor operations and replayed: ``fit(jit=True)``.

Each eager training step runs the model and the guide through Pyro's effect handlers: plates,
sample and param messages, ``torch.distributions`` objects. At small minibatches that Python work
costs more than the arithmetic (``benchmarks/svi_overhead.py``). :class:`CapturedLoss` runs the
objective once per minibatch *signature* under ``torch.fx``'s ``make_fx`` with real tensors,
which records the ATen operations the step performs, and from then on calls that recorded graph
(parameters, module buffers, data and per-step scalars as its inputs). Gradients flow through
it as through the eager step; random draws stay in the graph (fresh each call, from torch's
global generator); :mod:`ppvae.graph_passes` removes the no-ops and folds the constants that
Pyro's bookkeeping leaves in the graph, with exact rewrites only.

What the capture assumes, and how it checks:

* The model and guide run the same tensor operations for every minibatch of one signature (shapes,
  dtypes, devices, non-tensor keyword values, ``data_scale``, training mode): no Python branching
  on data values, no Python-side random numbers, no attribute assignment in ``forward``. The
  first ``verify_calls`` replays of each graph (the captured minibatch, then the next one) are
  compared with the eager objective's loss and parameter gradients under the same random state
  and buffers: a mismatch raises :class:`CaptureError` and names the signature. Reassigning a
  parameter or buffer attribute during the capture is an error at once.
* A quantity of the objective that changes with the step (the beta of KL warm-up) must be
  declared by :meth:`ppvae.train.scaling.Objective.scalars`: it is then an input of the graph, not
  a constant frozen into it.
* Capturing does not consume random numbers, so a seeded run with ``jit=True`` draws the same
  noise as the eager run and follows it up to floating-point rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .graph_passes import simplify_graph

if TYPE_CHECKING:
    from ...core.contract import PairInfo
    from ..objectives import Objective

__all__ = ["CaptureError", "CapturedLoss", "takes_train_size", "training_loss"]

# Values read out of tensors during the capture (label range checks, one_hot's own check) are
# frozen into the graph rather than refused; the replays checked against the eager objective
# catch control flow that actually depends on them.
_READ_VALUES: dict[str, Any]
_READ_VALUES = {"_error_on_data_dependent_ops": False} if "_error_on_data_dependent_ops" in \
    inspect.signature(make_fx).parameters else {}


class CaptureError(RuntimeError):
    """The objective cannot be replayed from a captured graph (use ``jit=False``)."""


def training_loss(objective, model, guide, info, params: Sequence[torch.Tensor],
                  buffers: Sequence[torch.Tensor], *, jit: bool, validate: bool,
                  train_size: int | None = None) -> Callable:
    """The training step's loss as ``f(x, kwargs, data_scale, step)``.

    It is the objective run eagerly, or (``jit``) a :class:`CapturedLoss`. ``train_size`` is
    the number of training rows N (global latents count 1 / N, :mod:`ppvae.train.scaling`).
    """
    size = {"train_size": train_size} if takes_train_size(objective) else {}
    if not jit:
        def eager(x, kwargs, data_scale, step):
            return objective.loss(model, guide, x, info=info._replace(num_data=x.shape[0]),
                                  data_scale=data_scale, step=step, kwargs=kwargs, **size)
        return eager
    if validate:
        raise ValueError("jit=True replays a captured graph, which skips the per-step value "
                         "checks of validate=True; use one or the other")
    why = objective.jit_capturable()
    if why is not None:
        raise ValueError(f"jit=True cannot capture this objective: {why}; train with jit=False")
    return CapturedLoss(objective, model, guide, info, params, buffers,
                        train_size=size.get("train_size"))


def takes_train_size(objective) -> bool:
    """Does ``objective.loss`` take ``train_size``?

    An objective written before global latents were scaled by the engine may not; it is then
    called without it.
    """
    params = inspect.signature(objective.loss).parameters
    return "train_size" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _static(value):
    """A hashable stand-in for a non-tensor keyword value (its identity when unhashable)."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("id", id(value))


@dataclass
class _Graph:
    forward: Callable
    replays: int = 0


@dataclass
class CapturedLoss:
    """``objective.loss(model, guide, x, ...)`` replayed from graphs captured per signature.

    Args:
        objective: a :mod:`ppvae.objectives` objective.
        model, guide: the pair (``nn.Module`` s or plain functions keeping the contract).
        info: the pair's :class:`ppvae.PairInfo`.
        params: the trainable tensors (unconstrained) the objective reads, each a graph input.
        buffers: module buffers (running statistics, EMA codebooks), graph inputs too, so that
            in-place updates in ``forward`` are replayed on them.
        verify_calls: replays of each graph checked against the eager objective.
        rtol: relative tolerance of that check on the loss; a gradient may differ from the
            eager one by ``10 * rtol`` of its largest entry (float32 rounding of the same
            operations in another order is ~1e-6 relative; a different control path or a lost
            custom backward is far off).
        graphs: the captured graphs by minibatch signature (filled as minibatches come).
        train_size: the training rows N, passed to the objective (global latents: 1 / N).
    """

    objective: Objective
    model: Callable
    guide: Callable
    info: PairInfo
    params: Sequence[torch.Tensor]
    buffers: Sequence[torch.Tensor] = ()
    verify_calls: int = 2
    rtol: float = 1e-4
    graphs: dict = field(default_factory=dict)
    train_size: int | None = None

    def __call__(self, x: torch.Tensor, kwargs: dict, data_scale: float, step: int):
        """The loss of minibatch ``x``: replayed from its signature's graph once verified."""
        tensor_kw = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
        scalars = self.objective.scalars(step)
        key = (_sig(x), *(_sig(kwargs[k]) for k in tensor_kw),
               *((k, _static(v)) for k, v in kwargs.items() if k not in tensor_kw),
               float(data_scale), len(scalars), torch.is_grad_enabled(),
               *(m.training for m in (self.model, self.guide) if isinstance(m, torch.nn.Module)))
        scalar_t = [torch.tensor(float(s), device=x.device, dtype=torch.get_default_dtype())
                    for s in scalars]
        inputs = (x, *(kwargs[k] for k in tensor_kw), *scalar_t, *self.params, *self.buffers)
        graph = self.graphs.get(key)
        if graph is not None and graph.replays >= self.verify_calls:
            return graph.forward(*inputs)  # the steady state: one call, no Pyro
        static_kw = {k: v for k, v in kwargs.items() if k not in tensor_kw}
        info = self.info._replace(num_data=x.shape[0])
        n_kw, n_sc = len(tensor_kw), len(scalars)

        def run(*flat):
            kw = {**static_kw, **dict(zip(tensor_kw, flat[1:1 + n_kw], strict=True))}
            extra: dict[str, Any] = {"scalars": tuple(flat[1 + n_kw:1 + n_kw + n_sc])} \
                if n_sc else {}
            if self.train_size is not None:
                extra["train_size"] = self.train_size
            return self.objective.loss(self.model, self.guide, flat[0], info=info,
                                       data_scale=data_scale, step=step, kwargs=kw, **extra)

        if graph is None:
            graph = self.graphs[key] = _Graph(self._capture(run, inputs, key))
        graph.replays += 1
        return self._verified(graph, run, inputs, key)

    def _capture(self, run, inputs, key) -> Callable:
        owners = _attributes(self.model, self.guide)
        saved = [b.detach().clone() for b in self.buffers]
        try:
            with _forked_rng(inputs[0].device):  # the capture draws no numbers from the run
                gm = make_fx(run, tracing_mode="real", pre_dispatch=True, **_READ_VALUES)(*inputs)
        except RuntimeError as e:
            if "data-dependent" not in str(e):
                raise
            raise CaptureError(
                f"the model, guide or objective reads a value out of a tensor that depends on "
                f"the minibatch or the parameters (minibatch {key[0]}): Python control flow on "
                "data (or Pyro's validation checks) cannot be captured; train with jit=False"
            ) from e
        with torch.no_grad():  # the capture's own buffer updates are not a training step
            for b, v in zip(self.buffers, saved, strict=True):
                b.copy_(v)
        if _attributes(self.model, self.guide) != owners:
            raise CaptureError(
                "the model or guide reassigned a parameter or buffer attribute while running; "
                "a captured graph cannot replay that (update buffers in place, or use jit=False)")
        if not any(n.op == "output" and isinstance(n.args[0], torch.fx.Node)
                   for n in gm.graph.nodes):
            raise CaptureError("the objective returned no tensor under capture (minibatch "
                               f"{key[0]})")
        return simplify_graph(gm, inputs).forward

    def _verified(self, graph: _Graph, run, inputs, key) -> torch.Tensor:
        """Replay ``graph`` and check its loss and parameter gradients against the eager objective.

        Both run under the same random numbers and buffers.
        """
        wrt = [p for p in self.params if p.requires_grad]
        saved = [b.detach().clone() for b in self.buffers]
        with _forked_rng(inputs[0].device):  # grad mode as in the step: forward may check it
            eager = run(*inputs)
            eager_grads = _grads(eager, wrt, retain=False)
        with torch.no_grad():
            for b, v in zip(self.buffers, saved, strict=True):
                b.copy_(v)  # the replay below makes this step's buffer update
        loss = graph.forward(*inputs)
        if not bool(torch.isfinite(eager.detach()).all()):
            return loss  # a non-finite step is for fit's NaN handling to report
        problem = None
        if loss.shape != eager.shape or not bool(torch.isclose(
                loss.detach(), eager.detach(), rtol=self.rtol, atol=self.rtol).all()):
            problem = f"loss {loss.detach().tolist()} where the eager step gives " \
                      f"{eager.detach().tolist()}"
        else:
            for p, a, b in zip(wrt, eager_grads, _grads(loss, wrt, retain=True), strict=True):
                if (a is None) != (b is None) or (a is not None and float(
                        (a - b).abs().max()) > self.rtol * 10 * float(a.abs().max()) + 1e-6):
                    problem = f"a different gradient for a parameter of shape {tuple(p.shape)}"
                    break
        if problem is not None:
            raise CaptureError(
                f"the captured training step (minibatch {key[0]}) gives {problem}: the model or "
                "guide does not run the same tensor operations for every minibatch (Python "
                "branching on data values, Python-side randomness, a per-step quantity the "
                "objective does not declare in scalars()), or uses a custom "
                "torch.autograd.Function whose backward a graph of forward operations does not "
                "keep; train it with jit=False")
        return loss


def _grads(loss: torch.Tensor, wrt: list[torch.Tensor], retain: bool) -> list:
    if not wrt or not loss.requires_grad:
        return [None] * len(wrt)
    return list(torch.autograd.grad(loss, wrt, allow_unused=True, retain_graph=retain))


def _sig(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device.type, t.device.index


def _attributes(*modules) -> tuple:
    """The identity of every parameter and buffer attribute of the modules."""
    out: list[tuple[str, int]] = []
    for m in modules:
        if isinstance(m, torch.nn.Module):
            out.extend((name, id(t)) for name, t in m.named_parameters(remove_duplicate=False))
            out.extend((name, id(t)) for name, t in m.named_buffers(remove_duplicate=False))
    return tuple(out)


def _forked_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
