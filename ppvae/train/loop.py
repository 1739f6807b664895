"""The training loop of :func:`ppvae.fit`, one concern per function.

A step, the finiteness check closing a window of steps (with rollback), an epoch with validation
and early stopping, its checkpoint and report.

A step evaluates the objective on this rank's shard of a minibatch, back-propagates, makes the
gradients those of the whole minibatch (:mod:`ppvae.train.world`), clips and steps the
optimizer; its loss stays on the device. Every ``check_every`` steps and at the end of an epoch
one host sync checks the window's losses and the parameters: a finite window is counted and
becomes the state to roll back to (:class:`ppvae.train.params.Snapshot`); a non-finite one is
diagnosed (:mod:`ppvae.train.evaluate`), the parameters restored, and training goes on at a
smaller learning rate (``nan_policy="rollback"``) or stops. An epoch that kept no finite window
(each rolled back) stops the run as non-finite: it is not recorded, and no checkpoint claims it.
A :class:`Trainer` holds what the loop reads; the run's progress is its
:class:`ppvae.train.progress.TrainState`.

With validation and ``restore_best`` the best epoch's parameters and buffers are kept in memory
(:func:`track_best`) and written into each checkpoint while they are not the checkpoint's own
(the ``best`` entry, :mod:`ppvae.train.checkpoint`), so that a resumed run restores them too; a
run resumed from a checkpoint without them says so in its message.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled

from ..core.contract import PairInfo
from ..core.progress import bar as progress_bar
from .callbacks import CallbackList
from .checkpoint import BestParams, save_checkpoint
from .data import Epoch, Minibatch, TrainData
from .evaluate import NonFiniteError, conditional_pair, describe_failure
from .interrupt import DeferredInterrupt
from .params import Snapshot, params_finite
from .progress import Best, EpochTally, TrainState
from .settings import LoopSettings, scale_lr, step_schedule
from .world import SingleProcess

__all__ = ["Trainer", "train"]


@dataclass
class Trainer:
    """What the loop reads and writes.

    It reads the pair, its parameters, optimizer, data, ranks and settings, and writes the
    state, the snapshots to restore and the training time.
    """

    model: Any
    guide: Any
    info: PairInfo
    params: dict[str, torch.Tensor]  # by parameter-store name, unconstrained
    optimizer: torch.optim.Optimizer
    scheduler: Any
    buffers: list[torch.Tensor]  # restored with the parameters
    step_loss: Callable  # (x, kwargs, data_scale, step) -> loss (ppvae.train.speedup.capture)
    data: TrainData
    world: SingleProcess
    settings: LoopSettings
    config: dict  # the run's configuration, as checkpoints record it
    state: TrainState
    last_finite: Snapshot  # rolled back to after a non-finite step
    checkpoint: str | os.PathLike | None = None
    callbacks: CallbackList = field(default_factory=CallbackList)  # this rank's
    objective: Any = None  # what trains (FitResult.objective describes it)
    best_params: Snapshot | None = None  # the best epoch's, with validation and restore_best
    # (no optimizer state); None after a resume from a checkpoint that lacks them
    train_time: float = 0.0  # seconds in training steps in this call
    param_list: list[torch.Tensor] = field(init=False)
    zero: torch.Tensor = field(init=False)  # the loss of an empty shard

    def __post_init__(self) -> None:
        self.param_list = list(self.params.values())
        self.zero = self.param_list[0].new_zeros(())

    @property
    def seed(self) -> int:
        """The seed of the minibatch permutations (a resumed run's own)."""
        return self.config["seed"]

    @property
    def minibatch(self) -> int:
        """Rows per optimizer step over all ranks."""
        return self.settings.batch_size * self.world.size

    def snapshot(self) -> Snapshot:
        """A copy of the current parameters, optimizer state and buffers."""
        return Snapshot.take(self.params, self.optimizer, self.buffers)

    def diagnose(self, step: int, where: str, x: torch.Tensor, kwargs: dict, err=None) -> str:
        """Name what went non-finite at ``step`` and restore the last finite state."""
        return describe_failure(step, where, self.model, self.guide, x, kwargs, self.params,
                                lambda: self.last_finite.restore(self.params, self.optimizer,
                                                                 self.buffers), err)


def train(t: Trainer) -> tuple[str, str]:
    """Epochs until ``epochs``, early stopping or a non-finite step.

    Then the best epoch's parameters when kept. Returns (stopped, message) for
    :class:`ppvae.FitResult`.
    """
    s, opts = t.state, t.settings
    outcome = "completed", f"trained {max(0, opts.epochs - s.epoch)} epochs"
    bar = progress_bar(opts.progress if t.world.is_main else False, total=opts.epochs,
                       initial=s.epoch, desc="fit", unit="epoch")
    was_validating = is_validation_enabled()
    pyro.enable_validation(opts.validate)  # once for the loop, not per step
    stop = DeferredInterrupt().install(t.world.interruptible)  # Ctrl-C: at a step boundary
    try:
        while s.epoch < opts.epochs:
            if run_epoch(t, stop, bar):
                outcome = "early_stopping", (f"no improvement for {opts.patience} epochs; best "
                                             f"epoch {s.best.epoch} ({s.best.value:.4f})")
                break
    except NonFiniteError as e:
        outcome = "non_finite", str(e)
    finally:
        pyro.enable_validation(was_validating)
        stop.uninstall()
        bar.close()
    stop.check()  # pressed during the last epoch's validation or checkpoint
    return outcome[0], outcome[1] + restore_best(t, outcome[0])


def restore_best(t: Trainer, stopped: str) -> str:
    """Load the best epoch's parameters when kept; returns what to add to the message.

    With validation and ``restore_best``, when the best epoch is not the last: its parameters
    are restored (said for a non-finite stop, whose message names the last finite state), or,
    when they were not available (resumed from a checkpoint written without them), the message
    says the last epoch's parameters are returned.
    """
    s = t.state
    if t.data.valid is None or not t.settings.restore_best or s.best.epoch < 0 \
            or s.best.epoch == s.epoch - 1:
        return ""
    if t.best_params is None:
        return (f"; the best epoch's ({s.best.epoch}) parameters were not available (the "
                "checkpoint resumed from does not keep them), so the parameters returned are "
                f"the last epoch's ({s.epoch - 1}), not the best")
    t.best_params.restore(t.params, t.optimizer, t.buffers)
    if stopped == "non_finite":
        return f"; restored the best epoch's ({s.best.epoch}) parameters"
    return ""


def run_epoch(t: Trainer, stop: DeferredInterrupt, bar) -> bool:
    """One epoch: its steps, then validation, checkpoint and report. True: stop early."""
    t0 = time.perf_counter()
    try:
        train_value = train_epoch(t, stop)
    finally:
        t.train_time += time.perf_counter() - t0
    return end_epoch(t, train_value, t0, bar)


def train_epoch(t: Trainer, stop: DeferredInterrupt) -> float:
    """The epoch's steps over its minibatches, checked each ``check_every`` steps and at the end.

    Returns the mean per-datapoint objective of the finite windows.
    """
    ep = t.data.train.epoch(t.seed, t.state.epoch)  # a fresh permutation (or one stream pass)
    t.world.seed_epoch(t.seed, t.state.epoch)
    tally, every = EpochTally(), t.settings.check_every
    failures: list[str] = []
    for mb in ep.minibatches(t.minibatch):
        stop.check()
        failure = train_step(t, ep, mb, tally)
        if failure is None and len(tally.window) >= every:
            failure = check_window(t, ep, tally)
        if failure is not None:
            tally.drop_window()
            roll_back_or_stop(t, failure)
            failures.append(failure)
    if tally.window:  # the epoch's last window
        failure = check_window(t, ep, tally)
        if failure is not None:
            tally.drop_window()
            roll_back_or_stop(t, failure)
            failures.append(failure)
    if failures and not tally.kept:  # every window rolled back: nothing of the epoch stands
        s = t.state
        raise NonFiniteError(
            f"the rollback could not recover: epoch {s.epoch} (0-based) kept no finite window "
            f"(each of its {len(failures)} failed window(s) was rolled back; {s.rollbacks} "
            f"rollback(s) in all), so it is not recorded and the parameters are those of the "
            f"last finite state, before epoch {s.epoch}. Last failure: {failures[-1]}")
    return tally.train_value()


def whole(t: Trainer, ep: Epoch, mb: Minibatch) -> tuple[torch.Tensor, dict]:
    """The whole minibatch ``mb`` (all ranks' rows) and its keyword arguments, for a diagnosis."""
    if mb.rows is None:
        assert mb.x is not None  # a streamed batch carries its data
        return mb.x, t.data.kwargs(mb.kwargs or {})
    x, kw = ep.fetch(mb.rows)
    return x, t.data.kwargs(kw)


def train_step(t: Trainer, ep: Epoch, mb: Minibatch, tally: EpochTally) -> str | None:
    """One optimizer step on minibatch ``mb`` (this rank's shard of it).

    The loss is minus the shard's mean per-datapoint objective (``data_scale = 1 / rows``,
    :mod:`ppvae.train.scaling`). Returns None, or the diagnosis of a step that failed
    (distribution validation met non-finite values): the parameters are then back at the last
    finite state.
    """
    shard, xb, kw = None, mb.x, mb.kwargs or {}
    if mb.rows is not None:
        shard = t.world.shard(mb.rows)
        xb, kw = ep.fetch(shard) if len(shard) else (None, {})
    here = xb.shape[0] if xb is not None else 0
    kw = t.data.kwargs(kw)
    err, loss = None, None
    t.optimizer.zero_grad(set_to_none=True)
    if here:  # a rank's share of a short last minibatch may be empty
        assert xb is not None  # rows here
        try:
            loss = t.step_loss(xb, kw, 1.0 / here, t.state.step)
            loss.backward()
        except ValueError as e:  # distribution validation met non-finite values
            if bool(torch.isfinite(xb).all()) and bool(params_finite(t.params)):
                raise
            err = e
    failure = None
    if t.world.reduce_gradients(t.param_list, shard, mb.rows, err is not None,
                                t.settings.validate):
        failure = t.diagnose(t.state.step, "values", *whole(t, ep, mb), err)
    else:
        if t.settings.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(t.param_list, t.settings.clip_norm)
        t.optimizer.step()
        tally.add(loss.detach() * here if loss is not None else t.zero, here, mb)
    t.state.step += 1
    if t.callbacks:
        t.callbacks.step(t.state.step, loss.detach() if loss is not None and err is None
                         else t.zero.new_full((), math.nan))
    return failure


def check_window(t: Trainer, ep: Epoch, tally: EpochTally) -> str | None:
    """The check closing the open window of minibatches (one host sync).

    A finite window is counted and its state kept to roll back to; else the diagnosis of its
    first non-finite minibatch (the parameters are then back at the last finite state).
    """
    losses, rows = t.world.window_totals(torch.stack(tally.window), tally.window_rows)  # [W]
    finite = torch.isfinite(losses)  # [W]
    if bool(finite.all() & params_finite(t.params)):
        tally.keep(losses.sum(), rows)
        t.last_finite = t.snapshot()
        return None
    size = len(tally.window)
    bad = int((~finite).nonzero()[0, 0]) if not bool(finite.all()) else size - 1
    return t.diagnose(t.state.step - size + bad, "loss or parameters",
                      *whole(t, ep, tally.batches[bad]))


def roll_back_or_stop(t: Trainer, failure: str) -> None:
    """After a failed step (the parameters restored): lower the learning rate, or raise.

    Training goes on at a smaller learning rate while the policy allows a rollback, else
    :class:`NonFiniteError` is raised with the diagnosis.
    """
    nan, s = t.settings.nan, t.state
    if nan.rolls_back and s.rollbacks < nan.max_rollbacks:
        s.rollbacks += 1
        scale_lr(t.optimizer, t.scheduler, nan.lr_factor)  # lasting under a cosine schedule
        return
    raise NonFiniteError(failure + (f"; rolled back {s.rollbacks} time(s) before stopping"
                                    if nan.rolls_back else ""))


def end_epoch(t: Trainer, train_value: float, t0: float, bar) -> bool:
    """Record the epoch, validate, track the best epoch, step the schedule, checkpoint, report.

    True when ``patience`` epochs have passed without improvement.
    """
    h = t.state.history
    h.train.append(train_value)
    h.lr.append(t.optimizer.param_groups[0]["lr"])
    value = validate(t) if t.data.valid is not None else train_value
    track_best(t, value)
    step_schedule(t.scheduler, value)
    t.state.epoch += 1
    save_epoch(t)
    report(t, train_value, t0, bar)
    patience = t.settings.patience
    return patience is not None and t.state.best.bad_epochs >= patience


def validate(t: Trainer) -> float:
    """The epoch's validation ELBO, recorded; a non-finite one stops training.

    With global latents it is the ELBO of the model conditioned on the global guide's mean
    (:func:`ppvae.train.evaluate.conditional_pair`).
    """
    d, s = t.data, t.state
    assert d.valid is not None  # validate runs only with validation data
    model, guide, info = t.model, t.guide, t.info
    if info.globals:
        x, kw = d.valid.head(1)
        model, guide, info = conditional_pair(model, guide, info, x, d.kwargs(kw))
    v = t.world.valid_elbo(model, guide, d.valid, info, t.settings.valid_samples, d.fixed_kw)
    if not math.isfinite(v):
        t.last_finite = t.snapshot()  # finite: checked at the epoch's end
        x, kw = d.valid.head(t.settings.batch_size)
        raise NonFiniteError(t.diagnose(s.step, "validation ELBO", x, d.kwargs(kw)))
    s.history.valid.append(v)
    return v


def track_best(t: Trainer, value: float) -> None:
    """Keep the best epoch (and, with validation and ``restore_best``, its parameters).

    The parameters and buffers only: the optimizer state is not needed to return them.
    """
    s = t.state
    if value > s.best.value:
        s.best = Best(value, s.epoch, 0)
        if t.data.valid is not None and t.settings.restore_best:
            t.best_params = Snapshot.take(t.params, None, t.buffers)
    else:
        s.best = s.best._replace(bad_epochs=s.best.bad_epochs + 1)


def save_epoch(t: Trainer) -> None:
    """Write the checkpoint of the finished epoch (rank 0; the other ranks wait for it)."""
    if t.checkpoint is None:
        return
    s = t.state
    best = None  # the best epoch's parameters, when restored at the end and not this epoch's
    if t.best_params is not None and s.best.epoch != s.epoch - 1:
        names = list(t.params)
        best = BestParams(s.best.epoch, dict(zip(names, t.best_params.values, strict=True)),
                          list(t.best_params.buffers))
    if t.world.is_main:
        save_checkpoint(t.checkpoint, params=t.params, model=t.model, guide=t.guide,
                        optimizer=t.optimizer, scheduler=t.scheduler, epoch=s.epoch,
                        step=s.step, config=t.config, state=s.to_checkpoint(), best=best)
    t.world.after_checkpoint()


def report(t: Trainer, train_value: float, t0: float, bar) -> None:
    """The finished epoch to the callbacks (``on_epoch``) and the progress bar."""
    s, h = t.state, t.state.history
    valid = h.valid[-1] if h.valid else None
    if t.callbacks:
        t.callbacks.epoch(s.epoch, {"train": train_value, "valid": valid, "lr": h.lr[-1],
                                    "step": s.step, "seconds": time.perf_counter() - t0})
    bar.update(1)
    bar.set_postfix(train=f"{train_value:.2f}", **({"valid": f"{valid:.2f}"} if h.valid else {}))
