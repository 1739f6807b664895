"""Evaluation sharded over datapoints across the ranks of a torchrun job.

The results are gathered into the records the single-process functions return.

Every per-datapoint estimator of ppvae treats datapoints independently (log weights, ELBO and
IWAE bounds, AIS chains, local VI and the gap decomposition of Cremer, Li and Duvenaud 2018), so
the N rows split into blocks of ``block_size``; each rank evaluates a contiguous range of blocks
with the single-process function (:func:`ppvae.log_weights`, :func:`ppvae.elbo`,
:func:`ppvae.iwae`, :func:`ppvae.ais`, :func:`ppvae.fit_local`, :func:`ppvae.gaps`), and the
per-datapoint results are gathered in datapoint order into one record of the same type.

Seeding: the global RNGs are reseeded before every block from (seed, stage, block index), so a
block's draws depend on its index and not on the rank that evaluates it. For a fixed
``block_size`` the result is therefore the same for any number of ranks, one process included
(bitwise on the CPU; on GPUs up to the kernels' own non-determinism): the same seeds per
datapoint give identical local fits. It differs from the unsharded call on all N rows by Monte
Carlo error only (other draws). ``block_size=1`` gives each datapoint its own seed (at one call
per datapoint). The caller's RNG state is restored afterwards. Per-datapoint keyword tensors
(labels of a conditional model) go in ``batch_kw`` so that they are split with the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from ..core.bounds import Bound, elbo, iwae
from ..core.contract import check_pair
from ..core.progress import stage as progress_stage
from ..core.weights import log_weights
from ..infer.ais import AISResult, ais
from ..infer.local.families import LocalFamily
from ..infer.local.vi import LocalFit, LocalGuide, fit_local, latent_sites
from . import process as ddp

__all__ = [
    "block_ranges",
    "block_rows",
    "gather_block_meta",
    "gather_blocks",
    "local_guide_rows",
    "main_progress",
    "map_blocks",
    "sharded_ais",
    "sharded_elbo",
    "sharded_fit_local",
    "sharded_iwae",
    "sharded_log_weights",
]

_STAGES = {"log_weights": 1, "elbo": 2, "iwae": 3, "ais": 4, "fit_local": 5, "gap_elbos": 6,
           "log_px": 7}


def block_ranges(n: int, block_size: int, part: int | None = None,
                 parts: int | None = None) -> list[tuple[int, int, int]]:
    """``(block, start, stop)`` of the blocks rank ``part`` of ``parts`` evaluates.

    The default is this rank of the world. The blocks are a contiguous range of the
    ceil(n / block_size) blocks.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    lo, hi = ddp.shard_bounds(math.ceil(n / block_size), part, parts)
    return [(b, b * block_size, min(n, (b + 1) * block_size)) for b in range(lo, hi)]


def _block_seed(seed: int, stage: str, block: int) -> int:
    return int(np.random.SeedSequence([seed, _STAGES[stage], block]).generate_state(1)[0])


def main_progress(progress: bool | None) -> bool | None:
    """``progress`` on the main rank, False on the others (one set of bars per job)."""
    return progress if ddp.is_main() else False


def map_blocks(fn, n: int, block_size: int, seed: int, stage: str,
               progress: bool | None = False) -> list:
    """``[fn(start, stop)]`` over this rank's blocks, each under its own seed.

    ``progress``: a bar over the main rank's blocks (:mod:`ppvae.core.progress`).
    """
    state = get_rng_state()
    ranges = block_ranges(n, block_size)
    try:
        out = []
        with progress_stage(main_progress(progress), f"{stage} blocks", total=len(ranges),
                            unit="block") as bar:
            for b, lo, hi in ranges:
                pyro.set_rng_seed(_block_seed(seed, stage, b))
                out.append(fn(lo, hi))
                bar.update(1)
        return out
    finally:
        set_rng_state(state)


def block_rows(kw: dict | None, lo: int, hi: int) -> dict:
    """The rows ``[lo, hi)`` of every per-datapoint keyword argument in ``kw``."""
    return {k: v[lo:hi] for k, v in (kw or {}).items()}


def gather_blocks(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """This rank's blocks concatenated along ``dim``, gathered from all ranks in order."""
    return ddp.gather_rows(torch.cat(parts, dim) if parts else None, dim)


def gather_block_meta(local: list) -> list:
    """Every block's metadata over all ranks, in block order."""
    return [m for ms in ddp.gather_objects(local) for m in ms]


def sharded_log_weights(model, guide, x: torch.Tensor, num_samples: int = 1, *, seed: int = 0,
                        block_size: int = 256, batch_kw: dict | None = None,
                        chunk_size: int | None = None, progress: bool | None = None,
                        model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """:func:`ppvae.log_weights` (detached) sharded over ranks: ``[num_samples, N]``.

    ``progress``: bars over the blocks and within them, on the main rank only.
    """
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)
    def one(lo, hi):
        with torch.no_grad():
            return log_weights(model, guide, x[lo:hi], num_samples, chunk_size=chunk_size,
                               model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)},
                               progress=inner)  # [S, B]
    return gather_blocks(map_blocks(one, x.shape[0], block_size, seed, "log_weights",
                                    progress), 1)


def _merge_bounds(parts: list[Bound]) -> Bound:
    first = gather_block_meta([(b.name, b.k, b.num_samples, b.ess is not None,
                               b.khat is not None) for b in parts])[0]
    name, k, num_samples, has_ess, has_khat = first
    ess = gather_blocks(cast("list[torch.Tensor]", [b.ess for b in parts])) if has_ess else None
    khat = (gather_blocks(cast("list[torch.Tensor]", [b.khat for b in parts])) if has_khat
            else None)
    return Bound(name, k, gather_blocks([b.per_datapoint for b in parts]),
                 gather_blocks([b.stderr for b in parts]), num_samples, ess, khat)


def sharded_elbo(model, guide, x: torch.Tensor, num_samples: int = 100, *, seed: int = 0,
                 block_size: int = 256, batch_kw: dict | None = None,
                 chunk_size: int | None = None, progress: bool | None = None,
                 model_kwargs: Mapping[str, Any] | None = None) -> Bound:
    """:func:`ppvae.elbo` sharded over ranks (module docstring; bars on the main rank)."""
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)
    def one(lo, hi):
        with torch.no_grad():
            return elbo(model, guide, x[lo:hi], num_samples, chunk_size=chunk_size,
                        model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)}, progress=inner)
    return _merge_bounds(map_blocks(one, x.shape[0], block_size, seed, "elbo", progress))


def sharded_iwae(model, guide, x: torch.Tensor, k: int, *, num_estimates: int = 2,
                 seed: int = 0, block_size: int = 256, batch_kw: dict | None = None,
                 chunk_size: int | None = None, progress: bool | None = None,
                 model_kwargs: Mapping[str, Any] | None = None) -> Bound:
    """:func:`ppvae.iwae` sharded over ranks (module docstring; bars on the main rank)."""
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)
    def one(lo, hi):
        with torch.no_grad():
            return iwae(model, guide, x[lo:hi], k, num_estimates=num_estimates,
                        chunk_size=chunk_size, progress=inner,
                        model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)})
    return _merge_bounds(map_blocks(one, x.shape[0], block_size, seed, "iwae", progress))


def sharded_ais(model, x: torch.Tensor, *, seed: int = 0, block_size: int = 256,
                batch_kw: dict | None = None, model_kwargs: Mapping[str, Any] | None = None,
                progress: bool | None = None, **options) -> AISResult:
    """:func:`ppvae.ais` sharded over ranks (module docstring).

    ``options`` are its options, ``model_kwargs`` (fixed) and ``batch_kw`` (per-datapoint,
    blocked) the model's arguments. ``progress``: bars over the blocks and each block's
    annealing, on the main rank only.
    """
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)
    parts = map_blocks(lambda lo, hi: ais(
        model, x[lo:hi], **options, progress=inner,
        model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)}),
        x.shape[0], block_size, seed, "ais", progress)
    guide = options.get("guide") or model
    pd = check_pair(model, guide, x[:1],
                    model_kwargs={**kwargs, **block_rows(batch_kw, 0, 1)}).particle_dim
    sites, num_steps, settings = gather_block_meta([(tuple(r.samples), r.num_steps,
                                                     r.settings) for r in parts])[0]
    # N after mid
    samples = {s: gather_blocks([r.samples[s] for r in parts], -pd - 1) for s in sites}
    return AISResult(gather_blocks([r.per_datapoint for r in parts]),
                     gather_blocks([r.stderr for r in parts]),
                     gather_blocks([r.log_weights for r in parts], 1),
                     gather_blocks([r.accept_rate for r in parts], 1),
                     gather_blocks([r.step_size for r in parts], 1), samples, num_steps,
                     settings)


def _local_guide(sites, family: str, params: list[dict[str, torch.Tensor]],
                 fit: LocalFit | None, plate: str) -> LocalGuide:
    """A :class:`LocalGuide` whose families carry the given per-datapoint parameters."""
    families = []
    for site, p in zip(sites, params, strict=True):
        ref = p["loc"]
        layers = p["shift_weight"].shape[1] if "shift_weight" in p else 1
        eye = torch.eye(site.size, dtype=ref.dtype, device=ref.device)
        fam = LocalFamily(family, ref.new_zeros(1, site.size), eye[None], layers)
        for name, t in p.items():
            setattr(fam, name, torch.nn.Parameter(t.detach()))
        fam.num_data = ref.shape[0]
        families.append(fam)
    guide = LocalGuide(tuple(sites), families, plate=plate)
    guide.fit = fit
    return guide


def local_guide_rows(guide: LocalGuide, start: int, stop: int) -> LocalGuide:
    """The local guide of rows ``[start, stop)`` of a fitted :class:`LocalGuide`.

    Its parameters are views; its ``fit`` is the whole guide's.
    """
    return _local_guide(guide.sites, guide.family, [
        {n: p[start:stop] for n, p in f.named_parameters()} for f in guide.families], guide.fit,
        guide.plate)


def _padded_trace(trace: torch.Tensor, length: int) -> torch.Tensor:
    """A block's ``trace [W, B]`` to ``[length, B]``: its last window repeated (NaN if none)."""
    if trace.shape[0] == length:
        return trace
    last = trace[-1:] if trace.shape[0] else torch.full_like(trace[:1].expand(1, -1), math.nan)
    return torch.cat([trace, last.expand(length - trace.shape[0], -1)])


def _merge_fits(fits: list[LocalFit], rows: list[int]) -> LocalFit:
    """One :class:`LocalFit` over all blocks of all ranks, in datapoint order.

    A block that stopped early (every datapoint frozen) has its last window mean repeated in
    ``history`` and ``trace`` up to the longest block's number of windows.
    """
    metas = gather_block_meta([(f.family, f.init, f.num_steps, f.max_steps, f.num_particles,
                                f.history, r, f.window) for f, r in zip(fits, rows, strict=True)])
    seconds = max(ddp.gather_objects(sum(f.seconds for f in fits)))  # wall clock: slowest rank
    length = max(len(m[5]) for m in metas)
    hist = torch.tensor([list(m[5]) + [m[5][-1]] * (length - len(m[5])) if m[5] else
                         [math.nan] * length for m in metas], dtype=torch.float64)  # [B, L]
    weights = torch.tensor([m[6] for m in metas], dtype=torch.float64)  # [B]
    history = tuple((weights @ hist / weights.sum()).tolist()) if length else ()
    family, init, _, max_steps, particles = metas[0][:5]
    trace = gather_blocks([_padded_trace(f.trace, length) for f in fits], 1)  # [W, N]
    return LocalFit(family, init, max(m[2] for m in metas), max_steps, particles,
                    gather_blocks([f.converged for f in fits]),
                    gather_blocks([f.steps_used for f in fits]),
                    gather_blocks([f.elbo for f in fits]), history, seconds, trace, metas[0][7])


def sharded_fit_local(model, x: torch.Tensor, family: str = "diag", init="prior", *,
                      seed: int = 0, block_size: int = 256, batch_kw: dict | None = None,
                      model_kwargs: Mapping[str, Any] | None = None,
                      progress: bool | None = None, **options) -> LocalGuide:
    """:func:`ppvae.fit_local` sharded over ranks: one :class:`LocalGuide` over all N rows.

    Every rank gets the guide, its ``fit`` merged (per-datapoint fields gathered, ``history``
    the row-weighted mean over blocks, ``seconds`` the slowest rank's). ``init`` may be a fitted
    :class:`LocalGuide` over all N rows (each block starts from its rows). ``progress``: bars
    over the blocks and each block's steps, on the main rank only.
    """
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)

    def one(lo, hi):
        start = local_guide_rows(init, lo, hi) if isinstance(init, LocalGuide) else init
        return fit_local(model, x[lo:hi], family, start, **options, progress=inner,
                         model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)})

    parts = map_blocks(one, x.shape[0], block_size, seed, "fit_local", progress)
    sites = latent_sites(model, x[:1], model_kwargs={**kwargs, **block_rows(batch_kw, 0, 1)})
    names = [[n for n, _ in LocalFamily(family, x.new_zeros(1, s.size), torch.eye(
        s.size, dtype=x.dtype, device=x.device)[None]).named_parameters()] for s in sites]
    params = [{n: gather_blocks([g.families[j].get_parameter(n).detach() for g in parts])
               for n in fam_names} for j, fam_names in enumerate(names)]
    fit = _merge_fits([g.fit for g in parts], [g.num_data for g in parts])
    plate = gather_block_meta([g.plate for g in parts])[0]  # the model's data plate, any rank
    return _local_guide(sites, family, params, fit, plate)
