"""``ppvae gaps`` as a resumable study (issue 20): --num-data all, both log p(x) estimators with
BDMC, an interrupted command resumed by rerunning it (the same bits as an uninterrupted one),
a finished study read rather than recomputed, and bad counts refused by name."""

import argparse
import json
import shutil

import pytest

import ppvae.analysis.study as study_module
from ppvae.app import gaps as gaps_command
from ppvae.app.cli import EXIT_INTERRUPTED, main

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "256", "--lr", "0.01"]
GAPS = ["--num-data", "12", "--guides", "--local-steps", "10", "--samples", "10", "--k", "10",
        "--log-px", "iwae", "ais", "--ais-steps", "5", "--ais-chains", "4", "--bdmc", "3",
        "--block-size", "5"]
pytestmark = pytest.mark.filterwarnings(
    "ignore::ppvae.core.diagnostic_warnings.DiagnosticWarning")  # short runs, tiny model


def cli(*args) -> int:
    return main(["--threads", "1", "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    assert cli("train", "--out", out, "--epochs", "1", *TINY) == 0
    return out


def _copy(trained, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(trained, out)
    return out


def _rows(run) -> list:
    return json.loads((run / "gaps.json").read_text())["rows"]


def test_num_data_takes_all_and_refuses_bad_counts(capsys):
    p = argparse.ArgumentParser()
    gaps_command.add_arguments(p)
    assert p.parse_args(["run", "--num-data", "all"]).num_data is None
    assert p.parse_args(["run", "--num-data", "7"]).num_data == 7
    assert p.parse_args(["run", "--log-px", "iwae", "ais"]).log_px == ["iwae", "ais"]
    assert p.parse_args(["run", "--log-px", "ais"]).log_px == ["ais"]  # the old form works
    for bad in ("zero", "0", "-3"):
        with pytest.raises(SystemExit):
            p.parse_args(["run", "--num-data", bad])
        assert "expected a positive integer or 'all'" in capsys.readouterr().err


def test_an_interrupted_gaps_command_resumes_by_rerunning_it(trained, tmp_path, monkeypatch):
    whole = _copy(trained, tmp_path, "whole")
    assert cli("gaps", whole, *GAPS) == 0
    run = _copy(trained, tmp_path, "interrupted")
    write = study_module._write_block

    def interrupted(path, payload):
        if path.name == "qstar.0.00001.pt":  # the second block of the q* stage
            raise KeyboardInterrupt
        write(path, payload)

    monkeypatch.setattr(study_module, "_write_block", interrupted)
    assert cli("gaps", run, *GAPS) == EXIT_INTERRUPTED
    assert not (run / "gaps.json").exists()
    monkeypatch.setattr(study_module, "_write_block", write)
    assert cli("gaps", run, *GAPS) == 0  # the same command resumes the study
    assert _rows(run) == _rows(whole)  # per-datapoint values equal to the uninterrupted run's
    [study] = (run / "gap-study").iterdir()
    assert (study / "manifest.json").exists() and (study / "bdmc.0.00000.pt").exists()
    row = _rows(run)[0]
    assert "max per datapoint of IWAE_10" in row["estimators"]["log_px"]

    calls = []
    fit_local = study_module.fit_local
    monkeypatch.setattr(study_module, "fit_local",
                        lambda *a, **k: calls.append(1) or fit_local(*a, **k))
    assert cli("gaps", run, *GAPS) == 0  # finished: read back, nothing recomputed
    assert calls == [] and _rows(run) == _rows(whole)
    assert cli("gaps", run, *GAPS[:-1], "4") == 0  # other settings: a study of their own
    assert len(list((run / "gap-study").iterdir())) == 2 and len(calls) == 3  # 12 rows / 4


def test_bdmc_without_ais_is_a_usage_error(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "run")
    assert cli("gaps", run, "--num-data", "4", "--guides", "--bdmc", "2") == 2
    assert "add 'ais' to log_px" in capsys.readouterr().err
