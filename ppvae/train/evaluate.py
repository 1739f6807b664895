"""The pair evaluated off the training step.

The held-out ELBO :func:`ppvae.fit` reports per epoch, and the diagnosis of a non-finite step:

* :func:`heldout_elbo` sums the per-datapoint ELBO (Kingma and Welling 2014) from
  :func:`ppvae.log_weights` over a stream of batches, as a 0-dim tensor (no host sync), with
  the number of rows.
* :func:`conditional_pair`: a pair with global latents (outside the per-datapoint plate) as the
  per-datapoint pair of the model conditioned on the global guide's mean
  (:func:`ppvae.fix_globals`), which the validation ELBO evaluates.
* :func:`first_nonfinite_site` names the first guide / model site (in execution order) whose log
  density is non-finite, using the per-site log densities of :mod:`ppvae.contract`;
  :func:`describe_failure` writes the message fit reports, naming the step, that site and the
  first non-finite parameter. :class:`NonFiniteError` carries it out of the loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyro
import torch

from ..core.contract import PairInfo, is_latent, is_observed, site_log_density
from ..core.globals import fix_globals, global_values
from ..core.trace import trace_pair
from ..core.weights import log_weights
from .params import nonfinite_param

__all__ = [
    "NonFiniteError",
    "conditional_pair",
    "describe_failure",
    "first_nonfinite_site",
    "heldout_elbo",
]


class NonFiniteError(RuntimeError):
    """Raised internally when a step produced a non-finite loss or parameters."""


def heldout_elbo(model, guide, batches: Iterable[tuple[torch.Tensor, dict]], info: PairInfo,
                 *, num_samples: int = 1, fixed_kw: dict | None = None
                 ) -> tuple[torch.Tensor | None, int]:
    """The per-datapoint ELBOs over ``batches`` of ``(x, kwargs)`` summed, and the row count.

    The sum is a float64 0-dim tensor (no host sync), None when there are no rows.
    """
    total, rows = None, 0
    with torch.no_grad(), pyro.validation_enabled(False):
        for xb, kw in batches:
            lw = log_weights(model, guide, xb, num_samples, info=info._replace(
                num_data=xb.shape[0]), model_kwargs={**(fixed_kw or {}), **kw},
                progress=False)  # [S, B]; fit's own bar counts the epochs
            part = lw.mean(0).sum().double()
            total = part if total is None else total + part
            rows += xb.shape[0]
    return total, rows


def conditional_pair(model, guide, info: PairInfo, x: torch.Tensor, kwargs: dict):
    """``(model, guide, info)`` with the global latents fixed at the global guide's mean.

    The guide's distribution at each global site is run on ``x``; a distribution without a mean
    gives one draw instead. The fixed sites are hidden from per-datapoint estimators
    (:func:`ppvae.fix_globals`), so the ELBO of the returned pair is that of
    ``p(x, z | W = E_q[W])``, without the globals' KL.
    """
    try:
        values = global_values(guide, x, "mean", model_kwargs=kwargs)
    except NotImplementedError:  # a distribution without .mean
        values = global_values(guide, x, "sample", model_kwargs=kwargs)
    latent = tuple(n for n in info.latent if n not in info.globals)
    return (fix_globals(model, values), fix_globals(guide, values),
            info._replace(globals=(), latent=latent))


def first_nonfinite_site(model, guide, x: torch.Tensor, kwargs: dict) -> str | None:
    """Describe the first guide / model site whose log density is non-finite on ``x``.

    Sites are taken in execution order, at the current parameters; None when all are finite.
    """
    bad_rows = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(-1).nonzero().flatten()
    data_note = (f"; the data have non-finite values in batch rows {bad_rows[:5].tolist()}"
                 if len(bad_rows) else "")
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            # the engine's one trace primitive (guide traced, model replayed on its latents,
            # subsample sites pruned): the same traces as the objectives and the contract use
            guide_tr, model_tr = trace_pair(model, guide, x, kwargs)
    except Exception as e:  # the diagnosis must not hide the original problem
        return f"re-running the pair failed ({type(e).__name__}: {e}){data_note}"
    for role, tr, keep in (("guide", guide_tr, is_latent),
                           ("model", model_tr, lambda s: is_latent(s) or is_observed(s))):
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or not keep(site):
                continue
            lp = site_log_density(site)
            if not torch.isfinite(lp).all():
                rows = (~torch.isfinite(lp)).reshape(-1, lp.shape[-1]).any(0).nonzero()
                return (f"first non-finite log density at {role} site '{name}' (batch rows "
                        f"{rows.flatten()[:5].tolist()}){data_note}")
    return None


def describe_failure(step: int, where: str, model, guide, x: torch.Tensor, kwargs: dict,
                     params: dict[str, torch.Tensor], restore, err=None) -> str:
    """The message for a non-finite step.

    It names the first non-finite parameter, calls ``restore()`` (back to the last finite
    state), then re-runs the batch there and names the first site with a non-finite log density
    (or says the update diverged).
    """
    bad_param = nonfinite_param(params)
    restore()
    site = first_nonfinite_site(model, guide, x, kwargs)
    msg = f"non-finite {where} at step {step}"
    msg += f" ({type(err).__name__}: {err})" if err is not None else ""
    msg += ": " + (site or "the batch's log densities are finite at the last finite "
                   "parameters, so the update diverged (learning rate too large, or a "
                   "non-finite gradient)")
    if bad_param is not None:
        msg += f"; parameter '{bad_param}' had become non-finite"
    return msg + "; parameters restored to the last finite state"
