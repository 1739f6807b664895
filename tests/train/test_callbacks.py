"""fit's callbacks (issue 18): the hook order, and real TensorBoard event files and MLflow runs.

A tiny VAE trains for two epochs on 48 binary rows; what the loggers wrote is read back with
TensorBoard's EventAccumulator and MLflow's client and compared with the FitResult history.
"""

import math
import os
import sys

import pyro
import pytest
import torch
from registry import binary_batch

import ppvae
from ppvae.models import VAE
from ppvae.train import Callback, MLflowLogger, TensorBoardLogger

ROWS, BATCH, EPOCHS = 48, 16, 2  # 3 steps per epoch


def _vae(seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 2, (8,), name="vae_callbacks")


def _fit(callbacks, *, x=None, valid=True, **kw):
    vae = _vae()
    x = binary_batch(ROWS) if x is None else x
    return ppvae.fit(vae, vae.guide, x, valid=binary_batch(16, seed=1) if valid else None,
                     epochs=EPOCHS, batch_size=BATCH, device="cpu", progress=False,
                     callbacks=callbacks, **kw)


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_start(self, info):
        self.calls.append(("start", info))

    def on_step(self, step, loss):
        self.calls.append(("step", step, loss))

    def on_epoch(self, epoch, metrics):
        self.calls.append(("epoch", epoch, metrics))

    def on_train_end(self, result):
        self.calls.append(("end", result))

    def on_train_error(self, error):
        self.calls.append(("error", error))


def test_a_callback_sees_start_steps_epochs_and_end_in_order():
    rec, legacy = Recorder(), []
    r = _fit([rec], on_epoch=lambda **m: legacy.append(m))
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["start"] + (["step"] * 3 + ["epoch"]) * EPOCHS + ["end"]
    info = rec.calls[0][1]
    assert info["config"]["epochs"] == EPOCHS and info["config"]["batch_size"] == BATCH
    assert info["start_epoch"] == 0 and info["start_step"] == 0 and info["valid"] is True
    assert info["objective"] == r.objective and info["num_parameters"] > 0
    steps = [c for c in rec.calls if c[0] == "step"]
    assert len(steps) == r.steps and [c[1] for c in steps] == list(range(1, r.steps + 1))
    assert all(c[2].shape == () and torch.isfinite(c[2]) for c in steps)  # 0-dim tensors
    epochs = [c for c in rec.calls if c[0] == "epoch"]
    assert [c[1] for c in epochs] == [1, 2]
    assert [c[2]["train"] for c in epochs] == r.train_objective
    assert [c[2]["valid"] for c in epochs] == r.valid_elbo
    assert [c[2]["step"] for c in epochs] == [3, 6] and [c[2]["lr"] for c in epochs] == r.lr
    assert rec.calls[-1][1] is r or rec.calls[-1][1] == r
    # the on_epoch keyword still works, with its keywords
    assert [m["epoch"] for m in legacy] == [1, 2] and legacy[1]["train"] == r.train_objective[1]
    # the mean of an epoch's step losses is minus its training objective (equal-sized batches)
    first = torch.stack([c[2] for c in steps[:3]]).mean()
    assert float(first) == pytest.approx(-r.train_objective[0], rel=1e-5)


def test_a_non_finite_stop_still_ends_every_callback():
    rec = Recorder()
    x = binary_batch(ROWS)
    r = _fit([rec], x=x, optimizer=lambda ps: torch.optim.Adam(ps, lr=math.inf),
             check_every=2)
    assert r.stopped == "non_finite"
    assert rec.calls[0][0] == "start" and rec.calls[-1] == ("end", r)
    assert not any(c[0] == "epoch" for c in rec.calls)


def test_an_error_reaches_on_train_error_and_propagates():
    class Stop(Exception):
        pass

    class Boom(Callback):
        def on_epoch(self, epoch, metrics):
            raise Stop("from a callback")

    class BadCloser(Callback):
        def on_train_error(self, error):
            raise RuntimeError("cannot close")

    rec = Recorder()
    with pytest.raises(Stop) as caught:
        _fit([rec, BadCloser(), Boom()])
    assert rec.calls[-1][0] == "error" and isinstance(rec.calls[-1][1], Stop)
    assert not any(c[0] == "end" for c in rec.calls)
    assert any("BadCloser.on_train_error failed too" in n for n in caught.value.__notes__)
    with pytest.raises(TypeError, match="Callback instances"):
        _fit([lambda **kw: None])


def test_tensorboard_logger_writes_one_scalar_per_epoch_equal_to_the_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tb"
    r = _fit([TensorBoardLogger(log_dir, every_steps=2)])
    assert list(log_dir.glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(log_dir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"epoch/train", "epoch/valid", "epoch/lr", "epoch/seconds", "step/loss"} <= tags
    for tag, want in (("epoch/train", r.train_objective), ("epoch/valid", r.valid_elbo),
                      ("epoch/lr", r.lr)):
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx(want, rel=1e-6)  # stored as float32
    assert [e.step for e in ea.Scalars("step/loss")] == [2, 4, 6]
    assert "config/text_summary" in ea.Tags()["tensors"]  # the settings, as a table
    text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| epochs | 2 |" in text and "| objective | elbo |" in text
    assert _session_status(ea) == "STATUS_SUCCESS"
    # a non-finite stop closes the writer too, its session marked failed
    bad_dir = tmp_path / "tb_nan"
    bad = _fit([TensorBoardLogger(bad_dir)], optimizer=lambda ps: torch.optim.Adam(
        ps, lr=math.inf), check_every=2)
    assert bad.stopped == "non_finite"
    ea = EventAccumulator(str(bad_dir))
    ea.Reload()
    assert _session_status(ea) == "STATUS_FAILURE" and "epoch/train" not in ea.Tags()["scalars"]


def _session_status(ea) -> str:
    """The HParams session-end status a TensorBoard run recorded."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(ea.summary_metadata)
    content = ea.summary_metadata["_hparams_/session_end_info"].plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    return api_pb2.Status.Name(data.session_end_info.status)


def test_mlflow_logger_writes_a_local_run_equal_to_the_history(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    r = _fit([MLflowLogger("ppvae-test", run_name="tiny", tracking_uri=uri, every_steps=3)])
    logger_client = MLflowLogger(tracking_uri=uri).client  # opened as the logger opens it
    (run,) = logger_client.search_runs(
        [logger_client.get_experiment_by_name("ppvae-test").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and float(run.data.params["lr"]) == 1e-3
    assert run.data.params["objective"] == "elbo" and run.data.tags["ppvae.stopped"] == "completed"
    for key, want in (("epoch/train", r.train_objective), ("epoch/valid", r.valid_elbo),
                      ("epoch/lr", r.lr)):
        history = sorted(logger_client.get_metric_history(run.info.run_id, key),
                         key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(want, rel=1e-12)
    steps = logger_client.get_metric_history(run.info.run_id, "step/loss")
    assert sorted(m.step for m in steps) == [3, 6]
    assert run.data.metrics["best/epoch"] == r.best_epoch
    assert run.data.metrics["best/value"] == pytest.approx(r.best_value, rel=1e-12)
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set only around the logger's calls


def test_mlflow_run_of_a_non_finite_stop_is_failed_and_ctrl_c_killed(tmp_path):
    uri = str(tmp_path / "mlruns")  # a plain directory works too
    r = _fit([MLflowLogger("nan", tracking_uri=uri)],
             optimizer=lambda ps: torch.optim.Adam(ps, lr=math.inf), check_every=2)
    assert r.stopped == "non_finite"

    class CtrlC(Callback):
        def on_epoch(self, epoch, metrics):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit([MLflowLogger("nan", tracking_uri=uri), CtrlC()])
    client = MLflowLogger(tracking_uri=uri).client
    runs = client.search_runs([client.get_experiment_by_name("nan").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [x.info.status for x in runs] == ["FAILED", "KILLED"]
    assert runs[0].data.tags["ppvae.stopped"] == "non_finite"
    assert "non-finite" in runs[0].data.tags["ppvae.message"]


def test_missing_extras_and_bad_settings_are_named(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="every_steps must be an integer >= 0"):
        TensorBoardLogger(tmp_path, every_steps=-1)
    with pytest.raises(ValueError, match="every_steps must be an integer >= 0"):
        MLflowLogger(tracking_uri=str(tmp_path), every_steps=2.5)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'ppvae\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ImportError, match=r"pip install 'ppvae\[mlflow\]'"):
        MLflowLogger(tracking_uri=str(tmp_path))
