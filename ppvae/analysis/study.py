"""The inference-gap study of Cremer, Li and Duvenaud (2018), resumable, over any number of rows.

:func:`gap_study` computes what :func:`ppvae.gaps` computes (log p(x), ELBO[q*] and ELBO[q] per
datapoint and guide, hence the approximation and amortization gaps) in stages, each written to
a directory one block of rows at a time, so that a study of thousands of datapoints survives an
interruption and never holds more than a block's Monte Carlo in memory:

1. ``elbo_q``: ELBO[q] of every amortized guide (``num_samples`` samples per datapoint);
2. ``qstar``: per guide, q* of its family by :func:`ppvae.fit_local` started at the guide's
   output, with each datapoint's convergence under the rule of ``local_options`` (``window``,
   ``patience``, ``tol``; Cremer et al. stop after no improvement over 10 checks of 100 steps:
   ``window=100, patience=10``) recorded, then ELBO[q*];
3. ``iwae``: log p(x) by IWAE_k (:func:`ppvae.iwae`, ``k=5000`` by default) from the q* with the
   highest mean ELBO over all rows;
4. ``ais``: log p(x) by AIS (:func:`ppvae.ais`, Neal 2001; Wu et al. 2017) from the prior or
   from one of the amortized guides (``ais_init``);
5. ``bdmc``: the BDMC sandwich (Grosse et al. 2015; Wu et al. 2017) with the AIS settings of
   stage 4, on ``bdmc_data`` datapoints simulated from the model: the gap certifies those
   settings.

The report's log p̂(x) is, per datapoint, the larger of the two stochastic lower bounds (IWAE
and AIS) when both run, with both columns kept in :class:`GapStudy` (:func:`read_gap_study`).

**Files.** ``directory/manifest.json`` records the study's settings: the guides and families,
every stage option, N, the row labels, ``block_size``, ``seed``, a SHA-256 of the data and of the
parameters of every ``nn.Module`` reachable from the model and guides (plus a caller's
``fingerprint`` for anything else). Each block of each stage is one file,
``<stage>.<guide>.<block>.pt``, written to a temporary name and renamed (``os.replace``), so a
file on disk is always complete.

**Resuming.** Rerunning the same call continues where the last one stopped: blocks on disk are
read, not recomputed, and a stage whose blocks are all there is skipped. A call whose settings
differ from the manifest's is refused with a :class:`StudySettingsError` naming every setting
that differs (results are never mixed). Before each block the RNGs are seeded from
(seed, stage, guide, block) (as :mod:`ppvae.distributed.sharded` does), so a resumed study
equals an uninterrupted one bitwise on the CPU.

**Sharding.** Under ``torchrun`` every rank computes its contiguous range of blocks
(:func:`ppvae.distributed.sharded.block_ranges`) and writes them; ranks meet at a barrier after
each stage and every rank assembles the report from the files, so ``directory`` must be on a file
system all ranks share. The result equals the single-process study's for the same
``block_size`` (the seeds follow the block, not the rank).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from ..core.bounds import elbo
from ..core.contract import check_pair
from ..core.diagnostic_warnings import ConvergenceWarning, warn
from ..core.modes import modules_of
from ..core.progress import stage as progress_stage
from ..core.records import frame, record_repr
from ..distributed import process as ddp
from ..infer.ais import BDMCCertificate, ais
from ..infer.bdmc import BDMC_GAP_MAX, bdmc
from ..infer.local.families import FAMILIES, LocalFamily
from ..infer.local.vi import LocalFit, LocalGuide, fit_local, latent_sites
from ..train.checkpoint import save_atomic
from .gaps import infer_family, iwae_log_px, named_guides
from .report import Estimators, GapReport, GapRow, LogPx

__all__ = ["STUDY_FORMAT", "GapStudy", "StudySettingsError", "gap_study", "read_gap_study"]

STUDY_FORMAT = "ppvae.gap_study/1"
_CODES = {"elbo_q": 101, "qstar": 102, "iwae": 103, "ais": 104, "bdmc": 105}  # seed streams
_ESTIMATORS = ("iwae", "ais")


class StudySettingsError(ValueError):
    """A study directory holds a study with other settings than the call's."""


class GapStudy(NamedTuple):
    """A finished study read back from its directory (:func:`read_gap_study`).

    ``report`` is what :func:`gap_study` returns; the other fields are the per-datapoint
    columns behind it.
    """

    report: GapReport
    rows: torch.Tensor  # [N] the datapoints' labels (e.g. test-set rows)
    log_px: dict[str, LogPx]  # estimator ("iwae", "ais") -> its per-datapoint estimate
    converged: dict[str, torch.Tensor]  # guide -> [N] bool: q* converged (the fit's rule)
    steps_used: dict[str, torch.Tensor]  # guide -> [N] steps until convergence (or the limit)
    fits: dict[str, LocalFit]  # guide -> its q* fit record, merged over blocks
    bdmc: BDMCCertificate | None  # the BDMC gap of the AIS settings, if the stage ran
    bdmc_gap: torch.Tensor | None  # [M] per simulated datapoint
    settings: dict[str, Any]  # the manifest

    def __repr__(self) -> str:
        """One line per field, tensors summarized (:func:`ppvae.core.records.record_repr`)."""
        return record_repr(self)

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``).

        Columns: ``row`` (the label), each log p̂(x) estimate with its s.e. (``log_px_iwae``,
        ``log_px_iwae_se``, ``log_px_ais``, ...), and per guide ``converged_<guide>`` and
        ``steps_used_<guide>``.
        """
        cols: dict[str, Any] = {"row": self.rows}
        for name, lp in self.log_px.items():
            cols[f"log_px_{name}"], cols[f"log_px_{name}_se"] = lp.per_datapoint, lp.stderr
        for g in self.converged:
            cols[f"converged_{g}"] = self.converged[g]
            cols[f"steps_used_{g}"] = self.steps_used[g]
        return frame(cols)


# ---------------------------------------------------------------------------- files, settings

def _block_path(directory: Path, key: str, block: int) -> Path:
    return directory / f"{key}.{block:05d}.pt"


def _write_block(path: Path, payload: dict) -> None:
    """``payload`` (CPU tensors, numbers, strings) to ``path`` atomically (temp + rename)."""
    save_atomic(payload, path)


def _read_block(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _hash_tensor(h, t: torch.Tensor) -> None:
    a = t.detach().cpu().contiguous()
    h.update(f"{a.dtype}{tuple(a.shape)}".encode())
    h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")


def _digest(x: torch.Tensor, fns, kwargs: Mapping) -> dict[str, str]:
    """SHA-256 of the data, of the modules' parameters and buffers, of tensor model kwargs."""
    data = hashlib.sha256()
    _hash_tensor(data, x)
    params = hashlib.sha256()
    for m in modules_of(*fns):
        for name, t in sorted(m.state_dict().items()):
            params.update(name.encode())
            _hash_tensor(params, t)
    for name in sorted(kwargs):
        v = kwargs[name]
        params.update(name.encode())
        if isinstance(v, torch.Tensor):
            _hash_tensor(params, v)
        else:
            params.update(repr(v).encode())
    return {"data_sha256": data.hexdigest(), "parameters_sha256": params.hexdigest()}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=repr, sort_keys=True))


def _open_study(directory: Path, settings: dict) -> None:
    """Create ``directory`` with its manifest, or check that its manifest is ``settings``."""
    path = directory / "manifest.json"
    if ddp.is_main():
        directory.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(settings, indent=1, sort_keys=True))
            os.replace(tmp, path)
    ddp.barrier()
    old = json.loads(path.read_text())
    keys = sorted(old.keys() | settings.keys())
    diff = [k for k in keys if old.get(k) != settings.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {_short(old.get(k))} on disk, {_short(settings.get(k))} in "
                          "this call" for k in diff)
        raise StudySettingsError(
            f"the gap study in {directory} was run with other settings ({shown}); rerun with "
            "the same settings to resume it, or use another directory for a new study")


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------- the stages

def _block_ranges(n: int, block_size: int, everyone: bool = False) -> list[tuple[int, int, int]]:
    """``(block, start, stop)`` of this rank's blocks (a contiguous range), or of all blocks.

    The split is that of :func:`ppvae.distributed.sharded.block_ranges`.
    """
    count = math.ceil(n / block_size)
    lo, hi = (0, count) if everyone else ddp.shard_bounds(count)
    return [(b, b * block_size, min(n, (b + 1) * block_size)) for b in range(lo, hi)]


def _main_progress(progress: bool | None) -> bool | None:
    return progress if ddp.is_main() else False


def _rebuild_qstar(sites, family: str, params: list[dict[str, torch.Tensor]],
                   plate: str) -> LocalGuide:
    """A fitted q* (:class:`ppvae.LocalGuide`) from its saved per-datapoint parameters."""
    families = []
    for site, p in zip(sites, params, strict=True):
        ref = p["loc"]  # [B, K]
        layers = p["shift_weight"].shape[1] if "shift_weight" in p else 1
        eye = torch.eye(site.size, dtype=ref.dtype, device=ref.device)
        fam = LocalFamily(family, ref.new_zeros(1, site.size), eye[None], layers)
        for name, t in p.items():
            setattr(fam, name, torch.nn.Parameter(t))
        fam.num_data = ref.shape[0]
        families.append(fam)
    return LocalGuide(tuple(sites), families, plate=plate)

def _seed(seed: int, stage: str, index: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, _CODES[stage], index, block]).generate_state(1)[0])


def _run_stage(directory: Path, stage: str, index: int, n: int, block_size: int, seed: int,
               fn, progress) -> None:
    """``fn(lo, hi) -> dict`` on every block of this rank not yet on disk, each under its seed.

    Each result gets its ``seconds`` and is written atomically; the caller's RNG state is
    restored; all ranks meet at a barrier at the end.
    """
    todo = [(b, lo, hi) for b, lo, hi in _block_ranges(n, block_size)
            if not _block_path(directory, f"{stage}.{index}", b).exists()]
    state = get_rng_state()
    try:
        with progress_stage(_main_progress(progress), f"{stage} blocks", total=len(todo),
                            unit="block") as bar:
            for b, lo, hi in todo:
                pyro.set_rng_seed(_seed(seed, stage, index, b))
                t = time.perf_counter()
                out = fn(lo, hi)
                out = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                       for k, v in out.items()}
                out["seconds"] = time.perf_counter() - t
                _write_block(_block_path(directory, f"{stage}.{index}", b), out)
                bar.update(1)
    finally:
        set_rng_state(state)
    ddp.barrier()


def _blocks(directory: Path, stage: str, index: int, n: int, block_size: int) -> list[dict]:
    """Every block of a stage, in order (``FileNotFoundError`` naming the first missing)."""
    out = []
    for b, _, _ in _block_ranges(n, block_size, everyone=True):
        path = _block_path(directory, f"{stage}.{index}", b)
        if not path.exists():
            raise FileNotFoundError(f"stage '{stage}' of the gap study in {directory} lacks "
                                    f"block {b} ({path.name}): rerun gap_study to finish it")
        out.append(_read_block(path))
    return out


def _cat(parts: list[dict], key: str) -> torch.Tensor:
    return torch.cat([p[key] for p in parts])


class _Context(NamedTuple):
    """What every stage needs: the pair, the data, the directory, blocking and options."""

    model: Any
    x: torch.Tensor
    directory: Path
    block_size: int
    seed: int
    kwargs: dict
    batch_kw: dict
    progress: bool | None

    def kw(self, lo: int, hi: int) -> dict:
        return {**self.kwargs, **{k: v[lo:hi] for k, v in self.batch_kw.items()}}

    def run(self, stage: str, index: int, fn, n: int | None = None) -> None:
        _run_stage(self.directory, stage, index, self.x.shape[0] if n is None else n,
                   self.block_size, self.seed, fn, self.progress)


def _stage_guides(c: _Context, guides: Mapping, fams: Mapping[str, str], *,
                  num_samples: int, local_steps: int, local_options: Mapping) -> None:
    """Stages 1 and 2 for every guide: ELBO[q]; q*, its convergence and ELBO[q*]."""
    inner = _main_progress(c.progress)
    for i, (name, guide) in enumerate(guides.items()):
        def amortized(lo, hi, guide=guide):
            b = elbo(c.model, guide, c.x[lo:hi], num_samples, model_kwargs=c.kw(lo, hi),
                     progress=inner)
            return {"value": b.per_datapoint, "se": b.stderr}

        def optimal(lo, hi, guide=guide, name=name):
            t = time.perf_counter()
            with warnings.catch_warnings():  # counted over all rows when the study is read
                warnings.simplefilter("ignore", ConvergenceWarning)
                q = fit_local(c.model, c.x[lo:hi], fams[name], guide, num_steps=local_steps,
                              **{"progress": inner, **local_options},
                              model_kwargs=c.kw(lo, hi))
            fit_s, t = time.perf_counter() - t, time.perf_counter()
            b = elbo(c.model, q, c.x[lo:hi], num_samples, model_kwargs=c.kw(lo, hi),
                     progress=inner)
            fit = q.fit
            assert fit is not None  # set by fit_local
            return {"value": b.per_datapoint, "se": b.stderr, "converged": fit.converged,
                    "steps_used": fit.steps_used, "fit_elbo": fit.elbo, "trace": fit.trace,
                    "fit": [fit.init, fit.num_steps, fit.max_steps, fit.num_particles,
                            fit.window],
                    "plate": q.plate, "fit_seconds": fit_s, "elbo_seconds": time.perf_counter() - t,
                    "params": [{k: p.detach() for k, p in f.named_parameters()}
                               for f in q.families]}

        c.run("elbo_q", i, amortized)
        c.run("qstar", i, optimal)


def _best_qstar(c: _Context, guides: Mapping) -> int:
    """The index of the guide whose q* has the highest mean ELBO over all rows."""
    n = c.x.shape[0]
    means = [float(_cat(_blocks(c.directory, "qstar", i, n, c.block_size), "value").mean())
             for i in range(len(guides))]
    return max(range(len(means)), key=means.__getitem__)


def _qstar_rows(c: _Context, family: str, index: int, block: int, lo: int, hi: int):
    """The fitted q* of rows ``[lo, hi)`` (block ``block`` of guide ``index``), from its file."""
    saved = _read_block(_block_path(c.directory, f"qstar.{index}", block))
    sites = latent_sites(c.model, c.x[lo:lo + 1], model_kwargs=c.kw(lo, lo + 1))
    params = [{k: v.to(c.x.device) for k, v in p.items()} for p in saved["params"]]
    return _rebuild_qstar(sites, family, params, saved["plate"])


def _stage_log_px(c: _Context, guides: Mapping, fams: Mapping[str, str], log_px: Sequence[str],
                  *, iwae_options: Mapping, ais_options: Mapping, ais_init: str,
                  bdmc_data: int) -> None:
    """Stages 3 to 5: IWAE from the best q*, AIS, BDMC on simulated data."""
    inner = _main_progress(c.progress)
    names = list(guides)
    if "iwae" in log_px:
        best = _best_qstar(c, guides)

        def by_iwae(lo, hi):
            q = _qstar_rows(c, fams[names[best]], best, lo // c.block_size, lo, hi)
            r = iwae_log_px(c.model, c.x[lo:hi], q, c.kw(lo, hi), **iwae_options, progress=inner)
            return {"value": r.per_datapoint, "se": r.stderr, "khat": r.khat,
                    "khat_limit": r.khat_limit, "label": r.estimator}

        c.run("iwae", best, by_iwae)
    if "ais" not in log_px:
        return
    start = None if ais_init == "prior" else guides[ais_init]

    def by_ais(lo, hi):
        r = ais(c.model, c.x[lo:hi], guide=start, **ais_options, progress=inner,
                model_kwargs=c.kw(lo, hi))
        return {"value": r.per_datapoint, "se": r.stderr, "accept": r.accept_rate.mean(0),
                "settings": json.dumps(dict(r.settings or {}), sort_keys=True)}

    c.run("ais", 0, by_ais)
    if bdmc_data > 0:
        def by_bdmc(lo, hi):
            r = bdmc(c.model, c.x[lo:hi], guide=start, **ais_options, progress=inner,
                     model_kwargs=c.kw(lo, hi))
            return {"lower": r.lower.per_datapoint, "lower_se": r.lower.stderr,
                    "upper": r.upper.per_datapoint, "upper_se": r.upper.stderr}

        c.run("bdmc", 0, by_bdmc, n=bdmc_data)


# ------------------------------------------------------------------------------ the study

def _check_options(log_px, fams: Mapping[str, str], ais_init: str, bdmc_data: int, n: int,
                   block_size: int) -> tuple[str, ...]:
    """``log_px`` as a tuple of estimator names; a named ``ValueError`` for bad options."""
    chosen = (log_px,) if isinstance(log_px, str) else tuple(log_px)
    if not chosen or any(e not in _ESTIMATORS for e in chosen) or len(set(chosen)) < len(chosen):
        raise ValueError(f"log_px must name one or both of {_ESTIMATORS}, got {log_px!r}")
    for name, family in fams.items():
        if family not in FAMILIES:
            raise ValueError(f"family for guide '{name}' must be one of {FAMILIES}, "
                             f"got {family!r}")
    if ais_init != "prior" and ais_init not in fams:
        raise ValueError(f"ais_init must be 'prior' or a guide name ({list(fams)}), "
                         f"got {ais_init!r}")
    if n < 1:
        raise ValueError("x has no rows: the gap study needs at least one datapoint")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 <= bdmc_data <= n:
        raise ValueError(f"bdmc_data must be between 0 and N = {n} (the simulated datapoints "
                         f"take their shapes from the first rows of x), got {bdmc_data}")
    if bdmc_data and "ais" not in chosen:
        raise ValueError("bdmc_data > 0 certifies the AIS stage: add 'ais' to log_px")
    return chosen


def _labels(rows: Sequence[int] | None, n: int) -> list[int]:
    labels = list(range(n)) if rows is None else [int(r) for r in rows]
    if len(labels) != n:
        raise ValueError(f"rows has {len(labels)} labels for N = {n} datapoints")
    return labels


def gap_study(model, guides, x: torch.Tensor, directory: str | os.PathLike, *,
              families=None, log_px: str | Sequence[str] = ("iwae", "ais"),
              block_size: int = 100, seed: int = 0, num_samples: int = 1000,
              local_steps: int = 1000, local_options: Mapping | None = None,
              iwae_options: Mapping | None = None, ais_options: Mapping | None = None,
              ais_init: str = "prior", bdmc_data: int = 0, rows: Sequence[int] | None = None,
              fingerprint: str | None = None, batch_kw: dict | None = None,
              progress: bool | None = None,
              model_kwargs: Mapping[str, Any] | None = None) -> GapReport:
    """Run (or resume) the gap study of ``guides`` on ``x`` in ``directory`` (module docstring).

    Args:
        model: a model keeping the ppvae contract.
        guides: one amortized guide, or a mapping name -> guide.
        x: data ``[N, ...]``.
        directory: where the manifest and the block files go (created if needed).
        families: q*'s family per guide (str or mapping); default :func:`ppvae.infer_family`.
        log_px: "iwae", "ais" or both; with both the report's log p̂(x) is their per-datapoint
            maximum (both are stochastic lower bounds).
        block_size: rows per block (the unit of resuming, sharding, seeding and memory).
        seed: the Monte Carlo seed; each block's is derived from (seed, stage, guide, block).
        num_samples: samples per datapoint for every ELBO.
        local_steps: :func:`ppvae.fit_local`'s ``num_steps`` (the step limit).
        local_options: :func:`ppvae.fit_local`'s other options (``num_particles``, ``window``,
            ``patience``, ``tol``, ...: the convergence rule).
        iwae_options: options of the IWAE estimator (``k``, default 5000; ``num_estimates``,
            default 2; ``chunk_size``).
        ais_options: :func:`ppvae.ais`'s options (``num_steps``, ``num_chains``, ...), used by
            the BDMC stage too.
        ais_init: AIS starts from "prior" or from the amortized guide of this name.
        bdmc_data: datapoints simulated from the model for the BDMC stage (0: no BDMC).
        rows: labels of the datapoints (default 0..N-1), recorded (e.g. test-set rows).
        fingerprint: any string identifying what the digests cannot see (parameters outside
            ``nn.Module`` objects, a checkpoint id); part of the settings.
        batch_kw: per-datapoint model keywords, split with the rows.
        progress: bars over each stage's blocks and within them (main rank only).
        model_kwargs: passed to model and guides.

    Returns:
        The :class:`ppvae.GapReport` (the per-datapoint details: :func:`read_gap_study`).
    """
    kwargs, batch = dict(model_kwargs or {}), dict(batch_kw or {})
    guides, families = named_guides(guides, families)
    n = int(x.shape[0])
    first = {**kwargs, **{k: v[:1] for k, v in batch.items()}}
    for guide in guides.values():  # a broken pair: a named error first
        check_pair(model, guide, x[:1], model_kwargs=first)
    fams = {name: families.get(name) or infer_family(g, x[:1], first)
            for name, g in guides.items()}
    chosen = _check_options(log_px, fams, ais_init, bdmc_data, n, block_size)
    local = dict(local_options or {})
    iw = {"k": 5000, "num_estimates": 2, **dict(iwae_options or {})}
    ai = dict(ais_options or {})
    settings = _jsonable({
        "format": STUDY_FORMAT, "guides": [[k, v] for k, v in fams.items()], "num_data": n,
        "rows": _labels(rows, n), "block_size": block_size, "seed": seed,
        "log_px": list(chosen), "num_samples": num_samples, "local_steps": local_steps,
        "local_options": local, "iwae_options": iw if "iwae" in chosen else None,
        "ais_options": ai if "ais" in chosen else None,
        "ais_init": ais_init if "ais" in chosen else None, "bdmc_data": bdmc_data,
        "fingerprint": fingerprint, "batch_kw": sorted(batch),
        **_digest(x, (model, *guides.values()), {**kwargs, **batch})})
    directory = Path(directory)
    _open_study(directory, settings)
    c = _Context(model, x, directory, block_size, seed, kwargs, batch, progress)
    _stage_guides(c, guides, fams, num_samples=num_samples, local_steps=local_steps,
                  local_options=local)
    _stage_log_px(c, guides, fams, chosen, iwae_options=iw, ais_options=ai,
                  ais_init=ais_init, bdmc_data=bdmc_data)
    study = read_gap_study(directory)
    late = {g: int((~c_).sum()) for g, c_ in study.converged.items() if not bool(c_.all())}
    if late and local_steps > 0:
        warn(ConvergenceWarning,
             "gap study: q* did not converge within local_steps on " + ", ".join(
                 f"{k}/{n} datapoints of guide '{g}'" for g, k in late.items())
             + " (GapStudy.converged says which); there ELBO[q*] is below its optimum, so the "
             "approximation gap is overestimated and the amortization gap underestimated",
             stacklevel=2)
    return study.report


def _best_index(directory: Path, n: int, block_size: int, count: int) -> int:
    means = [float(_cat(_blocks(directory, "qstar", i, n, block_size), "value").mean())
             for i in range(count)]
    return max(range(count), key=means.__getitem__)


def _log_px_columns(directory: Path, s: dict, best: int
                    ) -> tuple[dict[str, LogPx], LogPx, list[tuple[str, float]]]:
    """Each estimator's log p̂(x), the report's (the best of them) and their timings."""
    n, bs = s["num_data"], s["block_size"]
    out, timings = {}, []
    if "iwae" in s["log_px"]:
        parts = _blocks(directory, "iwae", best, n, bs)
        khat = None if parts[0]["khat"] is None else _cat(parts, "khat")
        out["iwae"] = LogPx(_cat(parts, "value"), _cat(parts, "se"), parts[0]["label"], khat,
                            parts[0]["khat_limit"])
        timings.append((f"log p(x) {parts[0]['label']}", sum(p["seconds"] for p in parts)))
    if "ais" in s["log_px"]:
        parts = _blocks(directory, "ais", 0, n, bs)
        a = json.loads(parts[0]["settings"])
        label = (f"AIS ({a['num_steps']} steps, {a['num_chains']} chains, from "
                 f"{s['ais_init']})")
        out["ais"] = LogPx(_cat(parts, "value"), _cat(parts, "se"), label)
        timings.append((f"log p(x) {label}", sum(p["seconds"] for p in parts)))
    if len(out) == 1:
        return out, next(iter(out.values())), timings
    iw, ai = out["iwae"], out["ais"]
    use_ais = ai.per_datapoint > iw.per_datapoint  # [N]
    best_of = LogPx(torch.where(use_ais, ai.per_datapoint, iw.per_datapoint),
                    torch.where(use_ais, ai.stderr, iw.stderr),
                    f"max per datapoint of {iw.estimator} and {ai.estimator} (both stochastic "
                    f"lower bounds; AIS the larger on {int(use_ais.sum())}/{n})")
    return out, best_of, timings


def _bdmc_columns(directory: Path, s: dict) -> tuple[BDMCCertificate | None,
                                                      torch.Tensor | None, float]:
    if not s["bdmc_data"]:
        return None, None, 0.0
    parts = _blocks(directory, "bdmc", 0, s["bdmc_data"], s["block_size"])
    gap = _cat(parts, "upper").double() - _cat(parts, "lower").double()  # [M]
    se = (_cat(parts, "upper_se").double() ** 2 + _cat(parts, "lower_se").double() ** 2).sqrt()
    m = gap.numel()
    cert = BDMCCertificate(float(gap.mean()), float(se.pow(2).sum().sqrt() / m), m,
                           BDMC_GAP_MAX)
    return cert, gap, sum(p["seconds"] for p in parts)


def _merged_fit(parts: list[dict], family: str) -> LocalFit:
    """One :class:`ppvae.LocalFit` over all blocks of a q* stage, in datapoint order.

    A block that stopped after fewer windows has its last window repeated in ``trace`` (as
    :func:`ppvae.distributed.sharded.sharded_fit_local` merges blocks); ``history`` is the
    mean of ``trace`` over datapoints and ``seconds`` the sum over blocks.
    """
    length = max(p["trace"].shape[0] for p in parts)
    traces = []
    for p in parts:
        t = p["trace"]  # [W, B]
        if t.shape[0] < length:
            last = t[-1:] if t.shape[0] else torch.full((1, t.shape[1]), math.nan,
                                                        dtype=t.dtype)
            t = torch.cat([t, last.expand(length - t.shape[0], -1)])
        traces.append(t)
    trace = torch.cat(traces, 1)  # [W, N]
    init, _, max_steps, particles, window = parts[0]["fit"]
    return LocalFit(family, init, max(p["fit"][1] for p in parts), max_steps, particles,
                    _cat(parts, "converged"), _cat(parts, "steps_used"), _cat(parts, "fit_elbo"),
                    tuple(trace.double().mean(1).tolist()),
                    sum(p["fit_seconds"] for p in parts), trace, window)


def read_gap_study(directory: str | os.PathLike) -> GapStudy:
    """The finished study in ``directory``: its report and per-datapoint details.

    Raises ``FileNotFoundError`` naming the first missing block of an unfinished study.
    """
    directory = Path(directory)
    s = json.loads((directory / "manifest.json").read_text())
    if s.get("format") != STUDY_FORMAT:
        raise ValueError(f"{directory / 'manifest.json'} is not a ppvae gap study manifest")
    n, bs, guides = s["num_data"], s["block_size"], s["guides"]
    best = _best_index(directory, n, bs, len(guides))
    estimates, ref, log_px_times = _log_px_columns(directory, s, best)
    cert, gap, bdmc_s = _bdmc_columns(directory, s)
    if cert is not None:
        ref = ref._replace(estimator=f"{ref.estimator}; AIS settings: {cert}")
    rows, timings, converged, steps, fits = [], [], {}, {}, {}
    opts = s["local_options"]
    rule = (f"window {opts.get('window', 100)}, patience {opts.get('patience', 3)}, "
            f"tol {opts.get('tol', 1e-3)}")
    for i, (name, family) in enumerate(guides):
        amort = _blocks(directory, "elbo_q", i, n, bs)
        opt = _blocks(directory, "qstar", i, n, bs)
        fits[name] = _merged_fit(opt, family)
        converged[name], steps[name] = fits[name].converged, fits[name].steps_used
        q = LogPx(_cat(amort, "value"), _cat(amort, "se"), "ELBO[q]")
        qs = LogPx(_cat(opt, "value"), _cat(opt, "se"), "ELBO[q*]")
        est = Estimators(ref.estimator,
                         f"ELBO, {s['num_samples']} samples from local {family} q* (at most "
                         f"{s['local_steps']} steps, {opts.get('num_particles', 8)} particles; "
                         f"{int(converged[name].sum())}/{n} converged: {rule})",
                         f"ELBO, {s['num_samples']} samples from amortized q")
        rows.append(GapRow.build(name, family, ref, qs, q, est))
        timings += [(f"ELBO[q] {name}", sum(p["seconds"] for p in amort)),
                    (f"fit_local {family} q* {name}", sum(p["fit_seconds"] for p in opt)),
                    (f"ELBO[q*] {name}", sum(p["elbo_seconds"] for p in opt))]
    timings += log_px_times
    if cert is not None:
        timings.append((f"BDMC on {cert.num_data} simulated datapoints", bdmc_s))
    report = GapReport(tuple(rows), n, tuple(timings))
    return GapStudy(report, torch.tensor(s["rows"]), estimates, converged, steps, fits, cert,
                    gap, s)
