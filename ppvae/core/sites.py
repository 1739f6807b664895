"""One record for a latent site as the engine's samplers and local guides see it.

HMC, AIS and the potential work in unconstrained coordinates (the bijection ``biject_to`` of
the site's support, as Pyro's ``initialize_model`` does in ``pyro/infer/mcmc/util.py``); local
VI fits a Gaussian (or flow) there too. Both need the same facts about each latent site of the
model: its event shape, the plates nested inside the data plate, its shape on the real line, and
the transform back onto its support. :func:`latent_site` reads them from one traced site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import IndependentTransform

from .contract import ContractError

__all__ = ["LatentSite", "latent_site"]


class LatentSite(NamedTuple):
    """A continuous latent site of the model, one datapoint's worth."""

    name: str
    mid_shape: tuple[int, ...]  # plate dims nested inside "data" (between particle and data dims)
    event_shape: tuple[int, ...]  # event shape of the site's values
    unconstrained_event: tuple[int, ...]  # event shape in unconstrained coordinates
    transform: torch.distributions.Transform  # biject_to(support): unconstrained -> support

    @property
    def size(self) -> int:
        """Unconstrained coordinates per datapoint (nested plates included)."""
        return math.prod(self.mid_shape) * math.prod(self.unconstrained_event)

    @property
    def is_real(self) -> bool:
        """True when the support is the real line (the transform is the identity)."""
        t = self.transform
        while isinstance(t, IndependentTransform):
            t = t.base_transform
        return t == biject_to(constraints.real)


def latent_site(name: str, site: Mapping[str, Any], num_data: int, *, leading: int,
                purpose: str) -> LatentSite:
    """The :class:`LatentSite` of a traced model site.

    The site's value is ``[*leading dims, *mid, N, *event]`` (``leading`` particle/chain dims:
    0 or 1). ``purpose`` names the method in the error for a discrete site ("HMC and AIS").
    """
    fn = site["fn"]
    if fn.support.is_discrete:
        raise ContractError(
            f"latent site '{name}' has discrete support {fn.support} ({type(fn).__name__}); "
            f"{purpose} move continuous latents only. To sum it out exactly, mark it "
            "infer={'enumerate': 'parallel'} in the model (or pass the model as "
            f"ppvae.enumerate_sites(model, ['{name}'])); otherwise use a continuous relaxation")
    t = biject_to(fn.support)
    event = tuple(fn.event_shape)
    uev = tuple(t.inverse_shape(torch.Size(event)))
    batch = tuple(site["value"].shape[: site["value"].dim() - len(event)])
    mid = batch[leading:-1]
    if len(batch) < leading + 1 or batch[-1] != num_data:
        raise ContractError(f"latent site '{name}' has value shape {tuple(site['value'].shape)};"
                            f" expected [{'1, ' * leading}..., N={num_data}, *event {event}]")
    return LatentSite(name, tuple(mid), event, uev, t)
