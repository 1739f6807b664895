"""The inference-gap report sharded over datapoints across the ranks of a torchrun job.

The report is that of Cremer, Li and Duvenaud (2018): :func:`sharded_gaps` returns the
:class:`ppvae.GapReport` that :func:`ppvae.gaps` returns, with every stage computed by the
single-process functions on blocks of rows (seeded per block, see :mod:`ppvae.sharded`) and
gathered on every rank.

Stages, in the order of :func:`ppvae.gaps`:

1. q* per guide: :func:`ppvae.sharded.sharded_fit_local` started at the guide's output (unless
   ``local`` gives it), gathered into one local guide over all N rows with a merged fit record.
2. ELBO[q] and ELBO[q*]: :func:`ppvae.gaps` itself on each block, given that block's rows of
   q* (so its estimator labels, counts included, are those of the whole fit).
3. log p(x): exact values are split with the rows. Otherwise the proposal is the q* with the
   highest mean ELBO over *all* rows (as :func:`ppvae.gaps` chooses it), and on each block
   :func:`ppvae.gaps` with that q* as its only guide computes log p(x) exactly as the full call
   does (the same estimator, options and label); its own two-sample ELBO columns are dropped.

Stage timings are the slowest rank's (wall clock).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch

from ..analysis.gaps import estimate_log_px, gaps, infer_family, named_guides
from ..analysis.report import GapReport, GapRow
from ..infer.local.vi import LocalFit, LocalGuide
from . import process as ddp
from .sharded import (
    block_rows,
    gather_block_meta,
    gather_blocks,
    local_guide_rows,
    main_progress,
    map_blocks,
    sharded_fit_local,
)

__all__ = ["sharded_gaps"]

_TENSORS = ("log_px", "log_px_se", "elbo_local", "elbo_local_se", "elbo_amortized",
            "elbo_amortized_se")


def _gather_cpu(parts: list[torch.Tensor]) -> torch.Tensor:
    """Gather report columns (float64 CPU tensors) through the backend's device."""
    dev = ddp.default_device()
    return gather_blocks([p.to(dev) for p in parts]).cpu()


def _slowest(timings: list[tuple[str, float]]) -> dict[str, float]:
    """Per stage: this rank's total over its blocks, then the maximum over ranks."""
    mine: dict[str, float] = defaultdict(float)
    for stage, seconds in timings:
        mine[stage] += seconds
    out: dict[str, float] = {}
    for theirs in ddp.gather_objects(dict(mine)):
        for stage, seconds in theirs.items():
            out[stage] = max(out.get(stage, 0.0), seconds)
    return out


def _fit_qstars(model, guides: Mapping[str, Any], x: torch.Tensor, fams: Mapping[str, str],
                local: Mapping[str, LocalGuide] | None, *, seed: int, block_size: int,
                batch_kw: dict | None, num_steps: int, options: dict, kwargs: dict
                ) -> tuple[dict[str, LocalGuide], dict[str, float]]:
    """Stage 1: q* per guide (``local``'s, else fitted sharded) and each fit's seconds."""
    n = x.shape[0]
    qstar, fit_seconds = dict(local or {}), {}
    for i, (name, guide) in enumerate(guides.items()):
        if name in qstar:
            continue
        guide_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        qstar[name] = sharded_fit_local(model, x, fams[name], guide, seed=guide_seed,
                                        block_size=block_size, batch_kw=batch_kw,
                                        num_steps=num_steps, **options, model_kwargs=kwargs)
        fit_seconds[name] = cast(LocalFit, qstar[name].fit).seconds  # set by sharded_fit_local
    for name, q in qstar.items():
        if q.num_data != n:
            raise ValueError(f"local q* for guide '{name}' covers {q.num_data} rows; "
                             f"x has {n}")
    return qstar, fit_seconds


def sharded_gaps(model, guides, x: torch.Tensor, log_px="iwae", *, families=None,
                 local: Mapping[str, LocalGuide] | None = None, local_steps: int = 1000,
                 local_options: Mapping | None = None, num_samples: int = 1000,
                 log_px_options: Mapping | None = None, seed: int = 0, block_size: int = 256,
                 batch_kw: dict | None = None, progress: bool | None = None,
                 model_kwargs: Mapping[str, Any] | None = None) -> GapReport:
    """:func:`ppvae.gaps` sharded over ranks; every rank returns the whole report.

    The same arguments, plus ``seed`` and ``block_size`` (:mod:`ppvae.sharded`) and
    ``batch_kw`` (per-datapoint model keywords). ``local`` q* must cover all N rows.
    ``progress``: each stage's bars over blocks (and within them), on the main rank only.
    """
    kwargs, inner = dict(model_kwargs or {}), main_progress(progress)
    guides, families = named_guides(guides, families)
    fams = {name: families.get(name) or infer_family(g, x, kwargs)
            for name, g in guides.items()}
    n = x.shape[0]

    qstar, fit_seconds = _fit_qstars(model, guides, x, fams, local, seed=seed,
                                     block_size=block_size, batch_kw=batch_kw,
                                     num_steps=local_steps, kwargs=kwargs,
                                     options={"progress": progress, **dict(local_options or {})})

    exact = log_px if isinstance(log_px, torch.Tensor) else None
    if exact is not None and exact.shape != x.shape[:1]:
        raise ValueError(f"log_px has shape {tuple(exact.shape)}, expected [N] = [{n}]")

    def elbos(lo, hi):
        ref = exact[lo:hi] if exact is not None else x.new_zeros(hi - lo)
        return gaps(model, guides, x[lo:hi], ref, families=fams,
                    local={k: local_guide_rows(q, lo, hi) for k, q in qstar.items()},
                    num_samples=num_samples, progress=inner,
                    model_kwargs={**kwargs, **block_rows(batch_kw, lo, hi)})

    reports = map_blocks(elbos, n, block_size, seed, "gap_elbos", progress)
    metas = gather_block_meta([[(r.guide, r.family, r.estimators) for r in rep.rows]
                               for rep in reports])[0]
    columns = [{f: _gather_cpu([getattr(rep.rows[i], f) for rep in reports]) for f in _TENSORS}
               for i in range(len(metas))]
    stage = _slowest([t for rep in reports for t in rep.timings])
    timings = []
    for name in guides:
        timings.append((f"ELBO[q] {name}", stage[f"ELBO[q] {name}"]))
        if name in fit_seconds:
            timings.append((f"fit_local {fams[name]} q* {name}", fit_seconds[name]))
        timings.append((f"ELBO[q*] {name}", stage[f"ELBO[q*] {name}"]))

    if exact is None:
        means = [float(c["elbo_local"].mean()) for c in columns]
        best = metas[max(range(len(metas)), key=means.__getitem__)][0]

        def reference(lo, hi):
            t = time.perf_counter()
            ref = estimate_log_px(model, x[lo:hi], log_px, local_guide_rows(qstar[best], lo, hi),
                                  {**kwargs, **block_rows(batch_kw, lo, hi)}, log_px_options,
                                  progress=inner)
            return ref, (f"log p(x) {ref.estimator}", time.perf_counter() - t)

        refs = map_blocks(reference, n, block_size, seed, "log_px", progress)
        label = gather_block_meta([r.estimator for r, _ in refs])[0]
        log_px_col = _gather_cpu([r.per_datapoint.double().cpu() for r, _ in refs])
        log_px_se = _gather_cpu([r.stderr.double().cpu() for r, _ in refs])
        for c in columns:
            c["log_px"], c["log_px_se"] = log_px_col, log_px_se
        timings += list(_slowest([spent for _, spent in refs]).items())
    else:
        timings += [(k, v) for k, v in stage.items() if k.startswith("log p(x)")]

    rows = tuple(GapRow(name, family, *(c[f] for f in _TENSORS),  # type: ignore[call-arg, arg-type]  # mypy cannot count the columns
                        estimators._replace(log_px=label if exact is None else estimators.log_px))
                 for (name, family, estimators), c in zip(metas, columns, strict=True))
    return GapReport(rows, int(n), tuple(timings))
