"""The resumable gap study (ppvae.analysis.study): resumes exactly, shards exactly, refuses mixes.

Every comparison is exact (``torch.equal`` on the per-datapoint columns): each block's Monte
Carlo is seeded from (seed, stage, guide, block), so an interrupted study resumed, a study
killed by SIGKILL and resumed, and a study sharded over two ranks all give the bits of one
uninterrupted single-process run on the CPU. The model is a small VAE on the 8x8 digits with
short runs (tests/gap_study_worker.py: N = 24 in 3 blocks; about a second per study).
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import gap_study_worker as worker
import pytest
import torch

import ppvae.analysis.study as study_module
from ppvae.analysis.report import GapReport
from ppvae.analysis.study import StudySettingsError, gap_study, read_gap_study

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings(
    "ignore::ppvae.core.diagnostic_warnings.DiagnosticWarning")  # short runs, tiny model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted study: the bits every other run must reproduce."""
    directory = tmp_path_factory.mktemp("reference")
    worker.run(directory)
    return read_gap_study(directory)


def _assert_same(a, b) -> None:
    """Equal per-datapoint results (every column of every stage), bit for bit."""
    assert len(a.report.rows) == len(b.report.rows)
    for ra, rb in zip(a.report.rows, b.report.rows, strict=True):
        for f in ("log_px", "log_px_se", "elbo_local", "elbo_local_se", "elbo_amortized",
                  "elbo_amortized_se"):
            assert torch.equal(getattr(ra, f), getattr(rb, f)), f
        assert ra.estimators == rb.estimators
    assert a.log_px.keys() == b.log_px.keys()
    for k in a.log_px:
        assert torch.equal(a.log_px[k].per_datapoint, b.log_px[k].per_datapoint), k
        assert torch.equal(a.log_px[k].stderr, b.log_px[k].stderr), k
    for g in a.converged:
        assert torch.equal(a.converged[g], b.converged[g])
        assert torch.equal(a.steps_used[g], b.steps_used[g])
        assert torch.equal(a.fits[g].trace, b.fits[g].trace)
    assert torch.equal(a.bdmc_gap, b.bdmc_gap)
    assert a.settings == b.settings


def test_the_study_holds_what_it_reports(reference):
    s, n = reference, worker.N
    row = s.report.row("diag")
    iw, ai = s.log_px["iwae"], s.log_px["ais"]
    # the report's log p̂(x) is the per-datapoint larger of the two lower bounds
    assert torch.equal(row.log_px, torch.maximum(iw.per_datapoint, ai.per_datapoint))
    assert "max per datapoint of IWAE_20" in row.estimators.log_px
    assert "BDMC gap" in row.estimators.log_px  # the AIS settings' certificate travels along
    assert s.converged["diag"].dtype == torch.bool and s.converged["diag"].shape == (n,)
    assert int(s.steps_used["diag"].max()) <= 40
    fit = s.fits["diag"]  # the blocks' fit records merged: one trace column per datapoint
    assert fit.trace.shape == (len(fit.history), n) and fit.window == 10
    assert torch.equal(fit.converged, s.converged["diag"])
    assert s.bdmc is not None and s.bdmc.num_data == 5 and s.bdmc_gap.shape == (5,)
    assert torch.equal(s.rows, torch.arange(n))
    assert s.to_dataframe().shape[0] == n
    back = GapReport.from_json(s.report.to_json())  # the report's JSON round trip still holds
    assert torch.equal(back.rows[0].log_px, row.log_px)  # float64 both ways
    stages = [k for k, _ in s.report.timings]
    assert stages[:3] == ["ELBO[q] diag", "fit_local diag q* diag", "ELBO[q*] diag"]
    assert stages[-1] == "BDMC on 5 simulated datapoints"


def test_an_interrupted_study_resumes_to_the_same_bits(reference, tmp_path, monkeypatch):
    write, calls = study_module._write_block, []

    def interrupted(path, payload):
        if path.name == "qstar.0.00001.pt":  # mid-stage: block 0 of q* is on disk
            raise KeyboardInterrupt
        write(path, payload)

    monkeypatch.setattr(study_module, "_write_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker.run(tmp_path)
    assert (tmp_path / "qstar.0.00000.pt").exists()
    assert not (tmp_path / "qstar.0.00001.pt").exists()
    monkeypatch.setattr(study_module, "_write_block", write)
    fit_local = study_module.fit_local
    monkeypatch.setattr(study_module, "fit_local",
                        lambda *a, **k: calls.append(a[1].shape[0]) or fit_local(*a, **k))
    worker.run(tmp_path)
    assert calls == [8, 8]  # blocks 1 and 2 only: block 0 was read from disk
    _assert_same(read_gap_study(tmp_path), reference)


def test_a_killed_process_resumes_to_the_same_bits(reference, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "gap_study_worker.py"), "kill",
                           str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert (tmp_path / "qstar.0.00000.pt").exists()
    assert not (tmp_path / "qstar.0.00001.pt").exists()
    assert (tmp_path / ".qstar.0.00001.pt.partial.tmp").exists()  # what the kill left
    worker.run(tmp_path)
    _assert_same(read_gap_study(tmp_path), reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_sharded_study_equals_the_single_process_one(reference, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if Path("/sys/class/net/lo").exists():  # both ranks on this host: loopback
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "gap_study_worker.py"), "shard", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["rows"] == reports[1]["rows"]  # every rank assembled the same report
    _assert_same(read_gap_study(tmp_path), reference)


def test_changed_settings_are_refused_by_name(reference, tmp_path):
    vae, guides, x = worker.problem()
    quick = worker.options(log_px="iwae", bdmc_data=0, local_steps=10)
    gap_study(vae, guides, x, tmp_path, **quick)
    with pytest.raises(StudySettingsError, match=r"block_size: 8 on disk, 6 in this call"):
        gap_study(vae, guides, x, tmp_path, **{**quick, "block_size": 6})
    with pytest.raises(StudySettingsError, match=r"local_options"):
        gap_study(vae, guides, x, tmp_path, **{**quick, "local_options": {"window": 5}})
    with pytest.raises(StudySettingsError, match=r"data_sha256"):
        gap_study(vae, guides, 1 - x, tmp_path, **quick)
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)  # another model: its parameters' digest differs
    with pytest.raises(StudySettingsError, match=r"parameters_sha256"):
        gap_study(vae, guides, x, tmp_path, **quick)


def test_a_finished_study_is_read_not_recomputed(reference, tmp_path, monkeypatch):
    worker.run(tmp_path)
    calls = []

    def counted(name):
        fn = getattr(study_module, name)
        return lambda *a, **k: calls.append(name) or fn(*a, **k)

    for name in ("elbo", "fit_local", "iwae_log_px", "ais", "bdmc"):
        monkeypatch.setattr(study_module, name, counted(name))
    report = worker.run(tmp_path)
    assert calls == []
    assert torch.equal(report.rows[0].log_px, reference.report.rows[0].log_px)


def test_bad_options_are_named(tmp_path):
    vae, guides, x = worker.problem()
    with pytest.raises(ValueError, match="log_px must name"):
        gap_study(vae, guides, x, tmp_path, log_px=("iwae", "exact"))
    with pytest.raises(ValueError, match="bdmc_data must be between 0 and N = 24"):
        gap_study(vae, guides, x, tmp_path, bdmc_data=30)
    with pytest.raises(ValueError, match="ais_init must be 'prior' or a guide name"):
        gap_study(vae, guides, x, tmp_path, ais_init="flow")
    with pytest.raises(ValueError, match="rows has 3 labels for N = 24"):
        gap_study(vae, guides, x, tmp_path, rows=[1, 2, 3])
    assert not (tmp_path / "manifest.json").exists()  # nothing written for a refused call
