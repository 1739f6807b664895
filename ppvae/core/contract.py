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

import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pyro.distributions
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch import nn

from .enum import is_discrete, is_enumerated, summable
from .modes import evaluation, modules_of
from .trace import particle_plate, trace_fn, trace_pair

__all__ = [
    "DATA_PLATE",
    "ContractError",
    "PairInfo",
    "ParticleFallbackWarning",
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


class ParticleFallbackWarning(UserWarning):
    """A pair does not broadcast over the particle plate: particles are drawn one at a time."""


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


_INDEPENDENT = (torch.distributions.Independent, pyro.distributions.Independent)
_BERNOULLI = (torch.distributions.Bernoulli, pyro.distributions.Bernoulli)


def site_log_density(site: Mapping[str, Any]) -> torch.Tensor:
    """Log density of a sample site at its value, masked but *not* scaled.

    Scaling (poutine.scale, plate subsampling) is a property of training objectives; per-datapoint
    estimators need the model's own densities.
    """
    fn, value = site["fn"], site["value"]
    lp = _bernoulli_logits_log_prob(fn, value)
    if lp is None:
        lp = fn.log_prob(value, *site["args"], **site["kwargs"])
    return scale_and_mask(lp, 1.0, site["mask"])


def _bernoulli_logits_log_prob(fn, value: torch.Tensor) -> torch.Tensor | None:
    """``fn.log_prob(value)`` for ``Bernoulli(logits=l).to_event(k)``, as ``sum x l - softplus(l)``.

    The identity ``x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l)`` needs two
    passes over the data values where torch's cross-entropy (its ``log_prob``) makes five and
    negates the result in a sixth: on MNIST-sized chunks it computes the log-likelihood 2.1x
    faster (forwards; a local-VI step, forwards and backwards, 5% faster). The values agree to
    rounding (float64: 1e-13 relative; tested). None for any other distribution, for a
    Bernoulli built from ``probs``, or while Pyro validates (the generic path checks the value).
    """
    if type(fn) not in _INDEPENDENT or type(fn.base_dist) not in _BERNOULLI:
        return None
    base, k = fn.base_dist, fn.reinterpreted_batch_ndims
    if fn._validate_args or base._validate_args or "logits" not in base.__dict__ or k < 1:
        return None
    logits, dims = base.logits, tuple(range(-k, 0))
    return (logits * value).sum(dims) - torch.nn.functional.softplus(logits).sum(dims)


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


def _raise_plate_mismatch(e: Exception, role: str) -> None:
    """Pyro's "Shape mismatch inside plate" told as the missing ``.to_event`` it usually is."""
    if not isinstance(e, ValueError) or "Shape mismatch inside plate" not in str(e):
        return
    msg, tb = None, e.__traceback__
    while tb is not None:  # the message of the site Pyro's plate was broadcasting
        local = tb.tb_frame.f_locals.get("msg")
        if isinstance(local, dict) and "is_observed" in local and "fn" in local:
            msg = local
        tb = tb.tb_next
    if msg is None:
        return
    fn, plates = msg["fn"], [f for f in msg["cond_indep_stack"] if f.vectorized]
    kind = "observed" if msg["is_observed"] else "latent"
    batch = tuple(getattr(fn, "batch_shape", ()))
    extra = max(len(batch) - max((-f.dim for f in plates), default=0), 1)
    listed = ", ".join(f"'{f.name}' (size {f.size}, dim {f.dim})" for f in plates)
    what = "it an event dimension" if extra == 1 else "them event dimensions"
    raise ContractError(
        f"{role} {kind} site '{msg['name']}': its distribution has batch shape {batch}, which "
        f"does not fit the plate(s) around it ({listed}). If the rightmost "
        f"{'dimension is' if extra == 1 else f'{extra} dimensions are'} the size of one "
        f"datapoint's value, declare {what}: "
        f"{type(fn).__name__}(...).to_event({extra}). (Pyro: {str(e).splitlines()[0]})") from e


def _trace(fn, role: str, x, kwargs, owner=None):
    """:func:`trace_fn` of ``fn`` (unpruned), its errors re-raised naming ``role``."""
    try:
        return trace_fn(fn, x, kwargs, prune=False)
    except ContractError:
        raise
    except Exception as e:  # re-raised with the role it came from, the original chained
        _raise_plate_mismatch(e, role)
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


# --- does the pair broadcast over the particle plate? -------------------------------------------
_PROBE_PARTICLES = 2


class _LastSite(Messenger):
    """Remembers the last sample site that finished, to say where a trace failed."""

    def __init__(self):
        super().__init__()
        self.last: str | None = None

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["name"].startswith("_"):
            self.last = msg["name"]


def _culprit(e: BaseException, fns) -> str:
    """The innermost ``nn.Module`` of the pair that the traceback of ``e`` passes through."""
    names = {id(sub): name for top in modules_of(*fns) for name, sub in top.named_modules()}
    module, tb = None, e.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            module = owner
        tb = tb.tb_next
    if module is None:
        return ""
    name = names.get(id(module)) or ""
    return f" in module {name + ' ' if name else ''}({type(module).__name__})"


def _site_terms(guide_tr: Trace, model_tr: Trace, dim: int, shape: torch.Size
                ) -> dict[tuple[str, str], torch.Tensor]:
    """Each model site's and guide latent's per-datapoint log density, ``shape = [S, N]``."""
    terms = {}
    for role, tr in (("model", model_tr), ("guide", guide_tr)):
        for name, site in tr.nodes.items():
            if site["type"] == "sample" and not _is_deterministic(site) and (
                    is_latent(site) or (role == "model" and is_observed(site))):
                terms[role, name] = per_datapoint(site_log_density(site), dim, shape)
    return terms


def _particle(tr: Trace, s: int, dim: int) -> Trace:
    """The guide's latent values of particle ``s`` (the particle dimension removed).

    Subsample sites are kept as they are, so that a subsampling plate takes the same rows.
    """
    out = Trace()
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or not (is_latent(site) or site_is_subsample(site)):
            continue
        value, fn = site["value"], site["fn"]
        assert isinstance(value, torch.Tensor)  # a traced sample
        if not site_is_subsample(site):
            axis = dim - len(fn.event_shape)  # type: ignore[attr-defined]  # a distribution
            if value.dim() >= -axis:
                value = value.select(axis, s if value.shape[axis] > 1 else 0)
        out.add_node(name, **{**site, "value": value})
    return out


def _enumerated_failure(model, guide, x, kwargs, info: PairInfo) -> str | None:
    """:func:`_broadcast_failure` for a pair with enumerated latents: whole log weights."""
    from .weights import enumerated_log_weights  # it builds on this module

    dim, role = info.particle_dim, "guide"
    try:
        drawn = trace_fn(particle_plate(guide, _PROBE_PARTICLES, dim, x.device), x, kwargs,
                         prune=False)
        role = "model or guide, enumerated,"
        vec = enumerated_log_weights(model, guide, x, _PROBE_PARTICLES, info, kwargs, drawn)
    except ContractError:
        raise
    except Exception as e:  # anything the user's code raises on the extra dimension
        return f"the {role} fails{_culprit(e, (model, guide))}: {_first_line(e)}"
    for s in range(_PROBE_PARTICLES):
        try:
            one = enumerated_log_weights(model, guide, x, None, info, kwargs,
                                         _particle(drawn, s, dim))
        except ContractError:
            raise
        except Exception as e:  # the pair does not broadcast over enumerated values either
            raise ContractError(
                f"summing out the enumerated site(s) {list(info.enumerated)} failed"
                f"{_culprit(e, (model, guide))}: {_first_line(e)}. With Pyro's parallel "
                "enumeration a discrete site's values arrive with extra dimensions on the left "
                "(e.g. [K, 1, 1] for a Categorical); model and guide must broadcast over them, "
                "as TraceEnum_ELBO requires (torch.broadcast_tensors before torch.cat)") from e
        if not torch.allclose(vec[s], one[0], rtol=1e-4, atol=1e-3):
            return ("the log weights under the particle plate differ from one-particle traces "
                    f"at the same latent values (largest difference "
                    f"{(vec[s] - one[0]).abs().max().item():.3g})")
    return None


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:200]}"


def _vectorized_terms(model, guide, x, kwargs, dim: int, n: int):
    """Per-site terms ``[2, N]`` and the guide trace under the particle plate, or why not."""
    last, role = _LastSite(), "guide"
    try:
        with last:
            g = trace_fn(particle_plate(guide, _PROBE_PARTICLES, dim, x.device), x, kwargs,
                         prune=False)
            role = "model"
            m = trace_fn(poutine.replay(particle_plate(model, _PROBE_PARTICLES, dim, x.device),
                                        trace=g), x, kwargs, prune=False)
        g, m = prune_subsample_sites(g), prune_subsample_sites(m)
        role = "per-datapoint log densities of the"
        return _site_terms(g, m, dim, torch.Size((_PROBE_PARTICLES, n))), g
    except Exception as e:  # anything the user's code raises on the extra dimension
        where = f" after site '{last.last}'" if last.last else ""
        return f"the {role} fails{where}{_culprit(e, (model, guide))}: {_first_line(e)}", None


def _broadcast_failure(model, guide, x, kwargs, dim: int, n: int) -> str | None:
    """None when the pair vectorizes over particles; else what went wrong (site, module, error).

    Vectorizing works when the pair, traced under a particle plate of two, gives the log
    densities of one-particle traces at the same latent values.
    """
    vec, g = _vectorized_terms(model, guide, x, kwargs, dim, n)
    if isinstance(vec, str):
        return vec
    for s in range(_PROBE_PARTICLES):
        replayed = poutine.replay(guide, trace=_particle(g, s, dim))
        one = _site_terms(*trace_pair(model, replayed, x, kwargs), dim, torch.Size((1, n)))
        for key, lp in one.items():
            if key not in vec:
                return f"the {key[0]}'s site '{key[1]}' is missing under the particle plate"
            a, b = vec[key][s], lp[0]
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-3):
                return (f"the {key[0]}'s site '{key[1]}' has other log densities under the "
                        f"particle plate than in one-particle traces at the same latent values "
                        f"(largest difference {(a - b).abs().max().item():.3g}): the particle "
                        "dimension is mixed with the data dimension")
    return None


_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> reasons warned


def _warn_fallback(reason: str, model, guide) -> None:
    """Warn once per (model, reason) that particles are drawn one trace at a time.

    The model is identified by the object of a bound method (``vae.model``) or the function.
    """
    owner = getattr(model, "__self__", model)
    try:
        seen = _WARNED.setdefault(owner, set())
    except TypeError:  # not weakly referenceable: warn every time
        seen = set()
    if reason in seen:
        return
    seen.add(reason)
    warnings.warn(
        f"the pair does not broadcast over an extra leading particle dimension ({reason}); "
        "ppvae draws particles one trace at a time instead (as Pyro's vectorize_particles="
        "False): the same numbers, only slower. To vectorize, let the networks and indexing "
        "accept any leading batch dimensions (e.g. loc[..., mask] instead of loc[mask], "
        "torch.cat after expanding both parts).", ParticleFallbackWarning, stacklevel=3)


class _ParamOwners(Messenger):
    """Records which ``nn.Parameter`` each parameter-store name is registered with."""

    def __init__(self):
        super().__init__()
        self.owners: dict[str, torch.Tensor] = {}
        self.clashes: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def _pyro_param(self, msg) -> None:
        init = msg["args"][1] if len(msg["args"]) > 1 else None  # pyro.param(name, init)
        if not isinstance(init, nn.Parameter):
            return
        first = self.owners.setdefault(msg["name"], init)
        if first is not init and not any(c[0] == msg["name"] for c in self.clashes):
            self.clashes.append((msg["name"], first, init))


def _raise_clash(clashes, fns) -> None:
    if not clashes:
        return
    owner = {id(p): f"{type(m).__name__} {name or '(top level)'}".strip()
             for top in modules_of(*fns) for name, m in top.named_modules()
             for p in m.parameters(recurse=False)}
    name, a, b = clashes[0]
    raise ContractError(
        f"two different modules register the parameter-store name '{name}' "
        f"({owner.get(id(a), 'a module')} and {owner.get(id(b), 'another module')}): Pyro keeps "
        "one parameter per name, so one module would not train (or both would share weights). "
        "Give each module its own name: pyro.module('encoder', enc) and pyro.module('decoder', "
        "dec), or make both attributes of one PyroModule")


def _rows(x) -> int:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ContractError(
            f"x must be a tensor with a leading data dimension, got {type(x).__name__}"
            + (f" of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else "")
        )
    if x.shape[0] == 0:
        raise ContractError(f"x has no rows (shape {tuple(x.shape)}): it must be [N, ...], N >= 1")
    return int(x.shape[0])


def _sample_names(tr: Trace) -> list[str]:
    return sorted(n for n, s in tr.nodes.items() if s["type"] == "sample"
                  and not _is_deterministic(s) and not n.startswith("_"))


def _match_sites(guide_tr: Trace, model_tr: Trace) -> tuple[list[str], list[str]]:
    """(guide latent names, model observed names); errors for sites the other side lacks."""
    guide_latent = [n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and is_latent(s)]
    observed = [n for n, s in model_tr.nodes.items() if is_observed(s)]
    for name in guide_latent:
        if name not in model_tr.nodes or model_tr.nodes[name]["type"] != "sample":
            raise ContractError(
                f"the guide samples latent site '{name}' that the model does not have "
                f"(the model's sample sites: {_sample_names(model_tr)})")
        if model_tr.nodes[name]["is_observed"]:
            raise ContractError(
                f"the guide samples site '{name}' but the model observes it (obs=...); "
                "a guide samples only latent sites")
    for name, site in model_tr.nodes.items():
        if is_latent(site) and name not in guide_tr.nodes and not summable(site):
            hint = (" A discrete latent the guide leaves out is summed out when it is "
                    "enumerable and per datapoint (batch shape [N]); this one is not."
                    if is_discrete(site["fn"]) else "")
            raise ContractError(
                f"the model's latent site '{name}' is not sampled by the guide (the guide's "
                f"sample sites: {_sample_names(guide_tr)}); the guide must sample every "
                f"continuous latent site of the model.{hint}")
    if not observed:
        raise ContractError(
            "the model has no observed site: observe the data with "
            "pyro.sample('x', dist, obs=x) inside pyro.plate('data', N)")
    return guide_latent, observed


def _check_events(guide_tr: Trace, model_tr: Trace, guide_latent: list[str]) -> None:
    for name in guide_latent:
        # pyro types a site's "fn" as Callable; at a sample site it is a distribution
        g_ev = tuple(guide_tr.nodes[name]["fn"].event_shape)  # type: ignore[attr-defined]
        m_ev = tuple(model_tr.nodes[name]["fn"].event_shape)  # type: ignore[attr-defined]
        if g_ev != m_ev:
            raise ContractError(
                f"latent site '{name}' has event shape {g_ev} in the guide but {m_ev} in the "
                "model; both must declare the same .to_event() dimensions")


def _check_observation(name: str, site: Mapping[str, Any], x: torch.Tensor) -> None:
    """An observed value smaller than its distribution is being broadcast: a wrong ``x``."""
    value, fn = site["value"], site["fn"]
    full = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if isinstance(value, torch.Tensor) and value.dim() < len(full):
        raise ContractError(
            f"model observed site '{name}': the observed value has shape {tuple(value.shape)} "
            f"but its distribution has batch shape {tuple(fn.batch_shape)} and event shape "
            f"{tuple(fn.event_shape)}, so the observation is broadcast. x must be [N, ...] with "
            f"one row per datapoint (x has shape {tuple(x.shape)}; one datapoint is x[None])")


def check_pair(model, guide, x: torch.Tensor, *,
               model_kwargs: Mapping[str, Any] | None = None,
               allow_globals: bool = False) -> PairInfo:
    """Trace the guide and the model replayed on it; check the contract and how to vectorize.

    Raises :class:`ContractError` naming the site for: a guide latent the model lacks, a model
    latent the guide lacks, a per-datapoint site outside the data plate, a data plate whose
    size is not N, no observed site, a site whose batch shape is not [N] (missing ``.to_event``),
    an observation broadcast from a smaller ``x``, a latent whose event shape differs between
    model and guide, two modules registering the same parameter-store name, and non-finite log
    densities. Latents outside the data plate (global latents) are an error unless
    ``allow_globals`` (training only; they are listed in :attr:`PairInfo.globals`).

    The pair is then traced under a particle plate of two particles, as the estimators run it.
    If it fails there, or its log densities differ from one-particle traces at the same latent
    values, the returned info has ``vectorized=False`` (particles are drawn one trace at a time)
    and a :class:`ParticleFallbackWarning` names the site or module. The pair's networks run in
    eval mode throughout (restored afterwards).
    """
    kwargs, n = dict(model_kwargs or {}), _rows(x)
    params = _ParamOwners()
    with evaluation(model, guide), torch.no_grad():
        with params:
            guide_tr = _trace(guide, "guide", x, kwargs)
            model_tr = _trace(poutine.replay(model, trace=guide_tr), "model", x, kwargs, model)
        _raise_clash(params.clashes, (model, guide))
        guide_tr, model_tr = prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)
        guide_latent, observed = _match_sites(guide_tr, model_tr)
        sites = [("model", n_, s) for n_, s in model_tr.nodes.items() if s["type"] == "sample"]
        sites += [("guide", n_, guide_tr.nodes[n_]) for n_ in guide_latent]
        sites = [(r, n_, s) for r, n_, s in sites if not _is_deterministic(s)]
        plate = find_data_plate([s for _, _, s in sites], n)
        global_ = [n_ for _, n_, s in sites if allow_globals and not s["is_observed"]
                   and _data_frame(s, plate) is None]
        for name in observed:
            _check_observation(name, model_tr.nodes[name], x)
        for role, name, site in sites:
            if name not in global_:
                _check_site(role, name, site, n, _nesting(site), plate)
        _check_events(guide_tr, model_tr, guide_latent)
        for role, name, site in sites:
            _check_finite(role, name, site)
        nesting = max(1, *(_nesting(s) for _, _, s in sites))
        enumerated = tuple(n_ for n_, s in model_tr.nodes.items() if is_latent(s) and (
            summable(s) if n_ not in guide_tr.nodes else is_enumerated(guide_tr.nodes[n_])))
        discrete = tuple(n_ for n_ in guide_latent if n_ not in enumerated
                         and is_discrete(model_tr.nodes[n_]["fn"]))
        info = PairInfo(n, tuple(guide_latent), tuple(observed), nesting, discrete, plate,
                        enumerated=enumerated, globals=tuple(dict.fromkeys(global_)))
        failure = (_enumerated_failure(model, guide, x, kwargs, info) if enumerated else
                   _broadcast_failure(model, guide, x, kwargs, info.particle_dim, n))
    if failure is not None:
        _warn_fallback(failure, model, guide)
        return info._replace(vectorized=False)
    return info
