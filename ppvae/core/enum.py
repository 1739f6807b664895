"""Discrete local latents summed out exactly, by Pyro's parallel enumeration.

A model may have discrete per-datapoint latents that nobody samples: a mixture assignment
marked ``infer={"enumerate": "parallel"}`` (or ``@config_enumerate``) that the guide leaves
out, as Pyro's ``TraceEnum_ELBO`` expects; or a label that the guide enumerates (the
semi-supervised M2 model of Kingma et al. 2014, whose guide samples ``y`` under
``@config_enumerate``). ppvae's per-datapoint quantities then concern the continuous latents
z with the discrete ones c summed out:

    log w = log sum_c p(x, c, z) - log sum_c q(c | x) q(z | x, c),    z ~ q(z | x),

both sums computed in one vectorized trace each under ``poutine.enum`` (enumeration dimensions to
the left of the particle plate), then a log-sum-exp over the enumeration dimensions per
datapoint and particle. The continuous latents are drawn once from the guide as usual and
replayed into both enumerated traces. With no guide-enumerated site the second sum is the
guide's plain log density, and ``E[log w]`` is the quantity ``TraceEnum_ELBO`` estimates.

Enumerated sites must be per datapoint: inside the data plate and no plate nested in it (a
per-word topic inside a "words" plate would need a sum inside a product; that is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from .trace import trace_fn, with_leading

__all__ = ["Enumerate", "enum_log_density", "enumerate_sites", "is_discrete", "is_enumerated",
           "replay_continuous", "sum_out_discrete", "summable"]

PARALLEL = "parallel"


def is_enumerated(site: Mapping[str, Any]) -> bool:
    """A latent sample site marked for parallel enumeration."""
    return (site["type"] == "sample" and not site["is_observed"]
            and site["infer"].get("enumerate") == PARALLEL)


def is_discrete(fn) -> bool:
    """Does the distribution ``fn`` have discrete support (False when it declares none)?"""
    try:
        return bool(fn.support.is_discrete)
    except (NotImplementedError, AttributeError):  # distributions without a declared support
        return False


def summable(site: Mapping[str, Any]) -> bool:
    """A latent site that can be summed out exactly, per datapoint.

    Marked for enumeration, or discrete, enumerable and of batch shape [N] (as
    ``TraceEnum_ELBO`` would sum it with the mark).
    """
    fn = site["fn"]
    enumerable = is_discrete(fn) and getattr(fn, "has_enumerate_support", False)
    return is_enumerated(site) or (enumerable and len(fn.batch_shape) == 1)


class Enumerate(Messenger):
    """Mark the named latent sample sites ``infer={"enumerate": "parallel"}``."""

    def __init__(self, names: Collection[str]):
        super().__init__()
        self.names = frozenset(names)

    def _pyro_sample(self, msg) -> None:
        if msg["name"] in self.names and not msg["is_observed"]:
            msg["infer"] = {**msg["infer"], "enumerate": PARALLEL}


def enumerate_sites(fn: Callable, names: Collection[str]) -> Callable:
    """``fn`` with the named latent sites marked for enumeration (``config_enumerate`` by name).

    Used to hand a model whose guide enumerates a label (M2) to tools that have no guide (HMC,
    AIS, local VI): the label is then summed out of the model itself.
    """
    if not names:
        return fn
    marked = frozenset(names)

    def wrapped(*args, **kwargs):
        with Enumerate(marked):
            return fn(*args, **kwargs)

    wrapped.__name__ = getattr(fn, "__name__", "model")
    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]  # modules are found through it
    return wrapped


def sum_out_discrete(model: Callable, x: torch.Tensor,
                     kwargs: Mapping[str, Any] | None = None) -> Callable:
    """``model`` with its per-datapoint discrete latents marked for enumeration.

    For the tools that have no guide to say what to enumerate (HMC, AIS, local VI): a discrete
    latent with enumerable support and batch shape [N] (a mixture assignment, an unobserved
    label) is summed out of the model's density. Others (codes in nested plates, counts) are
    left as they are, for the tool's own error.
    """
    try:
        with torch.no_grad():
            tr = trace_fn(model, x, kwargs)
    except Exception:  # a broken model or x: the contract check that follows names the problem
        return model
    names = [name for name, site in tr.nodes.items() if site["type"] == "sample"
             and not site["is_observed"] and not is_enumerated(site) and summable(site)]
    return enumerate_sites(model, names)


def replay_continuous(tr: Trace, skip: Collection[str]) -> Trace:
    """A trace holding ``tr``'s latent and subsample sites except ``skip`` (for replay)."""
    out = Trace()
    for name, site in tr.nodes.items():
        if site["type"] == "sample" and name not in skip and (
                site_is_subsample(site) or not site["is_observed"]):
            out.add_node(name, **site)
    return out


def _mid_sum(lp: torch.Tensor, nd: int) -> torch.Tensor:
    """Sum the dims between the particle dim and the data dim, keeping enumeration dims."""
    lp = with_leading(lp, nd)
    return lp.sum(dim=tuple(range(-nd + 1, -1)), keepdim=True) if nd > 2 else lp


def enum_log_density(fn: Callable, x: torch.Tensor, kwargs: Mapping[str, Any], *,
                     names: Collection[str], include: Callable[[Mapping[str, Any]], bool],
                     particles: int | None, particle_dim: int, data_plate: str,
                     num_data: int) -> torch.Tensor:
    """``log sum_c exp(sum of the included sites' log densities)``, ``[particles or 1, N]``.

    ``fn`` runs under ``poutine.enum`` with the sites ``names`` enumerated in parallel (to the
    left of the particle plate at ``particle_dim``); each site's log density is masked, not
    scaled (:func:`ppvae.core.contract.site_log_density`).
    """
    from .contract import ContractError, site_log_density  # the contract imports this module

    marked = enumerate_sites(fn, names)
    enumerated = poutine.enum(marked, first_available_dim=particle_dim - 1)
    tr = trace_fn(enumerated, x, kwargs, particles=particles, particle_dim=particle_dim)
    nd, total = -particle_dim, None
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or not include(site):
            continue
        if is_enumerated(site):
            nested = [f.name for f in site["cond_indep_stack"]
                      if f.vectorized and f.name != data_plate and f.dim is not None
                      and f.dim > particle_dim]
            if nested:
                raise ContractError(
                    f"enumerated site '{name}' is inside plate(s) {nested} nested in the data "
                    f"plate '{data_plate}'; ppvae sums out discrete latents per datapoint only "
                    "(one value per datapoint): move it out of the nested plate or give the "
                    "guide a site for it")
        lp = _mid_sum(site_log_density(site), nd)
        total = lp if total is None else total + lp
    assert total is not None  # every model has an observed site, every caller includes it
    if total.dim() > nd:
        total = total.reshape(-1, *total.shape[total.dim() - nd:]).logsumexp(0)
    return total.reshape(total.shape[0], total.shape[-1]).expand(particles or 1, num_data)
