"""Per-datapoint log importance weights: the one primitive every ppvae estimator is built on.

For a (model, guide) pair keeping the contract (see :mod:`ppvae.contract`) and data ``x`` of N
rows, :func:`log_weights` returns a tensor ``[S, N]`` with entries

    log w[s, n] = log p(x_n, z_sn) - log q(z_sn | x_n),    z_sn ~ q(. | x_n),

computed from Pyro traces: the guide is traced under an outer particle plate (vectorized, one
tensor for all S particles of a chunk), the model is replayed on the guide's samples, and each
site's log density is reduced to ``[S, N]``. Samples are drawn in chunks, so memory is bounded by
``chunk_size * N`` times the model's per-datapoint footprint, not by S. The ELBO, the IWAE bound
(Burda, Grosse and Salakhutdinov 2016), importance sampling and the local-VI objective are all
functions of these weights.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from .contract import (
    PairInfo,
    check_pair,
    is_latent,
    is_observed,
    per_datapoint,
    site_log_density,
)
from .enum import enum_log_density, replay_continuous
from .modes import evaluation
from .progress import bar as progress_bar
from .trace import particle_groups, trace_fn, trace_pair

__all__ = [
    "CPU_VALUES_PER_CHUNK",
    "GPU_PAIRS_PER_CHUNK",
    "default_chunk_size",
    "enumerated_log_weights",
    "iter_log_weights",
    "log_weights",
    "pair_info",
    "resolve_chunk_size",
    "samples_bar",
]

# The default chunk when the caller gives none, chosen by measurement (benchmarks/chunk_size.py,
# docs/performance.md). On a CPU the fastest chunk holds about the same number of data values
# (datapoint-particle pairs times values per datapoint) whatever the model: 1.2-1.6 million for
# VAEs on 64-, 784- and 1024-value rows, one thread; smaller chunks pay Pyro's per-trace work
# more often, larger ones fall out of the caches. On a GPU, large chunks keep it busy: 2^15
# pairs (a few hundred MB of activations for a 784-pixel model with a 500-unit MLP), not yet
# tuned on a GPU.
CPU_VALUES_PER_CHUNK = 1_500_000
GPU_PAIRS_PER_CHUNK = 2**15


def default_chunk_size(num_data: int, device: torch.device | str | None = None,
                       row_size: int = 1) -> int:
    """Particles per chunk for ``num_data`` datapoints of ``row_size`` values on ``device``.

    On the CPU (the default) about :data:`CPU_VALUES_PER_CHUNK` data values per chunk, on
    other devices about :data:`GPU_PAIRS_PER_CHUNK` datapoint-particle pairs; at least 1.
    """
    n = max(num_data, 1)
    if device is None or torch.device(device).type == "cpu":
        return max(1, round(CPU_VALUES_PER_CHUNK / (n * max(row_size, 1))))
    return max(1, GPU_PAIRS_PER_CHUNK // n)


def resolve_chunk_size(chunk_size: int | None, num_data: int,
                       like: torch.Tensor | None = None) -> int:
    """``chunk_size``, checked (an integer >= 1), or the default for None.

    The default (:func:`default_chunk_size`) is for the device and row size of ``like`` (the
    data, ``[N, ...]``), or for CPU rows of one value without it.
    """
    if chunk_size is None:
        if like is None:
            return default_chunk_size(num_data)
        row = like[0].numel() if like.dim() > 0 and like.shape[0] > 0 else 1
        return default_chunk_size(num_data, like.device, row)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, or None for the default; "
                         f"got {chunk_size!r}")
    return int(chunk_size)


def samples_bar(progress: bool | None, total: int, chunk: int,
                desc: str) -> AbstractContextManager[tqdm | None]:
    """A bar over ``total`` samples per datapoint drawn ``chunk`` at a time, as a context.

    It is shown (as :func:`ppvae.core.progress.enabled` says) only when the samples take
    several chunks: one chunk is one vectorized evaluation, with nothing to show in between,
    and then no bar is made at all (None: a training step calling :func:`log_weights` pays
    nothing for it).
    """
    if total <= chunk:
        return nullcontext(None)
    return progress_bar(progress, total=total, desc=desc, unit="sample")


def pair_info(model, guide, x: torch.Tensor, info: PairInfo | None, kwargs: Mapping[str, Any],
              eval_modules: bool = True) -> PairInfo:
    """``info``, or the pair's :class:`PairInfo` from :func:`check_pair` when it is None.

    The check runs with the networks in eval mode when ``eval_modules``.
    """
    if info is not None:
        return info
    with evaluation(model, guide) if eval_modules else nullcontext():
        return check_pair(model, guide, x, model_kwargs=dict(kwargs))


def enumerated_log_weights(model, guide, x, particles: int | None, info: PairInfo,
                           kwargs, drawn=None) -> torch.Tensor:
    """Log weights ``[particles or 1, N]`` with the pair's enumerated latents summed out.

    The continuous latents are drawn from the guide (or taken from the guide trace ``drawn``)
    and replayed into the guide and the model, each run with its discrete latents enumerated
    (:mod:`ppvae.core.enum`).
    """
    dim = info.particle_dim
    if drawn is None:
        drawn = trace_fn(guide, x, kwargs, particles=particles, particle_dim=dim, prune=False)
    replay = replay_continuous(drawn, info.enumerated)
    common: dict[str, Any] = {"particles": particles, "particle_dim": dim,
                              "data_plate": info.data_plate, "num_data": info.num_data}
    in_guide = [n for n in info.enumerated if n in info.latent]
    log_q = enum_log_density(poutine.replay(guide, trace=replay), x, kwargs, names=in_guide,
                             include=is_latent, **common)
    log_p = enum_log_density(poutine.replay(model, trace=replay), x, kwargs,
                             names=info.enumerated,
                             include=lambda s: is_latent(s) or is_observed(s), **common)
    return log_p - log_q


def _chunk(model, guide, x, size: int, info: PairInfo, kwargs) -> torch.Tensor:
    dim, parts = info.particle_dim, []
    for group in particle_groups(size, info.vectorized):  # one plate, or one trace per particle
        if info.enumerated:
            parts.append(enumerated_log_weights(model, guide, x, group, info, kwargs))
            continue
        guide_tr, model_tr = trace_pair(model, guide, x, kwargs, particles=group,
                                        particle_dim=dim)
        shape = torch.Size((group or 1, info.num_data))
        lw: torch.Tensor | float = 0.0  # becomes [S, N]: every model has an observed site
        for site in model_tr.nodes.values():
            if site["type"] == "sample" and (is_observed(site) or is_latent(site)):
                lw = lw + per_datapoint(site_log_density(site), dim, shape)
        for site in guide_tr.nodes.values():
            if site["type"] == "sample" and is_latent(site):
                lw = lw - per_datapoint(site_log_density(site), dim, shape)
        parts.append(cast(torch.Tensor, lw))  # a tensor: the observed site was added
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    sizes = [chunk] * (total // chunk)
    if total % chunk:
        sizes.append(total % chunk)
    return sizes


def iter_log_weights(
    model,
    guide,
    x: torch.Tensor,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    info: PairInfo | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    eval_modules: bool = True,
    bar: tqdm | None = None,
    validate: bool | None = False,
) -> Iterator[torch.Tensor]:
    """Yield the log weights of :func:`log_weights` chunk by chunk, each ``[chunk, N]``.

    Streaming estimators (IWAE with large k) consume this so that only one chunk is alive.
    ``info`` skips the contract check when the caller has already run it. With
    ``eval_modules`` (the default) the pair's networks run in eval mode, so a datapoint's
    weights do not depend on the rest of the batch (:mod:`ppvae.core.modes`); training
    objectives pass False. ``bar`` (:func:`samples_bar`) is advanced by each chunk's samples.
    ``validate``: Pyro's distribution validation in the chunks (default off: the contract check
    has validated the pair; None leaves the global setting, as training loops want).
    """
    kwargs = dict(model_kwargs or {})
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    info = pair_info(model, guide, x, info, kwargs, eval_modules)
    chunk = resolve_chunk_size(chunk_size, info.num_data, x)
    for size in _chunk_sizes(num_samples, chunk):
        checks = nullcontext() if validate is None else pyro.validation_enabled(validate)
        with evaluation(model, guide) if eval_modules else nullcontext(), checks:
            lw = _chunk(model, guide, x, size, info, kwargs)
        if bar is not None:
            bar.update(size)
        yield lw


def log_weights(
    model,
    guide,
    x: torch.Tensor,
    num_samples: int = 1,
    *,
    chunk_size: int | None = None,
    info: PairInfo | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    eval_modules: bool = True,
    progress: bool | None = None,
    validate: bool | None = False,
) -> torch.Tensor:
    """Per-datapoint log weights ``log p(x_n, z) - log q(z | x_n)``, z ~ q: ``[num_samples, N]``.

    Args:
        model: the model of a pair keeping the ppvae contract (checked once, see
            :func:`check_pair`).
        guide: the pair's guide.
        x: data, ``[N, ...]``; tensors follow its device and dtype.
        num_samples: particles per datapoint.
        chunk_size: particles traced at once (vectorized over an outer plate); default
            :func:`default_chunk_size` (measured per device: about 1.5 million data values per
            chunk on a CPU, 2^15 datapoint-particle pairs on a GPU).
        info: a :class:`PairInfo` from an earlier check, to skip re-checking in loops.
        model_kwargs: passed to both model and guide (labels for a conditional model, ...).
        eval_modules: run the pair's networks in eval mode (default; restored afterwards).
        progress: a bar over the samples when they take several chunks: True, False, or None
            for one only on a terminal (:mod:`ppvae.core.progress`).
        validate: keep Pyro's distribution validation on while the weights are computed (off
            by default: :func:`check_pair` has validated the pair, and the checks cost about
            6% of an IWAE evaluation); None leaves Pyro's global setting alone.

    Works under ``torch.no_grad()`` for evaluation and with gradients (reparameterized
    samples) for training objectives.
    """
    kwargs = dict(model_kwargs or {})
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    info = pair_info(model, guide, x, info, kwargs, eval_modules)
    chunk = resolve_chunk_size(chunk_size, info.num_data, x)
    with samples_bar(progress, num_samples, chunk, "log_weights") as b:
        return torch.cat(
            list(iter_log_weights(model, guide, x, num_samples, chunk_size=chunk, info=info,
                                  model_kwargs=kwargs, eval_modules=eval_modules, bar=b,
                                  validate=validate)),
            dim=0,
        )
