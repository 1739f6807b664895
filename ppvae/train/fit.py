"""``ppvae.fit``: stochastic variational inference (Hoffman et al. 2013; Kingma and Welling 2014)
for any (model, guide) pair keeping the ppvae contract.

The loop is Pyro's SVI made lean: the pair is checked once (:func:`ppvae.check_pair`), its
parameters are collected once (``SVI.step`` does it every step), and each step evaluates the
objective (:mod:`ppvae.objectives`, one Pyro handler frame: :mod:`ppvae.recorder`), back-propagates
and steps one ``torch.optim`` optimizer. Data stay on the device, minibatched by index with a
permutation seeded per (seed, epoch): a fixed seed reproduces a CPU run exactly and resuming needs
no data state. The minibatch objective is scaled by N / B (the full data set's gradient).

Host syncs happen once per ``check_every`` steps and per epoch, not per step. A non-finite step
stops training (``nan_policy="stop"``) or rolls back to the last finite state with a smaller
learning rate (``"rollback"``), naming the step and the first site with a non-finite log density;
checkpoints (:mod:`ppvae.checkpoint`) hold finite states only. Ctrl-C stops at the next step
boundary (:mod:`ppvae.interrupt`) with ``KeyboardInterrupt``; the last finished epoch is saved.

Under ``torchrun`` the same call trains data parallel (:mod:`ppvae.distributed`): each rank takes
its share of every minibatch of ``batch_size * world_size`` rows, gradients are summed across
ranks weighted by shard size (one process's step on the whole minibatch), rank 0 checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..core.contract import check_pair
from ..core.device import resolve_device
from ..distributed import process as ddp
from .checkpoint import load_checkpoint, same_run, save_checkpoint
from .interrupt import DeferredInterrupt
from .objectives import Objective, as_objective
from .speedup.capture import training_loss
from .state import (
    FitResult,
    NonFiniteError,
    Snapshot,
    check_settings,
    check_valid,
    collect_params,
    describe_failure,
    make_schedule,
    module_buffers,
    params_finite,
    rank_seed,
    sharded_valid_elbo,
    unpack_data,
)

__all__ = ["FitResult", "NonFiniteError", "fit"]


def fit(model, guide, data, *, valid: torch.Tensor | None = None, epochs: int = 10,
        batch_size: int = 128, lr: float = 1e-3, objective: Objective | None = None,
        optimizer: Callable | None = None, schedule=None, clip_norm: float | None = None,
        patience: int | None = None, restore_best: bool = True, valid_samples: int = 1,
        seed: int | None = 0, device=None, nan_policy: str = "stop", max_rollbacks: int = 3,
        rollback_lr_factor: float = 0.5, check_every: int = 100, validate: bool = False,
        checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        transform: Callable | None = None, batch_kw: dict | None = None,
        valid_batch_kw: dict | None = None, fixed_kw: dict | None = None, jit: bool = False,
        quiet: bool = False, on_epoch: Callable[..., None] | None = None) -> FitResult:
    """Train ``model`` and ``guide`` on ``data`` by SVI; returns a :class:`FitResult`.

    Args:
        data: training data ``[N, ...]`` (tensor or numpy array), or a :class:`ppvae.data.Dataset`
            (its train and valid splits; dynamic binarization applied when the record asks).
        valid: held-out data for the per-epoch ELBO, early stopping and ``restore_best``.
        objective: a :mod:`ppvae.objectives` objective (default ``ELBO()``) or a Pyro ELBO.
        optimizer: ``params -> torch.optim.Optimizer`` (default Adam with ``lr``).
        schedule: None, ``"cosine"``, ``"plateau"`` or ``optimizer -> scheduler``; stepped per
            epoch (``ReduceLROnPlateau`` on minus the validation/training value).
        clip_norm: clip the gradient norm; patience: stop after this many epochs without gain.
        restore_best: at the end, load the parameters of the best validation epoch.
        seed: seeds Pyro's RNG and the minibatch order (None: not reseeded).
        device: where data, model and guide (``nn.Module`` s) live; default CUDA if available
            (under torchrun with NCCL: GPU ``LOCAL_RANK``).
        nan_policy: ``"stop"`` or ``"rollback"`` (up to ``max_rollbacks`` times, multiplying the
            learning rate by ``rollback_lr_factor``).
        check_every: steps between finiteness checks (one host sync each).
        validate: keep distribution validation on in the loop (always on for the pair check).
        checkpoint: path written atomically after every epoch; ``resume``: a checkpoint to
            continue from (the same path is fine; a missing file starts fresh).
        transform: ``(x_train, generator) -> x`` applied once per epoch (e.g. binarization).
        batch_kw / valid_batch_kw: per-datapoint tensors passed to model and guide, minibatched
            with the data (labels of a conditional model); fixed_kw: passed unchanged.
        jit: capture the objective as a graph of tensor operations once per minibatch shape and
            replay it (:mod:`ppvae.capture`): no Pyro handler work per step. Needs a model and
            guide that run the same tensor operations for every minibatch (checked on the first
            replays; a mismatch raises :class:`ppvae.CaptureError`). Not with ``validate``.
        quiet: no progress bar. on_epoch: called after each epoch (and its checkpoint) as
            ``on_epoch(epoch=e, train=..., valid=... or None, lr=..., step=..., seconds=...)``,
            ``e`` counting completed epochs (a run log such as the CLI's metrics.jsonl).
    """
    check_settings(epochs=epochs, batch_size=batch_size, check_every=check_every,
                   valid_samples=valid_samples, patience=patience, clip_norm=clip_norm,
                   nan_policy=nan_policy, max_rollbacks=max_rollbacks,
                   rollback_lr_factor=rollback_lr_factor)
    objective, t_start = as_objective(objective), time.perf_counter()
    x, valid, transform = unpack_data(data, valid, transform)
    world = ddp.world_size() if ddp.init_from_env() else 1
    dev = resolve_device(device) if device is not None else ddp.default_device()
    x, valid = x.to(dev), (valid.to(dev) if valid is not None else None)
    batch_kw = {k: v.to(dev) for k, v in (batch_kw or {}).items()}
    valid_batch_kw = {k: v.to(dev) for k, v in (valid_batch_kw or {}).items()}
    fixed_kw = dict(fixed_kw or {})
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.to(dev)
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
        check_valid(model, guide, valid, fixed_kw, valid_batch_kw, batch_size)
    params = collect_params(lambda: objective.loss(model, guide, x_probe, info=info,
                                                   kwargs=probe_kw))
    opt = optimizer(list(params.values())) if optimizer else torch.optim.Adam(
        list(params.values()), lr=lr)
    sched = make_schedule(schedule, opt, epochs)
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "objective": objective.name,
              "seed": base_seed, "num_data": n, "nan_policy": nan_policy,
              "clip_norm": clip_norm, "patience": patience, "device": str(dev), "jit": jit}
    config.update({"world_size": world} if world > 1 else {})
    hist, epoch = {"train": [], "valid": [], "lr": [], "best_epoch": -1, "best": -math.inf,
                   "bad_epochs": 0, "rollbacks": 0, "step": 0}, 0
    if ddp.file_everywhere(resume, device=dev):  # the same run, its seed when none is given
        meta = load_checkpoint(resume, params=params, model=model, guide=guide, optimizer=opt,
                               scheduler=sched, check=same_run(resume, config, seed is not None))
        hist.update(meta.state)
        epoch, base_seed = meta.epoch, meta.config.get("seed", base_seed)
        config["seed"] = base_seed
    buffers = module_buffers(model, guide)  # rolled back with the parameters
    step_loss = training_loss(objective, model, guide, info, list(params.values()), buffers,
                              jit=jit, validate=validate)
    if world > 1:  # every rank starts from rank 0's parameters and buffers
        ddp.broadcast_tensors([*params.values(), *buffers])
    good, best = Snapshot.take(params, opt, buffers), None
    stopped, message = "completed", f"trained {max(0, epochs - epoch)} epochs"
    steps0, train_time = hist["step"], 0.0

    def diagnose(step, where, xb, kw, err=None):
        return describe_failure(step, where, model, guide, xb, kw, params,
                                lambda: good.restore(params, opt, buffers), err)

    bar = tqdm(total=epochs, initial=epoch, disable=quiet or not ddp.is_main(), desc="fit",
               unit="epoch", leave=False)
    gbs = batch_size * world  # the effective minibatch, split over the ranks
    zero = next(iter(params.values())).new_zeros(())  # an empty shard's loss
    was_validating = is_validation_enabled()
    pyro.enable_validation(validate)  # once for the loop, not per step
    stop = DeferredInterrupt().install(world == 1)  # Ctrl-C acts at the next step boundary
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            xe, perm = epoch_data(epoch)
            if world > 1:
                pyro.set_rng_seed(rank_seed(base_seed, epoch, ddp.rank()))
            nb = math.ceil(n / gbs)
            window, kept, rows, wrows = [], [], 0, 0  # window: -objective per batch since a check
            failure = None
            for b in range(nb):
                stop.check()
                gidx = perm[b * gbs:(b + 1) * gbs]
                idx = gidx if world == 1 else gidx[slice(*ddp.shard_bounds(len(gidx)))]
                xb = xe[idx]
                kw = {**fixed_kw, **{k: v[idx] for k, v in batch_kw.items()}}
                scale = n / max(xb.shape[0], 1)
                err, loss = None, None
                opt.zero_grad(set_to_none=True)
                if xb.shape[0]:  # a rank's share of a short last minibatch may be empty
                    try:
                        loss = step_loss(xb, kw, scale, hist["step"])
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
                v = sharded_valid_elbo(model, guide, valid, info, valid_samples, valid_batch_kw,
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
        stop.uninstall()
        bar.close()
    stop.check()  # pressed during the last epoch's validation or checkpoint
    if best is not None and hist["best_epoch"] != epoch - 1:
        best.restore(params, opt, buffers)
    steps = hist["step"] - steps0
    return FitResult(list(hist["train"]), list(hist["valid"]), list(hist["lr"]),
                     hist["best_epoch"], epoch, hist["step"], time.perf_counter() - t_start,
                     steps / train_time if train_time > 0 else 0.0, stopped, message,
                     hist["rollbacks"])
