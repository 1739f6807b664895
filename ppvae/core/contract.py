"""The model/guide contract, and a check that explains what is wrong when it is broken.

A *model* is any callable ``model(x, **kw)`` that

* puts every per-datapoint site inside ``pyro.plate("data", N, dim=-1)`` with ``N = x.shape[0]``
  (subsampling is allowed: the plate's full size may be larger, its batch must be ``N``),
* samples each latent site with its event dimensions declared (``.to_event(...)``), so that the
  site's batch shape is the data plate (plus any plates the user nests inside it),
* observes the data with ``pyro.sample(name, dist, obs=x)``.

A *guide* has the same signature and samples the same latent sites inside the same plate. Both
must broadcast over an outer particle plate, which the engine adds at the first free dimension
to the left of every plate in the pair (dim -2 for the usual single-plate model).

:func:`check_pair` traces the pair once and raises :class:`ContractError`, naming the site, for
each way the contract can be broken. Every engine entry point calls it once, so users see these
messages instead of a shape error deep inside Pyro. Estimators are built on the per-site,
per-datapoint log densities computed by :func:`site_log_density` (Pyro's own distributions and
traces; see ``pyro/infer/trace_elbo.py`` for the pattern).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from .trace import trace_fn

__all__ = [
    "DATA_PLATE",
    "ContractError",
    "PairInfo",
    "check_pair",
    "find_data_plate",
    "guide_latent_names",
    "is_latent",
    "is_observed",
    "per_datapoint",
    "site_log_density",
]

DATA_PLATE = "data"


class ContractError(ValueError):
    """A model or guide does not keep the ppvae model/guide contract."""


class PairInfo(NamedTuple):
    """What :func:`check_pair` learned about a (model, guide) pair."""

    num_data: int  # N, the data plate's batch size
    latent: tuple[str, ...]  # latent site names, in guide order
    observed: tuple[str, ...]  # observed site names in the model
    max_plate_nesting: int  # plates enclosing any site (>= 1: the data plate)
    discrete: tuple[str, ...] = ()  # latent sites whose model distribution has discrete support
    data_plate: str = DATA_PLATE  # the name of the per-datapoint plate (found, not demanded)
    vectorized: bool = True  # the pair broadcasts over the particle plate (else one at a time)
    enumerated: tuple[str, ...] = ()  # discrete model latents summed out by enumeration
    globals: tuple[str, ...] = ()  # latent sites outside the data plate (only with allow_globals)

    @property
    def particle_dim(self) -> int:
        """The tensor dimension of the engine's outer particle plate."""
        return -(self.max_plate_nesting + 1)

    def require_continuous(self, analysis: str) -> None:
        """Raise :class:`ContractError` if a latent is discrete.

        For analyses that move z continuously (local Gaussian VI, HMC, AIS, latent manifolds,
        traversals).
        """
        if self.discrete:
            raise ContractError(
                f"{analysis} needs continuous latents, but the model's latent site(s) "
                f"{list(self.discrete)} have discrete support (e.g. VQ-VAE codes)"
            )


def is_observed(site: Mapping[str, Any]) -> bool:
    """True for an observed sample site that is not a ``pyro.deterministic`` record."""
    return site["type"] == "sample" and site["is_observed"] and not _is_deterministic(site)


def is_latent(site: Mapping[str, Any]) -> bool:
    """True for an unobserved, non-auxiliary sample site."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
    )


def _is_deterministic(site: Mapping[str, Any]) -> bool:
    return bool(site["infer"].get("_deterministic", False))


def guide_latent_names(guide_trace) -> list[str]:
    """Names of the latent sites of a guide trace, in trace order."""
    return [name for name, site in guide_trace.nodes.items() if is_latent(site)]


def site_log_density(site: Mapping[str, Any]) -> torch.Tensor:
    """Log density of a sample site at its value, masked but *not* scaled.

    Scaling (poutine.scale, plate subsampling) is a property of training objectives; per-datapoint
    estimators need the model's own densities.
    """
    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(lp, 1.0, site["mask"])


def per_datapoint(lp: torch.Tensor, particle_dim: int, shape: torch.Size) -> torch.Tensor:
    """Reduce a site's log density (batch-shaped) to ``shape = [S, N]``.

    Dimensions between the particle dimension and the data dimension (user plates nested inside
    "data") are summed out; dimensions the site does not have are broadcast.
    """
    nd = -particle_dim  # number of batch dims including the particle dim
    if lp.dim() > nd:
        raise ContractError(
            f"a log density has shape {tuple(lp.shape)}, more dimensions than the "
            f"{nd - 1} plate(s) and the particle dimension: declare event dims with .to_event()"
        )
    lp = lp.reshape((1,) * (nd - lp.dim()) + tuple(lp.shape))
    if nd > 2:
        lp = lp.sum(dim=tuple(range(1, nd - 1)))
    return lp.expand(shape)


def _data_frame(site: Mapping[str, Any], plate: str = DATA_PLATE):
    for frame in site["cond_indep_stack"]:
        if frame.name == plate:
            return frame
    return None


def _describe(frame) -> str:
    sub = (f", a subsample of {frame.size} of {frame.full_size}"
           if frame.full_size is not None and frame.full_size != frame.size else "")
    return f"'{frame.name}' (size {frame.full_size or frame.size}, dim {frame.dim}{sub})"


def find_data_plate(sites: Sequence[Mapping[str, Any]], n: int) -> str:
    """The per-datapoint plate among the plates enclosing ``sites``.

    It is the plate named "data" if there is one, otherwise the one plate at dim -1 whose batch
    size is N = ``x.shape[0]``. Raises :class:`ContractError` listing the plates found (name,
    size, dim, subsample) when there is none or more than one.
    """
    frames = {f.name: f for s in sites for f in s["cond_indep_stack"] if f.vectorized}
    if DATA_PLATE in frames:
        return DATA_PLATE
    found = [f for f in frames.values() if f.dim == -1 and f.size == n]
    if len(found) == 1:
        return found[0].name
    listed = ", ".join(_describe(f) for f in frames.values()) or "none"
    if not found:
        raise ContractError(
            f"no plate of size N = x.shape[0] = {n} at dim -1 encloses the sites (plates found: "
            f"{listed}); wrap the per-datapoint sample statements of model and guide in "
            f"pyro.plate(name, x.shape[0], dim=-1)")
    raise ContractError(
        f"several plates could be the per-datapoint plate ({listed}); name it 'data' to say "
        "which one indexes the datapoints")


def _nesting(site: Mapping[str, Any]) -> int:
    dims = [-f.dim for f in site["cond_indep_stack"] if f.vectorized]
    return max(dims, default=0)


def _is_discrete(fn) -> bool:
    try:
        return bool(fn.support.is_discrete)
    except (NotImplementedError, AttributeError):  # distributions without a declared support
        return False


def _trace(fn, role: str, x, kwargs, owner=None):
    """:func:`trace_fn` of ``fn`` (unpruned), its errors re-raised naming ``role``."""
    try:
        return trace_fn(fn, x, kwargs, prune=False)
    except ContractError:
        raise
    except Exception as e:  # re-raised with the role it came from, the original chained
        owner = fn if owner is None else owner  # the module whose parameters x meets
        params = owner.parameters() if isinstance(owner, torch.nn.Module) else ()
        dtype = next((p.dtype for p in params if p.is_floating_point()), None)
        hint = (f" (x is {x.dtype} but the {role}'s parameters are {dtype}: convert one, e.g. "
                f"x.to({dtype}))" if dtype is not None and x.is_floating_point()
                and x.dtype != dtype else "")
        raise ContractError(f"running the {role} on x of shape {tuple(x.shape)} failed{hint}: "
                            f"{type(e).__name__}: {e}") from e


def _check_site(role: str, name: str, site: Mapping[str, Any], n: int, nesting: int,
                plate: str = DATA_PLATE) -> None:
    frame = _data_frame(site, plate)
    kind = "observed" if site["is_observed"] else "latent"
    if frame is None:
        raise ContractError(
            f"{role} {kind} site '{name}' is outside pyro.plate('{plate}', N, dim=-1): every "
            "per-datapoint site must be inside the data plate"
            + ("; a global latent (e.g. Bayesian decoder weights) must first be fixed with "
               "ppvae.fix_globals (see ppvae/globals.py)" if kind == "latent" else "")
        )
    if frame.dim != -1:
        raise ContractError(
            f"{role} site '{name}': plate '{plate}' has dim={frame.dim}; the contract needs "
            "dim=-1 (the engine puts its particle plate to the left of every plate)"
        )
    batch_shape = tuple(site["fn"].batch_shape)
    full = frame.full_size if frame.full_size is not None else frame.size
    if not batch_shape or batch_shape[-1] != n:
        if frame.size != n:
            what = (f"a subsample of size {frame.size} of a plate of size {full}"
                    if full != frame.size else f"size {frame.size}")
            raise ContractError(
                f"{role} site '{name}': plate '{plate}' has {what} but x has "
                f"N = x.shape[0] = {n} rows; read the plate (or subsample) size from x"
            )
        raise ContractError(
            f"{role} {kind} site '{name}' has batch shape {batch_shape}; inside plate "
            f"'{plate}' (size {full}) its last batch dimension must be N = {n}"
        )
    if len(batch_shape) > nesting:
        raise ContractError(
            f"{role} {kind} site '{name}' has batch shape {batch_shape} but only {nesting} "
            f"plate(s) enclose it; declare its event dimensions with .to_event("
            f"{len(batch_shape) - nesting}) so its batch shape is the data plate"
        )


def _check_finite(role: str, name: str, site: Mapping[str, Any]) -> None:
    try:
        lp = site_log_density(site)
    except ValueError as e:  # e.g. a value outside the distribution's support
        raise ContractError(f"{role} site '{name}': log density failed: {e}") from e
    if not torch.isfinite(lp).all():
        bad = (~torch.isfinite(lp)).nonzero()
        where = [tuple(i.tolist()) for i in bad[:5]]
        raise ContractError(
            f"{role} site '{name}' has a non-finite log density at batch index {where}"
            f"{' ...' if len(bad) > 5 else ''}: check the data and the parameters"
        )


def check_pair(model, guide, x: torch.Tensor, *,
               model_kwargs: Mapping[str, Any] | None = None) -> PairInfo:
    """Trace the guide and the model replayed on it once; check the contract.

    Raises :class:`ContractError` naming the site for: a guide latent the model lacks, a model
    latent the guide lacks, a per-datapoint site outside the "data" plate, a data plate whose
    size is not N, no observed site, a site whose batch shape is not [N] (missing ``.to_event``),
    a latent whose event shape differs between model and guide, and non-finite log densities.
    Returns a :class:`PairInfo`.
    """
    kwargs = dict(model_kwargs or {})
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ContractError(
            f"x must be a tensor with a leading data dimension, got {type(x).__name__}"
            + (f" of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else "")
        )
    n = int(x.shape[0])
    if n == 0:
        raise ContractError(f"x has no rows (shape {tuple(x.shape)}): it must be [N, ...], N >= 1")
    with torch.no_grad():
        guide_tr = _trace(guide, "guide", x, kwargs)
        model_tr = _trace(poutine.replay(model, trace=guide_tr), "model", x, kwargs, model)
        guide_tr, model_tr = prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)

    guide_latent = [
        name for name, s in guide_tr.nodes.items() if s["type"] == "sample" and is_latent(s)
    ]
    model_latent = [name for name, s in model_tr.nodes.items() if is_latent(s)]
    observed = [name for name, s in model_tr.nodes.items() if is_observed(s)]

    for name in guide_latent:
        if name not in model_tr.nodes or model_tr.nodes[name]["type"] != "sample":
            raise ContractError(
                f"the guide samples latent site '{name}' that the model does not have "
                f"(model sample sites: {sorted(n for n in model_tr.nodes if n != '_INPUT')})"
            )
        if model_tr.nodes[name]["is_observed"]:
            raise ContractError(
                f"the guide samples site '{name}' but the model observes it (obs=...); "
                "a guide samples only latent sites"
            )
    for name in model_latent:
        if name not in guide_tr.nodes:
            raise ContractError(
                f"the model's latent site '{name}' is not sampled by the guide; the guide must "
                "sample every latent site of the model"
            )
    if not observed:
        raise ContractError(
            "the model has no observed site: observe the data with "
            "pyro.sample('x', dist, obs=x) inside pyro.plate('data', N)"
        )

    sites = [("model", n_, s) for n_, s in model_tr.nodes.items() if s["type"] == "sample"]
    sites += [("guide", n_, guide_tr.nodes[n_]) for n_ in guide_latent]
    sites = [(r, n_, s) for r, n_, s in sites if not _is_deterministic(s)]
    plate = find_data_plate([s for _, _, s in sites], n)
    nesting = max(_nesting(s) for _, _, s in sites)
    for role, name, site in sites:
        _check_site(role, name, site, n, _nesting(site), plate)

    for name in guide_latent:
        # pyro types a site's "fn" as Callable; at a sample site it is a distribution
        g_ev = tuple(guide_tr.nodes[name]["fn"].event_shape)  # type: ignore[attr-defined]
        m_ev = tuple(model_tr.nodes[name]["fn"].event_shape)  # type: ignore[attr-defined]
        if g_ev != m_ev:
            raise ContractError(
                f"latent site '{name}' has event shape {g_ev} in the guide but {m_ev} in the "
                "model; both must declare the same .to_event() dimensions"
            )

    with torch.no_grad():
        for role, name, site in sites:
            _check_finite(role, name, site)
    discrete = tuple(n_ for n_ in guide_latent if _is_discrete(model_tr.nodes[n_]["fn"]))
    return PairInfo(n, tuple(guide_latent), tuple(observed), max(nesting, 1), discrete, plate)

