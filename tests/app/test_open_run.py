"""ppvae.app.trained.open_run, the notebook's way back into a trained run (issue 18): the model,
guide and every extra guide compute exactly what the trained modules computed, the splits and
the labels a conditional model needs are there, and two runs open in one process keep their
own parameters (Pyro's global param store notwithstanding)."""

import math

import pyro
import pytest
import torch

import ppvae
from ppvae.app.cli import main
from ppvae.app.gaps import train_extra_guide
from ppvae.app.runs import RunDir, RunError
from ppvae.app.train import train_run
from ppvae.app.trained import build, locked_run, open_run

SIZES = {"latent_dim": 2, "hidden": [32]}


def _config(latent_dim=2, model="vae", guide="diag"):
    return {"model": model, "guide": guide, "data": "digits", "binarize": "static", "seed": 0,
            "device": "cpu", "sizes": {**SIZES, "latent_dim": latent_dim},
            "train": {"objective": "elbo", "epochs": 1, "batch_size": 128, "lr": 0.01}}


def _elbo(model, guide, x, **kw):
    pyro.set_rng_seed(7)
    return ppvae.elbo(model, guide, x, 20, **kw).per_datapoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch VAE trained in this process, with its trained modules' ELBO on test rows,
    and a flow guide trained on the frozen model as ``ppvae gaps`` trains it."""
    torch.set_num_threads(1)
    pyro.clear_param_store()
    cfg = _config()
    pyro.set_rng_seed(0)
    data, model, guide = built = build(cfg)
    path = tmp_path_factory.mktemp("open") / "run"
    run = RunDir.create(path)
    train_run(cfg, run, quiet=True, built=built)
    x = data.test[:50]
    before = {"diag": _elbo(model, guide, x)}
    with locked_run(path) as tr:
        flow = train_extra_guide(tr, "flow", epochs=1)
        before["flow"] = _elbo(tr.model, flow, x)
    pyro.clear_param_store()
    return path, before


def test_open_run_computes_what_the_trained_modules_computed(trained):
    path, before = trained
    run = open_run(path)
    assert run.path == path and run.config["model"] == "vae" and run.epoch == 1
    assert list(run.guides) == ["diag", "flow"] and run.guides["diag"] is run.guide
    x = run.data.test[:50]
    for name, guide in run.guides.items():
        assert torch.equal(_elbo(run.model, guide, x), before[name]), name
    # straight into the API, on every split
    assert run.data.test.shape == (300, 64) and run.data.train.shape[0] == 1297
    b = ppvae.elbo(run.model, run.guide, run.data.test)
    assert b.per_datapoint.shape == (300,) and math.isfinite(b.mean)
    assert run.model_kwargs("test") == {}
    text = repr(run)
    assert "\n" not in text and "guides diag, flow" in text and "1 epochs" in text


def test_two_runs_open_at_once_keep_their_own_parameters(trained, tmp_path):
    path, before = trained
    other = tmp_path / "wide"
    assert main(["--threads", "1", "--quiet", "train", "--out", str(other), "--epochs", "1",
                 "--latent-dim", "3", "--hidden", "32", "--batch-size", "128"]) == 0
    pyro.clear_param_store()
    a = open_run(path, extra_guides=False)
    b = open_run(other)  # the same parameter names, other shapes and values
    x = a.data.test[:50]
    assert b.guides.keys() == {"diag"} and a.guides.keys() == {"diag"}
    wide = _elbo(b.model, b.guide, x)
    assert torch.equal(_elbo(a.model, a.guide, x), before["diag"])  # a, after b was opened
    assert torch.equal(_elbo(b.model, b.guide, x), wide)  # and b again, after a ran
    assert not torch.equal(wide, before["diag"])
    # training a trains a's own tensors (Pyro's optimizer takes them from the param store by
    # name, where b's were last), and leaves b as it was
    ppvae.fit(a.model, a.guide, a.data.train[:256], epochs=1, batch_size=64, lr=0.05,
              progress=False, quiet=True)
    assert not torch.equal(_elbo(a.model, a.guide, x), before["diag"])
    assert torch.equal(_elbo(b.model, b.guide, x), wide)


def test_conditional_run_gives_its_labels(tmp_path):
    out = tmp_path / "cvae"
    assert main(["--threads", "1", "--quiet", "train", "--model", "cvae", "--epochs", "1",
                 "--hidden", "32", "--latent-dim", "2", "--out", str(out)]) == 0
    run = open_run(out)
    kw = run.model_kwargs("valid", slice(0, 10))
    assert torch.equal(kw["y"], run.data.valid_labels[:10])
    b = ppvae.elbo(run.model, run.guide, run.data.valid[:10], model_kwargs=kw)
    assert math.isfinite(b.mean)
    with pytest.raises(ValueError, match="split must be"):
        run.model_kwargs("validation")


def test_open_run_refuses_what_is_not_a_trained_run(tmp_path, trained):
    with pytest.raises(RunError):
        open_run(tmp_path / "missing")
    path, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.toml", "checkpoint.pt", "report.json"):
        if (path / f).is_file():
            (broken / f).write_bytes((path / f).read_bytes())
    (broken / "guide-flow.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match=r"guide-flow.pt: guide 'flow' not loaded"):
        run = open_run(broken)
    assert list(run.guides) == ["diag"]
    (broken / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match=r"checkpoint\.pt is missing"):
        open_run(broken)
