"""Callbacks of :func:`ppvae.fit`: a small interface, and loggers for TensorBoard and MLflow.

``fit(..., callbacks=[...])`` calls, on the main rank only under ``torchrun``:

* ``on_train_start(info)`` once the run is set up (resumed, if it resumes), before its first
  step. ``info`` is a dict: ``config`` (the run's configuration as its checkpoints record it:
  epochs, batch_size, lr, objective, seed, num_data, nan_policy, clip_norm, patience, device,
  jit, and world_size under torchrun), ``objective`` (what trains, as
  :attr:`ppvae.FitResult.objective` says), ``start_epoch`` and ``start_step`` (non-zero after a
  resume), ``num_parameters`` (scalars trained) and ``valid`` (whether there is validation data).
* ``on_step(step, loss)`` after every optimizer step: ``step`` counts the steps completed over
  the run (resumed ones included), ``loss`` is minus the minibatch's mean per-datapoint
  objective as a 0-dim tensor on the device (this rank's share under torchrun; NaN for a step
  whose evaluation failed). Reading it (``float(loss)``) waits for the device: a callback that
  wants numbers does so every few steps, as the loggers here do (``every_steps``).
* ``on_epoch(epoch, metrics)`` after each epoch's checkpoint: ``epoch`` counts the epochs
  completed, ``metrics`` holds ``train`` (the epoch's mean per-datapoint training objective,
  nats), ``valid`` (mean validation ELBO, nats, or None), ``lr``, ``step`` and ``seconds``.
* ``on_train_end(result)`` with the :class:`ppvae.FitResult`, also after a non-finite stop
  (``result.stopped == "non_finite"``).
* ``on_train_error(error)`` instead of ``on_train_end`` when fit raises (Ctrl-C's
  ``KeyboardInterrupt``, an error in the model or in a callback), before the error propagates;
  for loggers to close their files or runs. An error raised here is added to the original
  error's notes rather than hiding it.

Subclass :class:`Callback` and override what you need (every hook is a no-op there).
:class:`TensorBoardLogger` (``pip install 'ppvae[tensorboard]'``) and :class:`MLflowLogger`
(``pip install 'ppvae[mlflow]'``) import their library when constructed, so a missing extra is
named before training starts. Both log the same names: per epoch ``epoch/train``,
``epoch/valid`` (nats per datapoint), ``epoch/lr`` and ``epoch/seconds`` at step = epochs
completed, and ``step/loss`` (nats per datapoint) every ``every_steps`` optimizer steps.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .progress import FitResult

__all__ = ["Callback", "CallbackList", "EpochFunction", "MLflowLogger", "TensorBoardLogger"]


class Callback:
    """A hook into :func:`ppvae.fit`; every method is a no-op until overridden.

    The calls and their arguments are described in :mod:`ppvae.train.callbacks`.
    """

    def on_train_start(self, info: dict[str, Any]) -> None:
        """The run is set up; ``info`` describes it (module docstring)."""

    def on_step(self, step: int, loss: torch.Tensor) -> None:
        """Optimizer step ``step`` is done; ``loss`` is a 0-dim device tensor (nats)."""

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """``epoch`` epochs are done; ``metrics``: train, valid, lr, step, seconds."""

    def on_train_end(self, result: FitResult) -> None:
        """Training ended (completed, stopped early or non-finite) with ``result``."""

    def on_train_error(self, error: BaseException) -> None:
        """The fit is raising ``error`` (Ctrl-C or a failure): release what the callback holds."""


class EpochFunction(Callback):
    """fit's ``on_epoch=`` function as a callback: ``fn(epoch=..., **metrics)`` per epoch."""

    def __init__(self, fn) -> None:
        if not callable(fn):
            raise TypeError(f"on_epoch must be callable, got {fn!r}")
        self.fn = fn

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Call the function with keywords ``epoch``, ``train``, ``valid``, ``lr``, ..."""
        self.fn(epoch=epoch, **metrics)


class CallbackList:
    """The callbacks of one fit call, called in order.

    Each hook calls every callback's; ``end`` reaches every callback even when one raises
    (the first error is raised afterwards), and ``error`` never replaces the error it reports.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be ppvae.train.callbacks.Callback instances "
                                f"(subclass Callback), got {cb!r}")

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def start(self, info: dict[str, Any]) -> None:
        """``on_train_start(info)`` of each callback."""
        for cb in self.callbacks:
            cb.on_train_start(info)

    def step(self, step: int, loss: torch.Tensor) -> None:
        """``on_step(step, loss)`` of each callback."""
        for cb in self.callbacks:
            cb.on_step(step, loss)

    def epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """``on_epoch(epoch, metrics)`` of each callback (each gets its own copy)."""
        for cb in self.callbacks:
            cb.on_epoch(epoch, dict(metrics))

    def end(self, result: FitResult) -> None:
        """``on_train_end(result)`` of every callback; then the first error any raised."""
        first: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.on_train_end(result)
            except BaseException as e:  # the others must still close
                first = first or e
        if first is not None:
            raise first

    def error(self, error: BaseException) -> None:
        """``on_train_error(error)`` of every callback; their own errors become notes."""
        for cb in self.callbacks:
            try:
                cb.on_train_error(error)
            except Exception as e:  # never hide the error being reported
                error.add_note(f"callback {type(cb).__name__}.on_train_error failed too: "
                               f"{type(e).__name__}: {e}")


def _every(every_steps: int, who: str) -> int:
    if isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 0:
        raise ValueError(f"{who}: every_steps must be an integer >= 0 (0: no step losses), "
                         f"got {every_steps!r}")
    return every_steps


def _config_rows(info: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings to log: its configuration, objective and parameter count."""
    return {**dict(info.get("config", {})), "objective": info.get("objective", ""),
            "num_parameters": info.get("num_parameters", 0)}


class TensorBoardLogger(Callback):
    """Write a fit's curves to TensorBoard event files in ``log_dir``.

    Per epoch (at step = epochs completed): ``epoch/train`` (the training objective) and
    ``epoch/valid`` (the validation ELBO), both in nats per datapoint, ``epoch/lr`` and
    ``epoch/seconds``; ``step/loss`` every ``every_steps`` optimizer steps (minus the
    minibatch objective; 0: none; one wait for the device each). At the start, the settings as
    text (``config``) and as hyperparameters for TensorBoard's HParams dashboard (those that are
    not None), with ``epoch/train`` and ``epoch/valid`` as its metrics; at the end the session's
    status (success, or failure after a non-finite stop, an error or Ctrl-C). Events are
    flushed after every epoch and the writer is closed at the end, however fit ends. View with
    ``tensorboard --logdir <log_dir>``.

    Args:
        log_dir: the run's directory (created; one directory per run keeps runs apart).
        every_steps: optimizer steps between ``step/loss`` points.
    """

    def __init__(self, log_dir: str | os.PathLike, *, every_steps: int = 50) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoardLogger needs the tensorboard package: "
                              "pip install 'ppvae[tensorboard]'") from e
        self._writer_class = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.every_steps = _every(every_steps, "TensorBoardLogger")
        self.writer: Any = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        """Open the writer; write the settings as text and as hyperparameters."""
        from torch.utils.tensorboard.summary import hparams

        self.writer = self._writer_class(self.log_dir)
        rows = _config_rows(info)
        table = "\n".join(["| setting | value |", "|---|---|"]
                          + [f"| {k} | {v} |" for k, v in rows.items()])
        self.writer.add_text("config", table, info.get("start_step", 0))
        values = {k: v for k, v in rows.items() if isinstance(v, int | float | str | bool)}
        metrics = dict.fromkeys(["epoch/train"] + (["epoch/valid"] if info.get("valid") else []),
                                math.nan)
        experiment, start, _ = hparams(values, metrics)
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)

    def on_step(self, step: int, loss: torch.Tensor) -> None:
        """Every ``every_steps`` steps: ``step/loss``."""
        if self.writer is not None and self.every_steps and step % self.every_steps == 0:
            self.writer.add_scalar("step/loss", float(loss), step)

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """The epoch's scalars, then a flush."""
        if self.writer is None:
            return
        for key in ("train", "valid", "lr", "seconds"):
            if metrics.get(key) is not None:
                self.writer.add_scalar(f"epoch/{key}", float(metrics[key]), epoch)
        self.writer.flush()

    def on_train_end(self, result: FitResult) -> None:
        """Write the session's status and close."""
        self._close(success=result.stopped != "non_finite")

    def on_train_error(self, error: BaseException) -> None:
        """Write a failed session's status and close."""
        self._close(success=False)

    def _close(self, success: bool) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.file_writer.add_summary(_session_end(success))
        finally:
            writer.close()


def _session_end(success: bool):
    """The HParams plugin's session-end summary with status success or failure."""
    from tensorboard.compat.proto.summary_pb2 import (
        Summary,
        SummaryMetadata,
    )
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import (
        HParamsPluginData,
        SessionEndInfo,
    )

    status = Status.Value("STATUS_SUCCESS" if success else "STATUS_FAILURE")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=status,
                                                                end_time_secs=time.time()),
                                version=PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=PLUGIN_NAME, content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)])


def _local_store(uri: str) -> bool:
    """Whether ``uri`` names MLflow's file store (a ``file:`` URI or a plain path)."""
    if uri.startswith("file:"):
        return True
    return "://" not in uri and not uri.startswith(("databricks", "sqlite:", "uc:"))


@contextlib.contextmanager
def _file_store_allowed(allowed: bool) -> Iterator[None]:
    """MLflow 3's file store refuses to open unless ``MLFLOW_ALLOW_FILE_STORE`` is set."""
    if not allowed or os.environ.get("MLFLOW_ALLOW_FILE_STORE") is not None:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _default_tracking_uri() -> str:
    """MLflow's tracking URI, or ``./mlruns`` where MLflow's default needs the full package.

    MLflow 3 defaults to ``sqlite:///mlflow.db``, which needs SQLAlchemy (not part of
    mlflow-skinny); without it the local file store ``./mlruns`` is used (MLflow 2's default).
    """
    import importlib.util

    import mlflow

    uri = mlflow.get_tracking_uri()
    if (uri.startswith("sqlite:") and "MLFLOW_TRACKING_URI" not in os.environ
            and importlib.util.find_spec("sqlalchemy") is None):
        return "./mlruns"
    return uri


class MLflowLogger(Callback):
    """Log a fit as an MLflow run: its settings as params, its curves as metrics.

    At the start the run is created in ``experiment`` (made if missing; None: MLflow's
    "Default") with the settings as params (configuration, objective, parameter count). Per
    epoch, ``epoch/train``, ``epoch/valid`` (nats per datapoint), ``epoch/lr`` and
    ``epoch/seconds`` with step = epochs completed; ``step/loss`` every ``every_steps``
    optimizer steps (0: none; one wait for the device each). At the end the tags
    ``ppvae.stopped`` and ``ppvae.message``, the metrics ``best/epoch`` and ``best/value``, and
    the run's status: FINISHED (completed or stopped early), FAILED (non-finite stop or an
    error) or KILLED (Ctrl-C).

    Tracking URIs with mlflow-skinny (``ppvae[mlflow]``): a local directory or ``file:`` URI
    (MLflow's file store, which MLflow 3 keeps in maintenance mode behind
    ``MLFLOW_ALLOW_FILE_STORE``: the logger sets it for its own calls, so a path just works;
    ``mlflow ui`` needs ``MLFLOW_ALLOW_FILE_STORE=true`` to read it), or ``http(s)://`` (a
    tracking server). ``sqlite:///...`` (MLflow 3's default) needs the full package with
    SQLAlchemy (``pip install mlflow``). With ``tracking_uri=None`` the logger uses
    ``MLFLOW_TRACKING_URI`` or :func:`mlflow.set_tracking_uri`'s, and ``./mlruns`` where
    MLflow's default would need SQLAlchemy that is not installed. The logger keeps its own
    client: it does not touch MLflow's active run.

    Args:
        experiment: the experiment's name (None: "Default").
        run_name: the run's name (None: MLflow's generated one).
        tracking_uri: where runs are stored (see above).
        every_steps: optimizer steps between ``step/loss`` points.
    """

    def __init__(self, experiment: str | None = None, run_name: str | None = None,
                 tracking_uri: str | os.PathLike | None = None, *,
                 every_steps: int = 50) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ImportError("MLflowLogger needs MLflow: pip install 'ppvae[mlflow]'") from e
        self.every_steps = _every(every_steps, "MLflowLogger")
        self.experiment, self.run_name = experiment, run_name
        uri = os.fspath(tracking_uri) if tracking_uri is not None else _default_tracking_uri()
        self.tracking_uri = uri
        self._file_store = _local_store(uri)
        with _file_store_allowed(self._file_store):
            self.client = MlflowClient(uri)  # checks the URI before training starts
        self.run_id: str | None = None

    def _call(self, name: str, *args, **kwargs):
        with _file_store_allowed(self._file_store):
            return getattr(self.client, name)(*args, **kwargs)

    def _experiment_id(self) -> str:
        name = self.experiment or "Default"
        found = self._call("get_experiment_by_name", name)
        if found is not None:
            return found.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self._call("create_experiment", name)
        except MlflowException:  # made meanwhile by another process
            return self._call("get_experiment_by_name", name).experiment_id

    def on_train_start(self, info: dict[str, Any]) -> None:
        """Create the run and log the settings as params."""
        from mlflow.entities import Param

        run = self._call("create_run", self._experiment_id(), run_name=self.run_name)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in _config_rows(info).items()]
        self._call("log_batch", self.run_id, params=params)

    def on_step(self, step: int, loss: torch.Tensor) -> None:
        """Every ``every_steps`` steps: ``step/loss``."""
        if self.run_id is not None and self.every_steps and step % self.every_steps == 0:
            self._call("log_metric", self.run_id, "step/loss", float(loss), step=step)

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """The epoch's metrics at step ``epoch``."""
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(f"epoch/{k}", float(metrics[k]), now, epoch)
                 for k in ("train", "valid", "lr", "seconds") if metrics.get(k) is not None]
        self._call("log_batch", self.run_id, metrics=batch)

    def on_train_end(self, result: FitResult) -> None:
        """Tags, best epoch and status; the run ends."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric("best/epoch", float(result.best_epoch), now, 0)]
        if math.isfinite(result.best_value):
            metrics.append(Metric("best/value", result.best_value, now, 0))
        tags = [RunTag("ppvae.stopped", result.stopped),
                RunTag("ppvae.message", result.message[:5000])]
        try:
            self._call("log_batch", self.run_id, metrics=metrics, tags=tags)
        finally:
            self._end("FAILED" if result.stopped == "non_finite" else "FINISHED")

    def on_train_error(self, error: BaseException) -> None:
        """End the run: KILLED for Ctrl-C, FAILED otherwise."""
        self._end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def _end(self, status: str) -> None:
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        self._call("set_terminated", run_id, status=status)
