"""``ppvae.fit``: stochastic variational inference for any pair keeping the ppvae contract.

SVI as in Hoffman et al. (2013) and Kingma and Welling (2014), for any (model, guide) pair.

The loop is Pyro's SVI made lean: the pair is checked once (:func:`ppvae.check_pair`), its
parameters are collected once (``SVI.step`` does it every step), and each step evaluates the
objective (:mod:`ppvae.objectives`, one Pyro handler frame: :mod:`ppvae.recorder`), back-propagates
and steps one ``torch.optim`` optimizer. Tensor data stay on the device, minibatched by index with
a permutation seeded per (seed, epoch): a fixed seed reproduces a CPU run exactly and resuming
needs no data state (:mod:`ppvae.train.data`: also torch Datasets, fetched by index, and
DataLoaders, streamed).

Scale is the engine's (:mod:`ppvae.train.scaling`): whatever scale the model declares (a
subsampling plate such as ``pyro.plate("data", N, subsample=idx)`` or ``subsample_size=B``,
``poutine.scale``, a Pyro ELBO's own), the training loss is minus the minibatch's mean
per-datapoint objective: per-datapoint sites weigh 1 / B, global latents (outside the data plate)
1 / N, N the training rows. Training values, validation ELBOs and the ``FitResult`` history are
per datapoint. With global latents the validation ELBO is that of the model conditioned on the
global guide's mean (``ppvae.fix_globals``, without the globals' KL), since per-datapoint log
weights need every latent in the data plate.

Inputs:

* ``data`` (and ``valid``): a tensor or numpy array ``[N, ...]``; a :class:`ppvae.data.Dataset`
  record (train and valid splits, dynamic binarization when it asks); a map-style
  ``torch.utils.data.Dataset`` (minibatches fetched by index from the seeded permutation, so
  runs reproduce and resume; a ``TensorDataset`` is used as its tensors); or a
  ``torch.utils.data.DataLoader`` (streamed once per epoch in the loader's batches and order,
  for data that do not fit in memory; N is ``len(loader.dataset)``; one process only). Items and
  batches are a tensor x, a tuple ``(x, *rest)`` whose trailing elements ``batch_kw=("y", ...)``
  names, or a dict with x under ``data_key`` and keyword arguments under its other keys.
* ``objective``: ``ELBO()``, ``IWAE(k)``, ``mean_field()``, ``beta_vae(b)``, ``kl_warmup(s)``, or
  any ``pyro.infer`` ELBO instance: ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceGraph_ELBO``
  (score-function gradients), ``TraceEnum_ELBO`` (enumerated discrete latents), ``RenyiELBO``,
  ``TraceTailAdaptive_ELBO`` (``vectorize_particles=True``), ``Trace_MMD`` and the Jit variants
  (:mod:`ppvae.train.pyro_elbos`), each per datapoint. With no objective given, a model that
  enumerates discrete sites trains with ``TraceEnum_ELBO``; ``FitResult.objective`` says what
  trained.
* ``optimizer``: None (Adam with ``lr``, fused where the parameters allow); a
  ``torch.optim.Optimizer`` subclass such as ``torch.optim.SGD`` (called with ``lr=lr``); a factory
  ``params -> torch.optim.Optimizer``; a ``pyro.optim`` optimizer such as
  ``pyro.optim.Adam({"lr": 1e-3})`` or ``pyro.optim.ClippedAdam({...})`` (per-parameter arguments
  become parameter groups);
  or a ``pyro.optim`` scheduler such as ``pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam,
  "optim_args": {"lr": 1e-2}, "gamma": 0.9})`` (its optimizer, and its scheduler stepped per epoch;
  not with ``schedule=``).

Host syncs happen once per ``check_every`` steps and per epoch, not per step. A non-finite step
stops training (``nan_policy="stop"``) or rolls back to the last finite state with a smaller
learning rate (``"rollback"``), naming the step and the first site with a non-finite log density;
an epoch whose every window had to be rolled back stops the run too (the rollback could not
recover). Checkpoints (:mod:`ppvae.train.checkpoint`) hold finite states and finished epochs
only, and with validation and ``restore_best`` the best epoch's parameters, so that a resumed
run returns them as an uninterrupted one does. Ctrl-C stops at the next step boundary
(:mod:`ppvae.interrupt`) with ``KeyboardInterrupt``; the last finished epoch is saved.

Resuming (``resume=``) continues the run exactly when its settings are unchanged. With
``restore_best`` the checkpoint also keeps the best epoch's parameters, so a resumed run returns
them; one resumed from a checkpoint that lacks them (older ppvae, or written with
``restore_best=False``) returns the last epoch's while the best epoch predates the resume, and
its message says so. ``schedule="cosine"`` is ``lr (1 + cos(pi e / epochs)) / 2`` at epoch ``e``
of this call's ``epochs`` (:class:`ppvae.train.settings.CosineSchedule`): resumed with more
epochs, it anneals from the current epoch to zero at the new end (the epochs already trained
keep their rates; it never rises); a rollback's lower rate lasts under it. Temporary files that
killed checkpoint writes left are removed before the first write
(:func:`ppvae.train.checkpoint.remove_stale_temps`), so two fits must never write the same
checkpoint at once (the command line locks its run directory).

Progress and logging: ``progress=`` draws a bar over epochs (:mod:`ppvae.core.progress`: by
default only when stderr is a terminal); ``callbacks=`` takes
:class:`ppvae.train.callbacks.Callback` instances, called at the start, after every step and
epoch, and at the end or on an error, such as :class:`~ppvae.train.callbacks.TensorBoardLogger`
and :class:`~ppvae.train.callbacks.MLflowLogger`.

Under ``torchrun`` the same call trains data parallel (:mod:`ppvae.distributed`): each rank takes
its share of every minibatch of ``batch_size * world_size`` rows, gradients are summed across
ranks weighted by shard size (one process's step on the whole minibatch), rank 0 checkpoints.

This module sets a run up (data on the device, seeds, the pair checked, its objective,
parameters, optimizer and schedule, the resumed state); :mod:`ppvae.train.loop` trains. The rest
of the package: :mod:`~ppvae.train.settings` (the checked settings, optimizers),
:mod:`~ppvae.train.data`, :mod:`~ppvae.train.params` (parameters and snapshots),
:mod:`~ppvae.train.progress` (the typed training state and :class:`FitResult`),
:mod:`~ppvae.train.evaluate` (validation ELBO, non-finite diagnosis) and
:mod:`~ppvae.train.world` (one process or data-parallel ranks).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import pyro
import torch

from ..core.contract import PairInfo
from ..core.device import resolve_device
from ..distributed import process as ddp
from .callbacks import Callback, CallbackList, EpochFunction
from .checkpoint import BestParams, load_checkpoint, remove_stale_temps, same_run
from .data import TrainData, check_training_pair, check_valid, unpack_data
from .evaluate import NonFiniteError
from .loop import Trainer, train
from .objectives import Objective, as_objective, for_pair
from .params import Snapshot, collect_params, module_buffers
from .progress import FitResult, TrainState, fit_result
from .settings import (
    LoopSettings,
    NanPolicy,
    check_lr,
    check_optimizer,
    make_optimizer,
    make_schedule,
    run_config,
)
from .speedup.capture import training_loss
from .world import SingleProcess, join_world

__all__ = ["FitResult", "NonFiniteError", "fit"]


def fit(model, guide, data, *, valid=None, epochs: int = 10, batch_size: int = 128,
        lr: float = 1e-3, objective=None, optimizer=None, schedule=None,
        clip_norm: float | None = None, patience: int | None = None, restore_best: bool = True,
        valid_samples: int = 1, seed: int | None = 0, device=None, nan_policy: str = "stop",
        max_rollbacks: int = 3, rollback_lr_factor: float = 0.5, check_every: int = 100,
        validate: bool = False, checkpoint: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, transform: Callable | None = None,
        batch_kw: dict | Sequence[str] | None = None,
        valid_batch_kw: dict | Sequence[str] | None = None, fixed_kw: dict | None = None,
        data_key: str = "x", jit: bool = False, progress: bool | None = None,
        quiet: bool = False, on_epoch: Callable[..., None] | None = None,
        callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``model`` and ``guide`` on ``data`` by SVI; returns a :class:`FitResult`.

    The loss is minus the minibatch's mean per-datapoint objective whatever scale the model
    declares, global latents counted 1 / N; every reported number is per datapoint. What each
    of ``data``, ``objective`` and ``optimizer`` may be: the module docstring, "Inputs".

    Args:
        model: a model keeping the ppvae contract (global latents allowed).
        guide: its guide.
        data: a tensor / numpy array ``[N, ...]``, a :class:`ppvae.data.Dataset` record, a
            ``torch.utils.data.Dataset`` (indexed) or a ``DataLoader`` (streamed).
        valid: held-out data (as ``data``) for the epoch's ELBO, early stopping, restore_best.
        epochs: passes over the training data.
        batch_size: minibatch rows (per rank under torchrun; a DataLoader's own instead).
        lr: learning rate (> 0, finite) of the default Adam or of an optimizer class.
        objective: a :mod:`ppvae.objectives` objective or a ``pyro.infer`` ELBO instance
            (default ``ELBO()``, or ``TraceEnum_ELBO()`` for a model enumerating sites).
        optimizer: None (Adam), a ``torch.optim`` class, a factory ``params -> optimizer``, a
            ``pyro.optim`` optimizer or a ``pyro.optim`` scheduler.
        schedule: None, ``"cosine"``, ``"plateau"`` (on minus the validation/training value)
            or ``optimizer -> scheduler``; stepped per epoch (resume: module docstring).
        clip_norm: clip the gradient norm (of the per-datapoint mean loss).
        patience: stop after this many epochs without gain.
        restore_best: at the end, load the parameters of the best validation epoch
            (``FitResult.best_epoch``; with ``valid`` only; also after a resume).
        valid_samples: samples per datapoint for the validation ELBO.
        seed: seeds Pyro's RNG and the minibatch order (None: not reseeded).
        device: where data and modules live; default CUDA if there (torchrun: ``LOCAL_RANK``).
        nan_policy: ``"stop"`` or ``"rollback"`` (to the last finite state).
        max_rollbacks: the most rollbacks ``nan_policy="rollback"`` makes.
        rollback_lr_factor: the factor applied to the learning rate at each rollback.
        check_every: steps between finiteness checks (one host sync each).
        validate: keep distribution validation on in the loop (on for the pair check).
        checkpoint: path written atomically after every epoch (never by two fits at once).
        resume: a checkpoint to continue from (a missing file starts fresh).
        transform: ``(x_train, generator) -> x`` once per epoch (tensor data only).
        batch_kw: per-datapoint keyword arguments (labels): tensors ``[N, ...]`` by name, or
            for a torch Dataset / DataLoader the names of the items' elements after x.
        valid_batch_kw: the same for ``valid`` (for a Dataset / DataLoader: the training names).
        fixed_kw: keyword arguments passed to model and guide unchanged.
        data_key: the key of x in dict items of a Dataset / DataLoader.
        jit: replay the objective from a graph captured per minibatch shape
            (:mod:`ppvae.capture`; not with ``validate``, Jit ELBOs or own-gradient ELBOs).
        progress: a bar over epochs (train, valid ELBO): True, False, None (on a terminal).
        quiet: deprecated alias of ``progress=False`` (kept working).
        on_epoch: called after each epoch's checkpoint (on every rank) as ``on_epoch(epoch=e,
            train=..., valid=... or None, lr=..., step=..., seconds=...)``, e epochs done.
        callbacks: :class:`ppvae.train.callbacks.Callback` instances (loggers: TensorBoard,
            MLflow), called on the main rank at start, steps, epochs and end.
    """
    settings = LoopSettings(epochs=epochs, batch_size=batch_size, check_every=check_every,
                            valid_samples=valid_samples, patience=patience, clip_norm=clip_norm,
                            restore_best=restore_best, validate=validate, jit=jit,
                            progress=quiet_alias(progress, quiet),
                            nan=NanPolicy(nan_policy, max_rollbacks, rollback_lr_factor))
    check_optimizer(optimizer, schedule)
    check_lr(lr, optimizer)
    chosen, t_start = as_objective(objective), time.perf_counter()
    placed, world = place(model, guide, data, valid, device, transform=transform,
                          batch_kw=batch_kw, valid_batch_kw=valid_batch_kw, fixed_kw=fixed_kw,
                          data_key=data_key)
    t = start(model, guide, chosen, placed, world, settings, seed=seed, lr=lr,
              optimizer=optimizer, schedule=schedule, resume=resume,
              default_objective=objective is None)
    t.checkpoint = checkpoint
    t.callbacks = CallbackList([EpochFunction(on_epoch)] if on_epoch is not None else [])
    t.callbacks.callbacks += CallbackList(callbacks).callbacks if world.is_main else []
    return run(t, t_start)


def run(t: Trainer, t_start: float) -> FitResult:
    """Train the set-up run ``t``; ``t_start`` is when the call began (for the wall time).

    The callbacks see the start, and the end with the result, or the error fit raises.
    """
    steps_before = t.state.step
    if t.checkpoint is not None and t.world.is_main:
        remove_stale_temps(t.checkpoint)  # of killed writes; before this call's first write
    try:
        t.callbacks.start(train_info(t))
        stopped, message = train(t)
        result = fit_result(t.state, steps=t.state.step - steps_before,
                            train_time=t.train_time, wall_time=time.perf_counter() - t_start,
                            stopped=stopped, message=message, objective=t.objective.describe())
    except BaseException as e:  # Ctrl-C included: loggers close their files and runs
        t.callbacks.error(e)
        raise
    t.callbacks.end(result)
    return result


def train_info(t: Trainer) -> dict:
    """What ``on_train_start`` receives (:mod:`ppvae.train.callbacks`)."""
    return {"config": dict(t.config), "objective": t.objective.describe(),
            "start_epoch": t.state.epoch, "start_step": t.state.step,
            "num_parameters": sum(p.numel() for p in t.param_list),
            "valid": t.data.valid is not None}


def quiet_alias(progress: bool | None, quiet: bool) -> bool | None:
    """``progress`` with the deprecated ``quiet=True`` read as ``progress=False``."""
    if not isinstance(quiet, bool):
        raise ValueError(f"quiet must be True or False, got {quiet!r}")
    if quiet and progress:
        raise ValueError("quiet=True and progress=True contradict each other; quiet is the "
                         "deprecated spelling of progress=False: pass progress only")
    return False if quiet else progress


def place(model, guide, data, valid, device, **forms) -> tuple[TrainData, SingleProcess]:
    """The data as sources on the device (model and guide moved there too) and the ranks.

    ``forms``: ``transform``, ``batch_kw``, ``valid_batch_kw``, ``fixed_kw``, ``data_key``.
    """
    data, valid, forms["transform"] = unpack_data(data, valid, forms.get("transform"))
    world = join_world()
    dev = resolve_device(device) if device is not None else ddp.default_device()
    placed = TrainData.on(dev, data, valid, **forms)
    if world.size > 1 and not (placed.train.indexed and (placed.valid is None
                                                         or placed.valid.indexed)):
        raise ValueError("a DataLoader is streamed by one process; under torchrun pass a "
                         "tensor or a map-style torch Dataset, which fit shards itself")
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.to(dev)
    return placed, world


def start(model, guide, objective: Objective, data: TrainData, world: SingleProcess,
          settings: LoopSettings, *, seed, lr, optimizer, schedule, resume,
          default_objective: bool = False) -> Trainer:
    """Set a run up: seed, check the pair, collect parameters, build optimizer and schedule.

    Also resumes from a checkpoint, and starts every rank from the same parameters.
    """
    if seed is not None:
        pyro.set_rng_seed(seed)
    first_seed = seed if seed is not None else int(torch.randint(2**31, ()))
    first_seed = world.shared_seed(first_seed, data.device)  # the same permutations everywhere
    info, objective, params = probe_pair(model, guide, objective, data, settings.batch_size,
                                         first_seed, default=default_objective)
    opt, sched, lr = make_optimizer(params, optimizer, lr)
    sched = sched if sched is not None else make_schedule(schedule, opt, settings.epochs)
    config = run_config(settings, lr=lr, objective=objective.name, seed=first_seed,
                        num_data=data.n, device=data.device, ranks=world.config())
    buffers = module_buffers(model, guide)  # rolled back with the parameters
    saved: list[BestParams] = []  # the checkpoint's best epoch, when it keeps one
    state = resume_state(resume, data.device, config, seed is not None, params=params,
                         model=model, guide=guide, optimizer=opt, scheduler=sched,
                         buffers=buffers, best=saved.append)
    step_loss = training_loss(objective, model, guide, info, list(params.values()), buffers,
                              jit=settings.jit, validate=settings.validate, train_size=data.n)
    world.start_together([*params.values(), *buffers])  # rank 0's parameters and buffers
    best = None
    if data.valid is not None and settings.restore_best and state.best.epoch >= 0:
        if state.best.epoch == state.epoch - 1:  # the checkpoint's own epoch
            best = Snapshot.take(params, None, buffers)
        elif saved and saved[0].epoch == state.best.epoch:
            best = Snapshot.of(saved[0].params, params, saved[0].buffers, buffers)
    return Trainer(model, guide, info, params, opt, sched, buffers, step_loss, data, world,
                   settings, config, state, last_finite=Snapshot.take(params, opt, buffers),
                   objective=objective, best_params=best)


def probe_pair(model, guide, objective: Objective, data: TrainData, batch_size: int,
               seed: int, *, default: bool = False
               ) -> tuple[PairInfo, Objective, dict[str, torch.Tensor]]:
    """Check the pair on the first epoch's first rows (and on the validation rows).

    Then choose the objective for it (:func:`ppvae.train.objectives.for_pair`: ``default``
    when none was given) and collect its parameters from one evaluation of it there.
    """
    x_probe, kw = data.train.head(batch_size, seed)
    probe_kw = data.kwargs(kw)
    info = check_training_pair(model, guide, x_probe, probe_kw)
    if info.globals and data.n is None:
        raise ValueError(f"global latent site(s) {list(info.globals)} count 1 / N, but the "
                         "DataLoader's dataset has no length: give it a __len__")
    objective = for_pair(objective, info, default=default)
    if data.valid is not None:
        check_valid(model, guide, data.valid, data.fixed_kw, batch_size)
    params = collect_params(lambda: objective.loss(model, guide, x_probe, info=info,
                                                   kwargs=probe_kw))
    return info, objective, params


def resume_state(resume: str | os.PathLike | None, device, config: dict, seed_given: bool,
                 **live) -> TrainState:
    """A fresh state, or that of the checkpoint ``resume`` when the file exists (on every rank).

    The checkpoint is loaded into the ``live`` parameters, modules, optimizer and scheduler once
    :func:`same_run` agrees it continues this run (``live`` also holds the ``buffers`` and the
    ``best`` callback of :func:`load_checkpoint`). The run keeps the checkpoint's seed when
    none is given (``config["seed"]`` is updated).
    """
    if not ddp.file_everywhere(resume, device=device):
        return TrainState()
    assert resume is not None  # file_everywhere is False for None
    meta = load_checkpoint(resume, **live, check=same_run(resume, config, seed_given))
    config["seed"] = meta.config.get("seed", config["seed"])
    return TrainState.from_checkpoint(meta)
