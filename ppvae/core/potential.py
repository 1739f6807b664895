"""Per-datapoint log joints from Pyro traces, in unconstrained coordinates, for MCMC and AIS.

Every sampler in ppvae (annealed importance sampling, bidirectional Monte Carlo, batched HMC)
works on one tensor ``u`` of shape ``[C, N, D]``: C chains for each of N datapoints, D the number
of unconstrained latent coordinates per datapoint. :class:`Potential` maps ``u`` back to the
model's latent sites (``biject_to(support)`` per site, as in Stan and Pyro's HMC; the log
Jacobian is added), runs the model under an outer particle plate of size C conditioned on those
values, and reduces each site's log density to ``[C, N]`` (see :mod:`ppvae.contract`). Because it
reads everything from traces, it works for any model keeping the ppvae contract, and gradients
come from autograd. Since the datapoints' posteriors are independent given the model, the
gradient of the summed log density w.r.t. ``u`` is each chain's own gradient.

The log density is split into an initial part and the remainder, ``log f_init(u)`` and
``log p(x, z(u)) + log|J| - log f_init(u)``: the prior (or a guide) and the likelihood along the
geometric path of AIS (Neal 2001).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from .contract import ContractError, check_pair, is_observed, per_datapoint, site_log_density
from .enum import enum_log_density, enumerate_sites, is_enumerated, sum_out_discrete
from .sites import latent_site
from .trace import particle_groups, trace_fn

__all__ = ["Potential", "PotentialTerms", "prior_guide"]


class PotentialTerms(NamedTuple):
    """log f_init, log f_target - log f_init and their gradients at ``u``."""

    log_init: torch.Tensor  # [C, N]
    log_diff: torch.Tensor  # [C, N]
    grad_init: torch.Tensor  # [C, N, D]
    grad_diff: torch.Tensor  # [C, N, D]


def prior_guide(model):
    """A guide that samples the model's latent sites from its prior (observed sites hidden)."""

    def guide(x, **kwargs):
        return poutine.block(model, hide_fn=lambda msg: bool(msg["is_observed"]))(x, **kwargs)

    return guide


def _any_site(site) -> bool:
    return not site_is_subsample(site)


class Potential:
    """The per-datapoint log joint of ``model`` at data ``x`` as a function of ``u [C, N, D]``.

    Args:
        model: a model keeping the ppvae contract (checked here, with its prior as the guide).
        x: data ``[N, ...]``; tensors follow its device and dtype.
        guide: optional initial distribution (a guide keeping the contract); default the prior.
        model_kwargs: passed to model and guide.
    """

    def __init__(self, model, x: torch.Tensor, guide=None, *,
                 model_kwargs: Mapping[str, Any] | None = None):
        kwargs = dict(model_kwargs or {})
        g_info = check_pair(model, guide, x, model_kwargs=kwargs) if guide is not None else None
        if g_info is not None:  # labels the guide enumerates are summed out of the model too
            model = enumerate_sites(model, g_info.enumerated)
        model = sum_out_discrete(model, x, kwargs)  # so are the model's own discrete latents
        self.model, self.x, self.kwargs = model, x, kwargs
        self.guide = guide
        info = check_pair(model, prior_guide(model), x, model_kwargs=kwargs)
        if g_info is not None:
            info = info._replace(max_plate_nesting=max(info.max_plate_nesting,
                                                       g_info.max_plate_nesting),
                                 vectorized=info.vectorized and g_info.vectorized)
        self.info = info
        self.enumerated = info.enumerated  # discrete latents summed out of every density
        self.particle_dim = info.particle_dim
        self.num_data = info.num_data
        with torch.no_grad():
            ((tr, _),) = self._traces(prior_guide(model), 1, None)
        leading = 1 if info.vectorized else 0  # the particle plate, or none
        self.sites = tuple(latent_site(name, tr.nodes[name], self.num_data, leading=leading,
                                       purpose="HMC and AIS") for name in info.latent
                           if name not in info.enumerated)
        self.dim = sum(s.size for s in self.sites)
        if not self.sites:
            raise ContractError(
                "the model has no continuous latent sites"
                + (f" (its discrete ones {list(info.enumerated)} are summed out)"
                   if info.enumerated else "") + ": nothing for HMC or AIS to move")

    def _traces(self, fn, num_chains: int, values: dict | None) -> list[tuple[Trace, int]]:
        """Traces of ``fn`` for ``num_chains`` chains (one plate, or one trace per chain).

        ``values`` (``[C, *mid, N, *event]``) condition the latent sites. Each entry is
        (trace, chains in it); a trace without the particle plate holds one chain.
        """
        out, start = [], 0
        for group in particle_groups(num_chains, self.info.vectorized):
            run = fn
            if values is not None:
                run = poutine.condition(fn, data=values if group is not None else
                                        {k: v[start] for k, v in values.items()})
            out.append((trace_fn(run, self.x, self.kwargs, particles=group,
                                 particle_dim=self.particle_dim), group or 1))
            start += group or 1
        return out

    def _enum_sum(self, fn, values: dict[str, torch.Tensor], names, include) -> torch.Tensor:
        """``log sum_c exp(sum of included sites)`` at the continuous ``values``: ``[C, N]``."""
        parts, start = [], 0
        num_chains = next(iter(values.values())).shape[0]
        for group in particle_groups(num_chains, self.info.vectorized):
            at = values if group is not None else {k: v[start] for k, v in values.items()}
            parts.append(enum_log_density(
                poutine.condition(fn, data=at), self.x, self.kwargs, names=names,
                include=include, particles=group, particle_dim=self.particle_dim,
                data_plate=self.info.data_plate, num_data=self.num_data))
            start += group or 1
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def _values(self, traces: list[tuple[Trace, int]]) -> dict[str, torch.Tensor]:
        """The latent values of ``traces`` as ``[C, *mid, N, *event]``."""
        out = {}
        for s in self.sites:
            parts: list[torch.Tensor] = []
            for tr, _ in traces:
                v = tr.nodes[s.name]["value"]
                assert isinstance(v, torch.Tensor)  # a traced sample
                parts.append(v if len(traces) == 1 else v.unsqueeze(0))
            out[s.name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        return out

    # --- coordinates -----------------------------------------------------------------------
    def unflatten(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``u [C, N, D]`` -> (site values ``[C, *mid, N, *event]``, log |Jacobian| ``[C, N]``)."""
        c = u.shape[0]
        ldj: torch.Tensor | float  # 0.0, then [C, N] from the first site on
        values, ldj, off = {}, 0.0, 0
        for s in self.sites:
            us = u[..., off : off + s.size].reshape(c, self.num_data, *s.mid_shape,
                                                     *s.unconstrained_event)
            us = us.movedim(1, 1 + len(s.mid_shape))  # [C, *mid, N, *uevent]
            v = s.transform(us)
            lj = s.transform.log_abs_det_jacobian(us, v)  # [C, *mid, N]
            ldj = ldj + per_datapoint(lj, self.particle_dim, torch.Size((c, self.num_data)))
            values[s.name] = v
            off += s.size
        return values, cast(torch.Tensor, ldj)

    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Site values ``[C, *mid, N, *event]`` -> unconstrained ``u [C, N, D]``."""
        parts = []
        for s in self.sites:
            us = s.transform.inv(values[s.name])  # [C, *mid, N, *uevent]
            us = us.movedim(1 + len(s.mid_shape), 1)
            parts.append(us.reshape(us.shape[0], self.num_data, s.size))
        return torch.cat(parts, dim=-1)  # [C, N, D]

    def with_chains(self, values: dict[str, torch.Tensor], num_chains: int) -> dict:
        """Chainless values ``[*mid, N, *event]`` (leading 1s optional) -> ``[C, ...]``."""
        out = {}
        for s in self.sites:
            v = values[s.name]
            full = len(s.mid_shape) + 1 + len(s.event_shape)
            v = v.reshape((1,) * (full - v.dim()) + tuple(v.shape))
            out[s.name] = v.unsqueeze(0).expand(num_chains, *v.shape)
        return out

    def per_datapoint_values(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constrained site values reshaped to ``[C, N, size]`` (one vector per datapoint)."""
        out = {}
        for s in self.sites:
            v = values[s.name].movedim(1 + len(s.mid_shape), 1)
            out[s.name] = v.reshape(v.shape[0], self.num_data, -1)
        return out

    # --- sampling and densities ------------------------------------------------------------
    def sample_init(self, num_chains: int) -> torch.Tensor:
        """``u [C, N, D]`` drawn from the initial distribution (prior, or the guide)."""
        fn = self.guide if self.guide is not None else prior_guide(self.model)
        with torch.no_grad():
            traces = self._traces(fn, num_chains, None)
        return self.flatten(self._values(traces)).detach()

    def _sum_sites(self, traces: list[tuple[Trace, int]], names) -> torch.Tensor:
        """Sum of the named sites' per-datapoint log densities, ``[C, N]``.

        ``names`` is a list, or a function of a trace giving one.
        """
        parts = []
        for tr, k in traces:
            shape = torch.Size((k, self.num_data))
            total = torch.zeros(shape, dtype=self.x.dtype, device=self.x.device)
            for name in (names(tr) if callable(names) else names):
                total = total + per_datapoint(site_log_density(tr.nodes[name]),
                                              self.particle_dim, shape)
            parts.append(total)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def log_parts(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log prior, log likelihood, log |J|), each ``[C, N]``, differentiable in ``u``."""
        values, ldj = self.unflatten(u)
        latent = [s.name for s in self.sites]
        if self.enumerated:  # log p(z) and log p(x, z), the discrete latents summed out
            with pyro.validation_enabled(False):
                joint = self._enum_sum(self.model, values, self.enumerated, _any_site)
                prior = self._enum_sum(self.model, values, self.enumerated,
                                       lambda site: site["name"] in values or is_enumerated(site))
            return prior, joint - prior, ldj
        with pyro.validation_enabled(False):  # a diverging trajectory gives NaN: rejected later
            traces = self._traces(self.model, u.shape[0], values)

        def observed(tr) -> list[str]:
            return [n for n, site in tr.nodes.items()
                    if site["type"] == "sample" and is_observed(site) and n not in values]

        return self._sum_sites(traces, latent), self._sum_sites(traces, observed), ldj

    def log_guide(self, u: torch.Tensor, values: dict | None = None) -> torch.Tensor:
        """Log q(z(u) | x) ``[C, N]`` of the guide (without the Jacobian)."""
        if self.guide is None:
            raise ValueError("this Potential has no guide")
        values = values if values is not None else self.unflatten(u)[0]
        if self.enumerated:  # log q(z | x), a label the guide enumerates summed out
            with pyro.validation_enabled(False):
                return self._enum_sum(self.guide, values, self.enumerated,
                                      lambda site: site["name"] in values or is_enumerated(site))
        with pyro.validation_enabled(False):
            traces = self._traces(self.guide, u.shape[0], values)
        return self._sum_sites(traces, [s.name for s in self.sites])

    def log_target(self, u: torch.Tensor) -> torch.Tensor:
        """Log p(x_n, z(u)) + log |J|, ``[C, N]``."""
        lp, ll, ldj = self.log_parts(u)
        return lp + ll + ldj

    def target_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log target ``[C, N]``, its gradient ``[C, N, D]``) for HMC."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            lt = self.log_target(u)
            (g,) = torch.autograd.grad(lt.sum(), u)
        return lt.detach(), g

    def terms(self, u: torch.Tensor) -> PotentialTerms:
        """Initial and difference terms of the geometric path with their gradients (for AIS)."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            lp, ll, ldj = self.log_parts(u)
            if self.guide is None:
                li, ld = lp + ldj, ll
            else:
                lq = self.log_guide(u, self.unflatten(u)[0]) + ldj
                li, ld = lq, lp + ll + ldj - lq
            (gi,) = torch.autograd.grad(li.sum(), u, retain_graph=True)
            (gd,) = torch.autograd.grad(ld.sum(), u)
        return PotentialTerms(li.detach(), ld.detach(), gi, gd)
