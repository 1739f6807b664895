"""The figures the command line writes into a run directory (issue 18): train's learning curves
and latent-space figures, gaps' histograms, scatter, local-VI curves and MCMC figures, sample's
--means and --image-shape; every figure is a readable PNG listed in report.md."""

import argparse
import inspect
import json
import shutil

import matplotlib.image
import pytest

import ppvae
from ppvae.app import gaps as gaps_command
from ppvae.app.cli import main

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "256", "--lr", "0.01"]
GAPS = ["--num-data", "8", "--guides", "--local-steps", "20", "--samples", "10", "--k", "10",
        "--mcmc", "2", "--mcmc-warmup", "20", "--mcmc-samples", "20"]


def cli(*args):
    assert main(["--threads", "1", "--quiet", *map(str, args)]) == 0


def readable(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100 and img[..., :3].std() > 0.01, path


def listed(run, names, section):
    md = (run / "report.md").read_text()
    doc = json.loads((run / "report.json").read_text())
    for name in names:
        readable(run / name)
        assert f"`{name}`" in md, f"{name} is not named in report.md"
        assert name in doc["sections"][section]["files"], f"{name} not in section {section}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures") / "run"
    cli("train", "--out", out, "--epochs", "2", *TINY)
    return out


@pytest.fixture
def run(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def test_train_writes_learning_curves_and_latent_figures(trained):
    listed(trained, ["training.png"], "train")
    listed(trained, ["samples.png", "manifold.png", "traversals.png", "interpolation.png"],
           "samples")
    md = (trained / "report.md").read_text()
    assert "## Samples and latent space" in md and "z ~ p(z), then x ~ p(x | z)" in md
    assert "Not drawn" not in md  # a 2-D Gaussian latent: every figure applies


def test_gaps_writes_its_figures_and_the_mcmc_figures(run):
    cli("gaps", run, *GAPS)
    listed(run, ["gaps.png", "gap_histogram.png", "elbo_scatter.png", "local_vi.png"], "gaps")
    listed(run, ["posterior_pairs.png", "mcmc_trace.png", "mcmc_rank.png"], "posterior")
    assert not (run / "posterior.png").exists()
    doc = json.loads((run / "report.json").read_text())
    timings = doc["sections"]["gaps"]["markdown"]
    assert "fit_local diag q* diag" in timings  # the q* fits that local_vi.png draws, timed


def test_sample_means_and_image_shape(run, capsys):
    cli("sample", run, "--num", "4", "--means", "--image-shape", "4", "16")
    doc = json.loads((run / "report.json").read_text())["sections"]["samples"]
    assert doc["data"]["means"] is True and doc["data"]["image_shape"] == [4, 16]
    assert "decoded means E[x | z]" in doc["markdown"]
    listed(run, ["samples.png"], "samples")
    capsys.readouterr()
    assert main(["sample", str(run), "--image-shape", "5", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--image-shape 5 5 does not fold" in err and "64" in err


def test_gaps_default_local_steps_are_the_apis():
    p = argparse.ArgumentParser()
    gaps_command.add_arguments(p)
    api = inspect.signature(ppvae.gaps).parameters["local_steps"].default
    assert p.parse_args(["run"]).local_steps == api
    assert inspect.signature(gaps_command.gaps_run).parameters["local_steps"].default == api
