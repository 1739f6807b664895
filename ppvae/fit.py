"""``ppvae.fit``: stochastic variational inference (Hoffman et al. 2013; Kingma and Welling 2014)
for any (model, guide) pair keeping the ppvae contract.

The loop is Pyro's SVI made lean: the pair is checked once (:func:`ppvae.check_pair`), its
parameters are collected once (as ``SVI.step`` does every step), and each step evaluates the
objective from Pyro traces (:mod:`ppvae.objectives`), back-propagates and calls one
``torch.optim`` optimizer over all parameters. Data stay resident on the device and are
minibatched by index with a seeded generator (a fresh permutation per epoch, derived from the
seed and the epoch, so a fixed seed reproduces a CPU run exactly and resuming needs no data
state). The minibatch objective is scaled by N / B so its gradient is that of the full data set.

Host syncs happen once per ``check_every`` steps and per epoch (finiteness of the loss and the
parameters, the epoch's ELBO), not per step. A non-finite step either stops training
(``nan_policy="stop"``) or rolls back to the last finite state with a smaller learning rate
(``"rollback"``); both restore the last finite parameters and report the step and the first
site with a non-finite log density. Checkpoints (:mod:`ppvae.checkpoint`) are written only from
finite states.

Under ``torchrun`` the same call trains data parallel (:mod:`ppvae.distributed`): every rank
holds the data, draws the same per-epoch permutation, and evaluates its contiguous share of
each minibatch of ``batch_size * world_size`` rows (the effective batch; ``batch_size`` is per
rank); gradients are summed across ranks weighted by shard size, so each step is the one a single
process takes on the whole minibatch (with different Monte Carlo draws). Parameters and module
buffers start from rank 0's; the validation ELBO is sharded over ranks and summed; rank 0 alone
writes checkpoints and shows progress; every rank resumes from the checkpoint (which must be
readable by all ranks). Each rank's RNG is reseeded per epoch from (seed, epoch, rank), so a
distributed run is reproducible and resumes exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from . import distributed as ddp
from .checkpoint import load_checkpoint, save_checkpoint
from .contract import check_pair
from .device import resolve_device
from .objectives import ELBO, Objective
from .train_state import (
    Snapshot,
    collect_params,
    first_nonfinite_site,
    heldout_elbo,
    nonfinite_param,
    params_finite,
)

__all__ = ["FitResult", "NonFiniteError", "fit"]


class NonFiniteError(RuntimeError):
    """Raised internally when a step produced a non-finite loss or parameters."""


class FitResult(NamedTuple):
    """What :func:`fit` did. Lists run over all epochs, including those before a resume."""

    train_objective: list[float]  # per epoch: mean per-datapoint objective (ELBO by default)
    valid_elbo: list[float]  # per epoch: mean per-datapoint validation ELBO (empty: no valid)
    lr: list[float]  # per epoch: learning rate used
    best_epoch: int  # epoch (0-based) with the best validation (else training) value
    epochs: int  # epochs completed
    steps: int  # optimizer steps completed
    wall_time: float  # seconds in this call
    steps_per_second: float  # optimizer steps per second of training time in this call
    stopped: str  # "completed", "early_stopping" or "non_finite"
    message: str  # why it stopped; for non-finite: the step and the offending site
    rollbacks: int  # non-finite steps rolled back

    @property
    def best_value(self) -> float:
        values = self.valid_elbo or self.train_objective
        return values[self.best_epoch] if values else float("nan")


def _schedule(spec, optimizer, epochs: int):
    if spec is None:
        return None
    if spec == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if spec == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    if callable(spec):
        return spec(optimizer)
    raise ValueError(f"schedule must be None, 'cosine', 'plateau' or a callable "
                     f"optimizer -> scheduler, got {spec!r}")


def _unpack(data, valid, transform):
    if hasattr(data, "train") and hasattr(data, "valid"):  # a ppvae.data.Dataset record
        if transform is None and getattr(data, "binarization", None) == "dynamic":
            from .data.binarize import dynamic_binarize
            transform = dynamic_binarize
        return data.train, data.valid if valid is None else valid, transform
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a tensor [N, ...] or a ppvae.data.Dataset, got "
                        f"{type(data).__name__}")
    return data, valid, transform


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for one rank's draws in one epoch (distinct across ranks and epochs)."""
    return (seed * 1_000_003 + epoch * 8191 + rank * 131_071 + 1) % 2**63


def _buffers(*modules) -> list[torch.Tensor]:
    """The modules' buffers, each once (a guide is often a submodule of its model)."""
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        if isinstance(m, torch.nn.Module):
            for b in m.buffers():
                seen.setdefault(id(b), b)
    return list(seen.values())


def _valid_elbo(model, guide, valid, info, samples, batch_kw, fixed_kw, world) -> float:
    """Mean validation ELBO; with several ranks each scores its share of the rows."""
    if world == 1:
        return float(heldout_elbo(model, guide, valid, info, num_samples=samples,
                                  batch_kw=batch_kw, fixed_kw=fixed_kw))
    rows = slice(*ddp.shard_bounds(valid.shape[0]))
    total = valid.new_zeros((), dtype=torch.float64)
    if rows.stop > rows.start:
        part = heldout_elbo(model, guide, valid[rows], info, num_samples=samples,
                            batch_kw={k: v[rows] for k, v in batch_kw.items()},
                            fixed_kw=fixed_kw)
        total = part * (rows.stop - rows.start)
    return float(ddp.all_sum(total)) / valid.shape[0]


def fit(model, guide, data, *, valid: torch.Tensor | None = None, epochs: int = 10,
        batch_size: int = 128, lr: float = 1e-3, objective: Objective | None = None,
        optimizer: Callable | None = None, schedule=None, clip_norm: float | None = None,
        patience: int | None = None, restore_best: bool = True, valid_samples: int = 1,
        seed: int | None = 0, device=None, nan_policy: str = "stop", max_rollbacks: int = 3,
        rollback_lr_factor: float = 0.5, check_every: int = 100, validate: bool = False,
        checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        transform: Callable | None = None, batch_kw: dict | None = None,
        valid_batch_kw: dict | None = None, fixed_kw: dict | None = None,
        quiet: bool = False, on_epoch: Callable[..., None] | None = None) -> FitResult:
    """Train ``model`` and ``guide`` on ``data`` by SVI; returns a :class:`FitResult`.

    Args:
        data: training data ``[N, ...]``, or a :class:`ppvae.data.Dataset` (its train and valid
            splits; dynamic binarization applied when the record asks for it).
        valid: held-out data for the per-epoch ELBO, early stopping and ``restore_best``.
        objective: a :mod:`ppvae.objectives` objective (default ``ELBO()``).
        optimizer: ``params -> torch.optim.Optimizer`` (default Adam with ``lr``).
        schedule: None, ``"cosine"``, ``"plateau"`` or ``optimizer -> scheduler``; stepped per
            epoch (``ReduceLROnPlateau`` on minus the validation/training value).
        clip_norm: clip the gradient norm over all parameters.
        patience: stop after this many epochs without improvement.
        restore_best: at the end, load the parameters of the best validation epoch.
        seed: seeds Pyro's RNG and the minibatch order (None: not reseeded).
        device: where data, model and guide (``nn.Module`` s) live; default CUDA if available
            (under torchrun with NCCL: GPU ``LOCAL_RANK``).
        nan_policy: ``"stop"`` or ``"rollback"`` (up to ``max_rollbacks`` times, multiplying the
            learning rate by ``rollback_lr_factor``).
        check_every: steps between finiteness checks (one host sync each).
        validate: keep Pyro/torch distribution validation on in the training loop (it is
            always on for the initial contract check).
        checkpoint: path written atomically after every epoch; ``resume``: a checkpoint to
            continue from (the same path is fine; a missing file starts fresh).
        transform: ``(x_train, generator) -> x`` applied once per epoch (e.g. binarization).
        batch_kw / valid_batch_kw: per-datapoint tensors passed to model and guide, minibatched
            with the data (labels of a conditional model); fixed_kw: passed unchanged.
        quiet: no progress bar.
        on_epoch: called after each epoch (and its checkpoint) as ``on_epoch(epoch=e,
            train=..., valid=... or None, lr=..., step=..., seconds=...)``, ``e`` counting
            completed epochs (a run log such as the CLI's metrics.jsonl).
    """
    if nan_policy not in ("stop", "rollback"):
        raise ValueError(f"nan_policy must be 'stop' or 'rollback', got {nan_policy!r}")
    t_start = time.perf_counter()
    x, valid, transform = _unpack(data, valid, transform)
    world = ddp.world_size() if ddp.init_from_env() else 1
    dev = resolve_device(device) if device is not None else ddp.default_device()
    x = x.to(dev)
    valid = valid.to(dev) if valid is not None else None
    batch_kw = {k: v.to(dev) for k, v in (batch_kw or {}).items()}
    valid_batch_kw = {k: v.to(dev) for k, v in (valid_batch_kw or {}).items()}
    fixed_kw = dict(fixed_kw or {})
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.to(dev)
    objective = objective or ELBO()
    n = x.shape[0]
    if seed is not None:
        pyro.set_rng_seed(seed)
    base_seed = seed if seed is not None else int(torch.randint(2**31, ()))
    if world > 1:
        base_seed = ddp.broadcast_int(base_seed, device=dev)  # the same permutations everywhere

    def epoch_data(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=dev).manual_seed(base_seed * 100003 + epoch)
        xe = transform(x, g) if transform is not None else x
        return xe, torch.randperm(n, generator=g, device=dev)

    probe = slice(0, min(n, batch_size))
    x_probe = epoch_data(0)[0][probe]
    probe_kw = {**fixed_kw, **{k: v[probe] for k, v in batch_kw.items()}}
    info = check_pair(model, guide, x_probe, **probe_kw)
    if valid is not None:
        check_pair(model, guide, valid[:batch_size], **fixed_kw,
                   **{k: v[:batch_size] for k, v in valid_batch_kw.items()})
    params = collect_params(lambda: objective.loss(model, guide, x_probe, info=info,
                                                   kwargs=probe_kw))
    opt = optimizer(list(params.values())) if optimizer else torch.optim.Adam(
        list(params.values()), lr=lr)
    sched = _schedule(schedule, opt, epochs)
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "objective": objective.name,
              "seed": base_seed, "num_data": n, "nan_policy": nan_policy,
              "clip_norm": clip_norm, "patience": patience, "device": str(dev)}
    if world > 1:
        config["world_size"] = world
    hist = {"train": [], "valid": [], "lr": [], "best_epoch": -1, "best": -math.inf,
            "bad_epochs": 0, "rollbacks": 0, "step": 0}
    start_epoch = 0
    found = resume is not None and os.path.exists(resume)
    if world > 1:
        everywhere = int(ddp.all_sum(torch.tensor([int(found)], device=dev)))
        if everywhere not in (0, world):
            raise RuntimeError(f"resume checkpoint {resume} exists on {everywhere} of {world} "
                               "ranks: put it on a file system every rank can read")
    if found:
        meta = load_checkpoint(resume, params=params, model=model, guide=guide, optimizer=opt,
                               scheduler=sched)
        hist.update(meta.state)
        start_epoch = meta.epoch
    buffers = _buffers(model, guide)  # rolled back with the parameters
    if world > 1:  # every rank starts from rank 0's parameters and buffers
        ddp.broadcast_tensors([*params.values(), *buffers])
    good, best = Snapshot.take(params, opt, buffers), None
    stopped, message = "completed", f"trained {epochs} epochs"
    steps0, train_time = hist["step"], 0.0

    def diagnose(step, where, xb, kw, err=None):
        """Describe a failure; restores the last finite state, then re-runs the batch on it."""
        bad_param = nonfinite_param(params)
        good.restore(params, opt, buffers)
        site = first_nonfinite_site(model, guide, xb, kw)
        msg = f"non-finite {where} at step {step}"
        msg += f" ({type(err).__name__}: {err})" if err is not None else ""
        msg += ": " + (site or "the batch's log densities are finite at the last finite "
                       "parameters, so the update diverged (learning rate too large, or a "
                       "non-finite gradient)")
        if bad_param is not None:
            msg += f"; parameter '{bad_param}' had become non-finite"
        return msg + "; parameters restored to the last finite state"

    bar = tqdm(total=epochs, initial=start_epoch, disable=quiet or not ddp.is_main(), desc="fit",
               unit="epoch", leave=False)
    gbs = batch_size * world  # the effective minibatch, split over the ranks
    zero = next(iter(params.values())).new_zeros(())  # an empty shard's loss
    epoch = start_epoch
    was_validating = is_validation_enabled()
    pyro.enable_validation(validate)  # once for the loop, not per step
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            xe, perm = epoch_data(epoch)
            if world > 1:
                pyro.set_rng_seed(_rank_seed(base_seed, epoch, ddp.rank()))
            nb = math.ceil(n / gbs)
            window, kept, rows, wrows = [], [], 0, 0  # window: -objective per batch since a check
            failure = None
            for b in range(nb):
                gidx = perm[b * gbs:(b + 1) * gbs]
                idx = gidx if world == 1 else gidx[slice(*ddp.shard_bounds(len(gidx)))]
                xb = xe[idx]
                kw = {**fixed_kw, **{k: v[idx] for k, v in batch_kw.items()}}
                scale = n / max(xb.shape[0], 1)
                err, loss = None, None
                opt.zero_grad(set_to_none=True)
                if xb.shape[0]:  # a rank's share of a short last minibatch may be empty
                    try:
                        loss = objective.loss(model, guide, xb, info=info._replace(
                            num_data=xb.shape[0]), data_scale=scale, step=hist["step"],
                            kwargs=kw)
                        loss.backward()
                    except ValueError as e:  # distribution validation met non-finite values
                        if bool(torch.isfinite(xb).all()) and bool(params_finite(params)):
                            raise
                        err = e
                failed = err is not None
                if world > 1:  # the step a single process takes on the whole minibatch
                    failed = ddp.allreduce_gradients(list(params.values()), len(idx) / len(
                        gidx), failed if validate else None)
                if failed:
                    failure = diagnose(hist["step"], "values", xe[gidx], {**fixed_kw, **{
                        k: v[gidx] for k, v in batch_kw.items()}}, err)
                else:
                    if clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(list(params.values()), clip_norm)
                    opt.step()
                    window.append(loss.detach() / scale if loss is not None else zero)
                    wrows += xb.shape[0]
                hist["step"] += 1
                if failure is None and (len(window) >= check_every or b == nb - 1):
                    losses = torch.stack(window)  # [W]
                    if world > 1:  # the minibatches' totals over all ranks
                        summed = ddp.all_sum(torch.cat([losses.double(), losses.new_tensor(
                            [wrows], dtype=torch.float64)]))  # [W + 1]
                        losses, wrows = summed[:-1], int(summed[-1])
                    finite = torch.isfinite(losses)  # [W]
                    if bool(finite.all() & params_finite(params)):
                        kept.append(losses.sum())
                        rows += wrows
                        good = Snapshot.take(params, opt, buffers)
                    else:
                        bad = int((~finite).nonzero()[0, 0]) if not bool(finite.all()) else (
                            len(window) - 1)
                        b0 = b - len(window) + 1 + bad  # the first bad batch
                        bidx = perm[b0 * gbs:(b0 + 1) * gbs]
                        bkw = {**fixed_kw, **{k: v[bidx] for k, v in batch_kw.items()}}
                        failure = diagnose(hist["step"] - len(window) + bad,
                                           "loss or parameters", xe[bidx], bkw)
                    window, wrows = [], 0
                if failure is not None:
                    window, wrows, failure_msg, failure = [], 0, failure, None
                    if nan_policy == "rollback" and hist["rollbacks"] < max_rollbacks:
                        hist["rollbacks"] += 1
                        for g in opt.param_groups:
                            g["lr"] *= rollback_lr_factor
                        continue
                    train_time += time.perf_counter() - t0
                    raise NonFiniteError(failure_msg + (
                        f"; rolled back {hist['rollbacks']} time(s) before stopping"
                        if nan_policy == "rollback" else ""))
            train_time += time.perf_counter() - t0
            train_val = -float(torch.stack(kept).sum()) / rows if rows else float("nan")
            hist["train"].append(train_val)
            hist["lr"].append(opt.param_groups[0]["lr"])
            value = train_val
            if valid is not None:
                v = _valid_elbo(model, guide, valid, info, valid_samples, valid_batch_kw,
                                fixed_kw, world)
                if not math.isfinite(v):
                    good = Snapshot.take(params, opt, buffers)  # finite: checked at epoch end
                    raise NonFiniteError(diagnose(hist["step"], "validation ELBO", valid[
                        :batch_size], {**fixed_kw, **{k: t[:batch_size] for k, t in
                                                      valid_batch_kw.items()}}))
                hist["valid"].append(v)
                value = v
            if value > hist["best"]:
                hist["best"], hist["best_epoch"], hist["bad_epochs"] = value, epoch, 0
                if valid is not None and restore_best:
                    best = Snapshot.take(params, opt, buffers)
            else:
                hist["bad_epochs"] += 1
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(-value)
            elif sched is not None:
                sched.step()
            epoch += 1
            if checkpoint is not None and ddp.is_main():
                save_checkpoint(checkpoint, params=params, model=model, guide=guide,
                                optimizer=opt, scheduler=sched, epoch=epoch,
                                step=hist["step"], config=config, state=hist)
            if checkpoint is not None and world > 1:
                ddp.barrier()  # the file is complete before any rank goes on
            if on_epoch is not None:
                on_epoch(epoch=epoch, train=train_val, valid=hist["valid"][-1] if hist["valid"]
                         else None, lr=hist["lr"][-1], step=hist["step"],
                         seconds=time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(train=f"{train_val:.2f}", **(
                {"valid": f"{hist['valid'][-1]:.2f}"} if hist["valid"] else {}))
            if patience is not None and hist["bad_epochs"] >= patience:
                stopped = "early_stopping"
                message = (f"no improvement for {patience} epochs; best epoch "
                           f"{hist['best_epoch']} ({hist['best']:.4f})")
                break
    except NonFiniteError as e:
        stopped, message = "non_finite", str(e)
    finally:
        pyro.enable_validation(was_validating)
        bar.close()
    if best is not None and hist["best_epoch"] != epoch - 1:
        best.restore(params, opt, buffers)
    steps = hist["step"] - steps0
    return FitResult(list(hist["train"]), list(hist["valid"]), list(hist["lr"]),
                     hist["best_epoch"], epoch, hist["step"], time.perf_counter() - t_start,
                     steps / train_time if train_time > 0 else 0.0, stopped, message,
                     hist["rollbacks"])
