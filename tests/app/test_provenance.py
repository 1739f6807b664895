"""Reports that say where each number came from (issue 16): every section records command, time,
checkpoint epoch and hash, seed, rows and versions; sections, figures and netCDF files computed
from an older checkpoint (or superseded by a later ``gaps`` run) are marked stale and moved to
``stale/``; diagnostic warnings reach stderr, report.md and report.json."""

import hashlib
import json
import shutil
from datetime import datetime

import pytest

from ppvae.app.cli import main
from ppvae.core.diagnostic_warnings import ConvergenceWarning

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "256", "--lr", "0.01", "--quiet"]
GAPS = ["--num-data", "8", "--guides", "--local-steps", "3", "--samples", "10", "--k", "10",
        "--quiet"]
MCMC = ["--mcmc", "2", "--mcmc-warmup", "20", "--mcmc-samples", "10"]
RESULTS = ("*.png", "*.nc", "gaps.json")  # what sections write into the run directory


def cli(*args):
    assert main(["--threads", "1", *map(str, args)]) == 0


def report(run):
    return json.loads((run / "report.json").read_text())


def sha12(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 1-epoch run with every section: train, evaluate, gaps with MCMC, samples."""
    run = tmp_path_factory.mktemp("prov") / "run"
    cli("train", "--out", run, "--epochs", "1", *TINY)
    cli("evaluate", run, "--num-data", "20", "--k", "10")
    cli("gaps", run, *GAPS, *MCMC)
    cli("sample", run, "--num", "4")
    return run


@pytest.fixture
def run(base, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    capsys.readouterr()
    return out


def current_results_are_current(run):
    """Every figure, netCDF and gaps.json in the run directory belongs to a section computed from
    the current checkpoint, and every stale section's files are under stale/."""
    doc, sha = report(run), sha12(run / "checkpoint.pt")
    owner = {f: k for k, s in doc["sections"].items() for f in s["files"]}
    for pattern in RESULTS:
        for f in run.glob(pattern):
            assert f.name in owner, f"{f.name} belongs to no current section"
            prov = doc["sections"][owner[f.name]]["provenance"]
            assert prov["checkpoint"]["sha256"] == sha, f"{f.name} is from another checkpoint"
    for s in doc.get("stale", {}).values():
        assert all(f.startswith("stale/") and (run / f).is_file() for f in s["files"])


def test_every_section_records_its_provenance(run):
    doc = report(run)
    assert set(doc["sections"]) == {"train", "evaluate", "gaps", "posterior", "samples"}
    assert set(doc["versions"]) >= {"ppvae", "pyro", "torch"}
    sha = sha12(run / "checkpoint.pt")
    md = (run / "report.md").read_text()
    for name, s in doc["sections"].items():
        p = s["provenance"]
        command = {"posterior": "gaps", "samples": "sample"}.get(name, name)
        assert p["command"].startswith("ppvae --threads 1 " + command), p["command"]
        assert p["time"].endswith("Z") and datetime.fromisoformat(p["time"])
        assert p["checkpoint"] == {"epoch": 1, "sha256": sha}
        assert p["seed"] == 0 and set(p["versions"]) >= {"ppvae", "pyro", "torch"}
        assert f"Computed by `{p['command']}`" in md
    assert md.count(f"from checkpoint epoch 1 (sha256 `{sha}`)") == 5
    rows = doc["sections"]["posterior"]["provenance"]["rows"]["mcmc"]
    gaps_rows = doc["sections"]["gaps"]["provenance"]["rows"]["gaps"]["indices"]
    assert set(rows["indices"]) <= set(gaps_rows)
    assert doc["sections"]["posterior"]["data"]["datapoints"] == rows["indices"]
    current_results_are_current(run)


def test_resume_marks_everything_from_the_older_checkpoint_stale(run):
    """The acceptance test of issue 16: after a resume that trains further, no section, figure
    or netCDF file computed from the older checkpoint is left unmarked."""
    old = sha12(run / "checkpoint.pt")
    cli("train", "--out", run, "--resume", "--epochs", "1", "--quiet")  # nothing to train
    assert sha12(run / "checkpoint.pt") == old and not report(run).get("stale")

    cli("train", "--out", run, "--resume", "--epochs", "2", "--quiet")
    doc, new = report(run), sha12(run / "checkpoint.pt")
    # train rewrites the samples section (prior samples and latent figures) for image data
    assert new != old and set(doc["sections"]) == {"train", "samples"}
    assert set(doc["stale"]) == {"evaluate", "gaps", "posterior"}
    for s in doc["stale"].values():
        assert s["provenance"]["checkpoint"] == {"epoch": 1, "sha256": old}
        assert "from epoch 1 to 2" in s["reason"]
    assert doc["sections"]["train"]["provenance"]["checkpoint"] == {"epoch": 2, "sha256": new}
    assert (run / "stale" / "posterior_mcmc.nc").is_file()
    current_results_are_current(run)
    md = (run / "report.md").read_text()
    stale_part = md.split("## Stale sections")[1]
    for title in ("Evaluation", "Inference gaps", "Posterior comparison with MCMC"):
        assert f"## {title}" not in md.split("## Stale sections")[0]
        assert f"**{title}** (computed from epoch 1, checkpoint `{old}`" in stale_part
    cmd = doc["stale"]["evaluate"]["provenance"]["command"]  # the base run's (copied) path
    assert cmd.endswith("--num-data 20 --k 10") and f"Rerun: `{cmd}`" in stale_part

    cli("evaluate", run, "--num-data", "20", "--k", "10")  # recomputed: no longer stale
    doc = report(run)
    assert "evaluate" in doc["sections"] and "evaluate" not in doc["stale"]
    assert not (run / "stale" / "reconstructions.png").exists()
    current_results_are_current(run)


def test_gaps_without_mcmc_supersedes_the_mcmc_comparison(run):
    cli("gaps", run, *GAPS)
    doc = report(run)
    assert "posterior" not in doc["sections"] and "without --mcmc" in doc["stale"]["posterior"][
        "reason"]
    assert not list(run.glob("posterior_*q*.nc")) and not (run / "posterior.png").exists()
    assert (run / "posterior_guide.nc").is_file()  # the training section's, still current
    current_results_are_current(run)
    cli("gaps", run, *GAPS, *MCMC)  # a new comparison replaces the stale one and its files
    doc = report(run)
    assert "posterior" in doc["sections"] and "posterior" not in doc["stale"]
    assert not (run / "stale" / "posterior_mcmc.nc").exists()
    current_results_are_current(run)


def test_diagnostic_warnings_reach_stderr_and_the_report(run, capsys, monkeypatch):
    import ppvae.analysis.plots as plots

    grid = plots.sample_grid

    def warning_grid(*args, **kwargs):
        import warnings

        warnings.warn("the prior draws are suspicious (test)", ConvergenceWarning, stacklevel=2)
        return grid(*args, **kwargs)

    monkeypatch.setattr(plots, "sample_grid", warning_grid)
    assert main(["--threads", "1", "sample", str(run), "--num", "4"]) == 0
    err = capsys.readouterr().err
    message = "ConvergenceWarning: the prior draws are suspicious (test)"
    assert err.startswith("warnings:\n") and f"  {message}\n" in err
    assert "How to read the numbers" in err
    doc = report(run)
    assert doc["sections"]["samples"]["warnings"] == [message]
    assert {"section": "samples", "message": message} in doc["warnings"]
    md = (run / "report.md").read_text()
    warn_part = md.split("## Warnings")[1].split("\n## ")[0]
    assert f"- Samples and latent space: {message}" in warn_part
    assert "How to read the numbers" in warn_part
    assert md.index("## Warnings") < md.index("## Training")  # at the top, not buried


def test_local_vi_that_cannot_converge_speaks_up(run):
    """gaps with 3 local steps: fit_local's ConvergenceWarning is in the gaps section."""
    got = report(run)["sections"]["gaps"]["warnings"]
    assert any(w.startswith("ConvergenceWarning: ") for w in got), got
