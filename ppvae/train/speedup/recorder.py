"""A one-frame stand-in for ``poutine.trace`` + ``poutine.replay`` + data scaling.

It serves the training step of :class:`ppvae.objectives.ELBO`.

Each training step runs the guide and the model replayed on the guide's latents. With Pyro's own
handlers that is a ``ScaleMessenger``, a ``TraceMessenger`` (a ``Trace`` graph with input and
return nodes) and a ``ReplayMessenger``, and every parameter access (``pyro.module`` walks a
module's parameters, one ``pyro.param`` message each) passes through all of them and is recorded.
At small batches that fixed cost is most of the step (``benchmarks/svi_overhead.py``).

:class:`StepRecorder` does the same work in one frame of Pyro's effect stack:

* every sample site's scale is set to the engine's factor, whatever the model declared (as
  :class:`ppvae.train.scaling.EngineScale` does, outermost): ``local`` inside the per-datapoint
  plate, ``global_`` outside it, times ``latent`` at latent sites (beta);
* with ``replay`` given, latent sites take the guide's value and ``infer`` dict (as
  ``poutine.replay`` does: observed sites are left alone; a name sampled in the guide but
  observed or non-sample there is an error);
* sample sites are recorded in execution order after the site ran (as ``poutine.trace`` does);
* ``param`` messages are answered from Pyro's parameter store and stopped there: the step's
  parameters were registered when :func:`ppvae.fit` collected them, nothing in the loss needs
  them recorded, and handlers the model or guide applies themselves (``poutine.block``,
  ``poutine.lift``...) still see the message first, because they sit nearer the site.
  A name the store does not hold yet is passed on unchanged (Pyro creates it).

Handlers installed *around* the objective would no longer see parameter messages, so
:class:`ppvae.objectives.ELBO` uses this recorder only when every active Pyro handler is a
:class:`ppvae.train.scaling.SiteScale`; otherwise it runs Pyro's trace and replay under
:class:`~ppvae.train.scaling.EngineScale`.
"""

from __future__ import annotations

from typing import Any

import pyro
from pyro.poutine.messenger import Messenger

from ...core.contract import DATA_PLATE
from ..scaling import Factor, inside

__all__ = ["StepRecorder"]


class StepRecorder(Messenger):
    """Record the sample sites of one run; set their scale; optionally replay latents."""

    def __init__(self, local: Factor = 1.0, global_: Factor = 1.0, latent: Factor = 1.0,
                 replay: dict[str, dict] | None = None, *, plate: str = DATA_PLATE):
        super().__init__()
        self.local, self.global_, self.latent, self.plate = local, global_, latent, plate
        self.beta = not (isinstance(latent, (int, float)) and latent == 1)
        self.replay = replay
        self.sites: dict[str, Any] = {}  # sample-site messages by name
        self._store = pyro.get_param_store()

    def _pyro_sample(self, msg) -> None:
        scale = self.local if inside(msg, self.plate) else self.global_
        msg["scale"] = scale * self.latent if self.beta and not msg["is_observed"] else scale
        if self.replay is None or msg["is_observed"]:
            return
        guide_msg = self.replay.get(msg["name"])
        if guide_msg is None:
            return
        if guide_msg["is_observed"]:
            raise RuntimeError(f"site {msg['name']} must be sampled in trace")
        msg["done"] = True
        msg["value"] = guide_msg["value"]
        msg["infer"] = guide_msg["infer"]

    def _pyro_post_sample(self, msg) -> None:
        name = msg["name"]
        if name in self.sites:
            raise RuntimeError(f"Multiple sample sites named '{name}'")
        self.sites[name] = msg

    def _pyro_param(self, msg) -> None:
        name = msg["name"]
        if name in self._store:
            msg["value"] = self._store[name]
            msg["done"] = True
            msg["stop"] = True
