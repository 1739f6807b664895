"""The inference-gap decomposition of Cremer, Li and Duvenaud (2018), per datapoint.

For a model, an amortized guide q and data x, with q* the best member of q's family for each
datapoint separately (fitted by :func:`ppvae.fit_local`, started at q's output):

    log p(x) - ELBO[q] = (log p(x) - ELBO[q*]) + (ELBO[q*] - ELBO[q])
      inference gap    =  approximation gap    +   amortization gap

:func:`gaps` estimates every term per datapoint with its Monte Carlo standard error and records
which estimator produced each number. log p(x) comes from ``log_px``: exact values (PPCA), the
IWAE bound from the best available proposal (the fitted q* with the highest ELBO), a name in
:data:`LOG_PX` ("iwae", "ais"), or any callable
``fn(model, x, proposal, model_kwargs, **options) -> LogPx``. The result is a
:class:`ppvae.GapReport` (markdown, JSON round trip, PNG).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

import torch

from ..core.bounds import Bound, elbo, iwae
from ..core.contract import check_pair, is_latent
from ..core.diagnostic_warnings import khat_threshold
from ..core.enum import is_enumerated
from ..core.progress import stage
from ..core.trace import trace_fn
from ..infer.ais import ais_log_px
from ..infer.local.families import FAMILIES
from ..infer.local.vi import LocalGuide, fit_local
from .report import Estimators, GapReport, GapRow, LogPx

__all__ = [
    "LOG_PX",
    "LogPx",
    "estimate_log_px",
    "gaps",
    "guide_elbos",
    "infer_family",
    "iwae_log_px",
    "named_guides",
]

def iwae_log_px(model, x, proposal, model_kwargs, *, k: int = 1000, num_estimates: int = 2,
                chunk_size: int | None = None, progress: bool | None = None) -> LogPx:
    """Log p(x) by the IWAE_k bound with ``proposal`` as the importance distribution.

    :func:`ppvae.iwae` with its calibrated default (two independent estimates, ``2 k`` samples
    per datapoint); the Pareto k̂ of the weights comes along for the report. ``progress``
    goes to :func:`ppvae.iwae`.
    """
    b = iwae(model, proposal, x, k, num_estimates=num_estimates, chunk_size=chunk_size,
             model_kwargs=model_kwargs, progress=progress)
    source = (f"local {proposal.family} q*" if isinstance(proposal, LocalGuide)
              else type(proposal).__name__)
    limit = khat_threshold(k) if b.khat is not None else None
    return LogPx(b.per_datapoint, b.stderr, f"IWAE_{k} from {source}", b.khat, limit)


# the estimators ``gaps(..., log_px=name)`` knows by name; any other is passed as a callable
LOG_PX: Mapping[str, Callable[..., LogPx | tuple[torch.Tensor, torch.Tensor, str]]] = (
    MappingProxyType({"iwae": iwae_log_px, "ais": ais_log_px}))


def _family_of(q) -> str | None:
    """"diag", "full" or "flow" for one guide site's distribution, None for anything else."""
    while isinstance(q, torch.distributions.Independent) and not isinstance(
            q.base_dist, torch.distributions.Normal):
        q = q.base_dist
    if isinstance(q, torch.distributions.MultivariateNormal):
        return "full"
    if isinstance(q, torch.distributions.Normal) or (
            isinstance(q, torch.distributions.Independent)
            and isinstance(q.base_dist, torch.distributions.Normal)):
        return "diag"
    if isinstance(q, torch.distributions.TransformedDistribution):
        return "flow"
    return None


def infer_family(guide, x: torch.Tensor, model_kwargs: Mapping[str, Any] | None = None) -> str:
    """The local family matching an amortized guide's q(z | x): "diag", "full" or "flow".

    Read from ``guide.distribution(x)`` when the guide has one, else from one trace of the
    guide: Normal sites (with ``.to_event``) are "diag", MultivariateNormal "full", transformed
    distributions "flow". Raises ``ValueError`` naming the guide and its sites otherwise.
    """
    if isinstance(guide, LocalGuide):
        return guide.family
    inner = guide
    while isinstance(inner, functools.partial):  # config_enumerate wraps a partial
        inner = inner.func
    label = getattr(inner, "__name__", None) or type(inner).__name__
    with torch.no_grad():
        if hasattr(guide, "distribution"):
            sites = {"distribution(x)": guide.distribution(x[:1])}
        else:
            tr = trace_fn(guide, x, model_kwargs)
            sites = {n: s["fn"] for n, s in tr.nodes.items()  # enumerated: summed out
                     if s["type"] == "sample" and is_latent(s) and not is_enumerated(s)}
    kinds = {n: _family_of(q) for n, q in sites.items()}
    found = set(kinds.values())
    if None not in found and len(found) == 1:
        return cast(str, found.pop())
    if found == {"diag", "full"}:
        return "full"  # a full-covariance q* contains every diagonal site
    listed = ", ".join(f"'{n}': {type(q).__name__}" for n, q in sites.items())
    raise ValueError(f"cannot tell the local family of guide {label} from its sites ({listed}); "
                     "pass families={name: 'diag' | 'full' | 'flow'} to choose q*'s family")


def _as_log_px(value) -> LogPx:
    if isinstance(value, LogPx):
        return value
    if isinstance(value, tuple) and len(value) in (3, 5):
        return LogPx(*value)
    raise TypeError("a log_px estimator must return LogPx(per_datapoint, stderr, estimator) "
                    f"or such a 3-tuple, got {type(value).__name__}")


def gaps(model, guides, x: torch.Tensor, log_px="iwae", *, families=None,
         local: Mapping[str, LocalGuide] | None = None, local_steps: int = 1000,
         local_options: Mapping | None = None, num_samples: int = 1000,
         log_px_options: Mapping | None = None, progress: bool | None = None,
         model_kwargs: Mapping[str, Any] | None = None) -> GapReport:
    """Split each guide's inference gap on ``x`` into approximation and amortization gaps.

    Args:
        model: a model keeping the ppvae contract.
        guides: one amortized guide, or a mapping name -> guide.
        x: data ``[N, ...]`` (every datapoint gets its own q*).
        log_px: a tensor ``[N]`` of exact values, a name in :data:`LOG_PX` ("iwae" by
            default, "ais"), or a callable (module docstring).
        families: q*'s family per guide (str or mapping); default :func:`infer_family`.
        local: already fitted q* per guide name (skips :func:`fit_local` for those).
        local_steps: :func:`fit_local`'s ``num_steps``.
        local_options: :func:`fit_local`'s other options.
        num_samples: samples per datapoint for each ELBO.
        log_px_options: options for the log p(x) estimator (for "iwae": ``k``, default 1000,
            ``num_estimates``, default 2, ``chunk_size``).
        progress: one bar over the stages (per guide: ELBO[q], the q* fit, ELBO[q*]; then
            log p(x)), each stage's own bar beneath it: True, False, or None for them only on
            a terminal (:mod:`ppvae.core.progress`).
        model_kwargs: passed to model and guides.
    """
    kwargs = dict(model_kwargs or {})
    guides, families = named_guides(guides, families)
    local, timings, partial = dict(local or {}), [], []
    total = 3 * len(guides) + 1 - sum(name in local for name in guides)
    with stage(progress, "gaps", total=total, unit="stage") as bar:
        for name, guide in guides.items():
            check_pair(model, guide, x,
                       model_kwargs=kwargs)  # bad x or a broken pair: a named error first
            family = families.get(name) or infer_family(guide, x, kwargs)
            if family not in FAMILIES:
                raise ValueError(f"family for guide '{name}' must be one of {FAMILIES}, "
                                 f"got {family!r}")
            amortized, local[name], optimal, spent = guide_elbos(
                model, guide, x, family, local.get(name), name=name, local_steps=local_steps,
                local_options=local_options, num_samples=num_samples, kwargs=kwargs,
                progress=progress, bar=bar)
            timings += spent
            partial.append((name, family, amortized, optimal))

        t = time.perf_counter()
        best = max(partial, key=lambda r: r[3].mean)  # the q* with the highest ELBO
        bar.set_postfix_str("log p(x)")
        ref = estimate_log_px(model, x, log_px, local[best[0]], kwargs, log_px_options,
                              progress=progress)
        bar.update(1)
        timings.append((f"log p(x) {ref.estimator}", time.perf_counter() - t))

    rows = []
    for name, family, amortized, optimal in partial:
        fit = local[name].fit
        how = (f"{fit.num_steps} steps, {fit.num_converged}/{fit.converged.numel()} converged"
               if fit is not None else "given")
        est = Estimators(ref.estimator,
                         f"ELBO, {optimal.num_samples} samples from local {family} q* ({how})",
                         f"ELBO, {amortized.num_samples} samples from amortized q")
        rows.append(GapRow.build(name, family, ref, optimal, amortized, est))
    return GapReport(tuple(rows), int(x.shape[0]), tuple(timings))


def named_guides(guides, families) -> tuple[Mapping[str, Any], dict[str, str]]:
    """``guides`` and ``families`` as mappings keyed by guide name.

    ``guides`` becomes a mapping name -> guide (one guide is named "guide"); ``families`` (a
    family for all, a mapping, or None) a mapping name -> family for those given.
    """
    if not isinstance(guides, Mapping):
        guides = {"guide": guides}
    if isinstance(families, str):
        families = dict.fromkeys(guides, families)
    return guides, dict(families or {})


def guide_elbos(model, guide, x: torch.Tensor, family: str, qstar: LocalGuide | None, *,
                name: str, local_steps: int, local_options: Mapping | None, num_samples: int,
                kwargs: Mapping, progress: bool | None = False, bar=None
                ) -> tuple[Bound, LocalGuide, Bound, list[tuple[str, float]]]:
    """One guide's stage of :func:`gaps`: ELBO[q], q* (fitted unless given) and ELBO[q*].

    Also returns the seconds each took. ``progress`` goes to each step's own bar; ``bar``
    (the stages' bar of :func:`gaps`, if any) names each step and counts it when done.
    """
    timings = []

    def timed(label: str, fn):
        if bar is not None:
            bar.set_postfix_str(label)
        t = time.perf_counter()
        out = fn()
        timings.append((label, time.perf_counter() - t))
        if bar is not None:
            bar.update(1)
        return out

    amortized = timed(f"ELBO[q] {name}", lambda: elbo(model, guide, x, num_samples,
                                                      model_kwargs=kwargs, progress=progress))
    if qstar is None:
        options = {"progress": progress, **dict(local_options or {})}
        qstar = timed(f"fit_local {family} q* {name}", lambda: fit_local(
            model, x, family, guide, num_steps=local_steps, **options, model_kwargs=kwargs))
    optimal = timed(f"ELBO[q*] {name}", lambda: elbo(model, qstar, x, num_samples,
                                                     model_kwargs=kwargs, progress=progress))
    return amortized, qstar, optimal, timings


def _takes_progress(fn) -> bool:
    """Whether the estimator ``fn`` accepts a ``progress`` keyword (by name or ``**kw``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: do not guess
        return False
    return any((p.name == "progress" and p.kind != p.POSITIONAL_ONLY)
               or p.kind == p.VAR_KEYWORD for p in params)


def estimate_log_px(model, x: torch.Tensor, log_px, proposal, kwargs: Mapping,
                    options: Mapping | None = None, *, progress: bool | None = False) -> LogPx:
    """The log p(x) stage of :func:`gaps`.

    ``log_px`` is exact values (a tensor ``[N]``), an estimator of :data:`LOG_PX` by name, or a
    callable, run with ``proposal`` and ``options`` (and ``progress``, unless ``options`` sets
    it, when the callable takes a ``progress`` keyword).
    """
    if isinstance(log_px, torch.Tensor):
        ref = LogPx(log_px.detach(), torch.zeros_like(log_px), "exact")
    else:
        if isinstance(log_px, str) and log_px not in LOG_PX:
            raise ValueError(f"unknown log_px estimator {log_px!r}; known: {sorted(LOG_PX)} "
                             "(or pass a tensor of exact values, or a callable)")
        fn = LOG_PX[log_px] if isinstance(log_px, str) else log_px
        opts = dict(options or {})
        if "progress" not in opts and _takes_progress(fn):
            opts["progress"] = progress
        with torch.no_grad():
            ref = _as_log_px(fn(model, x, proposal, dict(kwargs), **opts))
    if ref.per_datapoint.shape != x.shape[:1]:
        raise ValueError(f"log_px has shape {tuple(ref.per_datapoint.shape)}, expected "
                         f"[N] = [{x.shape[0]}]")
    return ref
