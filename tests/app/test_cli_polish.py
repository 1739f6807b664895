"""Command-line polish: --version without importing torch, global --quiet before or after the
command, defaults shown in every --help and equal to the API's, messages that name real flags,
ppca's run directory, and users' own models and guides as module:function."""

import argparse
import inspect
import json
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
import pytest

import ppvae
from ppvae.app import cli
from ppvae.app.cli import main
from ppvae.core import progress
from ppvae.data import read_table

TINY = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--quiet"]


def _subparsers():
    p = cli._parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return p, sub.choices


def test_version_prints_versions_without_importing_torch():
    code = ("import sys\nfrom ppvae.app.cli import main\nrc = main(['--version'])\n"
            "print(rc, 'torch' in sys.modules, 'pyro' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == f"ppvae {ppvae.__version__}"
    assert out[1].startswith("torch ") and ", pyro " in out[1] and ", python " in out[1]
    assert out[2] == "0 False False"
    r = subprocess.run([sys.executable, "-m", "ppvae", "--debug", "--version"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ppvae ")


@pytest.mark.parametrize("argv", [["--quiet", "info"], ["info", "--quiet"]])
def test_quiet_before_or_after_the_command_turns_progress_bars_off(monkeypatch, argv):
    from ppvae.app import info

    seen = {}

    def fake(args):
        seen["quiet"], seen["bars"] = args.quiet, progress.enabled(None)
        return 0

    monkeypatch.setattr(info, "main", fake)
    monkeypatch.setenv("PPVAE_PROGRESS", "1")  # bars on, unless --quiet says otherwise
    assert main(argv) == 0
    assert seen == {"quiet": True, "bars": False}
    assert progress.enabled(None)  # the default is restored after the command
    assert main(["info"]) == 0 and seen == {"quiet": False, "bars": True}


def test_every_command_parses_quiet_in_both_places():
    p, _ = _subparsers()
    for name in cli.COMMANDS:
        pos = ["run"] if name in ("evaluate", "gaps", "sample") else []
        for argv in (["--quiet", name, *pos], [name, *pos, "--quiet"]):
            args = p.parse_args(argv)
            assert getattr(args, cli._QUIET, False) or getattr(args, "quiet", False), argv


def test_help_shows_every_default():
    _, commands = _subparsers()
    for name, sp in commands.items():
        for action in sp._actions:
            if not action.option_strings or action.dest in ("help", "debug", "threads"):
                continue
            shown = action.default not in (None, False, argparse.SUPPRESS) or \
                action.dest in cli_train_shown(name)
            if shown:
                assert "default" in (action.help or "").lower(), (name, action.option_strings)
    text = commands["train"].format_help()
    assert "--lr LR               default: 0.001" in text
    assert "--epochs EPOCHS       default: 10" in text


def cli_train_shown(name):
    from ppvae.app.inputs import train_defaults

    return train_defaults() if name == "train" else {}


def _api_defaults(fn):
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()
            if v.default is not inspect.Parameter.empty}


def test_defaults_equal_the_api():
    from ppvae.app import evaluate, ppca, sample
    from ppvae.app.inputs import _DEFAULTS, train_defaults
    from ppvae.app.zoo import OBJECTIVE_DEFAULTS, ModelSpec

    fit = _api_defaults(ppvae.fit)
    assert {k: _DEFAULTS["train"][k] for k in ("epochs", "batch_size", "lr")} == {
        k: fit[k] for k in ("epochs", "batch_size", "lr")}
    assert train_defaults()["lr"] == 1e-3 == fit["lr"]
    assert OBJECTIVE_DEFAULTS["particles"] == ppvae.ELBO().num_particles
    assert OBJECTIVE_DEFAULTS["iwae_k"] == ppvae.IWAE().k
    assert _DEFAULTS["sizes"] == {"latent_dim": ModelSpec().latent_dim,
                                  "hidden": list(ModelSpec().hidden)}
    _, commands = _subparsers()
    for name, fn in (("ppca", ppca.run_ppca_study), ("evaluate", evaluate.evaluate_run),
                     ("sample", sample.sample_run)):
        api = _api_defaults(fn)
        flags = {a.dest: a.default for a in commands[name]._actions if a.dest in api}
        assert flags and all(api[k] == v for k, v in flags.items() if v is not None), name


def test_binarized_mnist_offline_message_names_the_flag(tmp_path, monkeypatch, capsys):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path))
    assert main(["train", "--data", "binarized-mnist", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "pass --data-path an .npz" in err and "path=" not in err
    with pytest.raises(RuntimeError, match=r"pass path= an \.npz"):  # the API keeps its name
        from ppvae.data.binarized_mnist import load_binarized_mnist

        load_binarized_mnist(root=tmp_path)


def test_binarize_none_keeps_grey_levels_and_names_its_likelihood(tmp_path, capsys):
    from ppvae.app.inputs import train_config

    p, _ = _subparsers()
    cfg, _ = train_config(p.parse_args(["train", "--binarize", "none"]))
    assert cfg["binarize"] == "none"
    out = tmp_path / "grey"
    assert main(["train", "--binarize", "none", "--out", str(out), *TINY]) == 0
    assert tomllib.loads((out / "config.toml").read_text())["binarize"] == "none"
    assert main(["train", "--model", "cvae", "--binarize", "none", "--out",
                 str(tmp_path / "c"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "model 'cvae' has a Bernoulli likelihood and needs 0/1 data" in err
    assert "--binarize static" in err and "--likelihood gaussian" in err


def test_ppca_writes_its_run_directory(tmp_path, capsys):
    out = tmp_path / "nested" / "ppca"
    argv = ["ppca", "--num-data", "60", "--data-dim", "5", "--latent-dim", "2", "--steps",
            "60", "--num-samples", "100", "--iwae-k", "10", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"report.md", "report.json", "ppca.csv", "ppca_datapoints.csv",
                     "ppca.json", "ppca.png"}
    doc = json.loads((out / "report.json").read_text())
    sec = doc["sections"]["ppca"]
    assert sec["files"] == ["ppca.png", "ppca.csv", "ppca_datapoints.csv", "ppca.json"]
    assert sec["provenance"]["command"].startswith("ppvae ppca --num-data 60")
    rows = sec["data"]["rows"]
    assert rows[0]["guide"] == "exact posterior" and abs(rows[0]["gap_exact"]) < 1e-8
    for r in rows[1:]:  # ELBO_q = log p(x) - KL exactly: estimate and truth within 5 s.e.
        assert abs(r["gap_estimated"] - r["gap_exact"]) < 5 * r["elbo_se"] + 1e-9, r
    per = read_table(out / "ppca_datapoints.csv")
    assert per.values.shape == (60, 14) and per.columns[:3] == ("datapoint", "log_px",
                                                               "elbo_exact_posterior")
    gap = per.values[:, 1] - per.values[:, per.columns.index("elbo_linear_diagonal_svi")]
    exact = per.values[:, per.columns.index("gap_exact_linear_diagonal_svi")]
    se = per.values[:, per.columns.index("elbo_se_linear_diagonal_svi")]
    assert (np.abs(gap - exact) < 5 * se + 1e-6).mean() > 0.95  # per datapoint, within MC error
    assert (out / "ppca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## PPCA study" in (out / "report.md").read_text()
    # a training run is not overwritten, and nothing is computed for it
    run = tmp_path / "trained"
    run.mkdir()
    (run / "config.toml").write_text('model = "vae"\n')
    assert main([*argv[:-1], str(run)]) == 2
    assert "holds a training run (config.toml)" in capsys.readouterr().err
    assert {p.name for p in run.iterdir()} == {"config.toml"}


def test_ppca_that_fails_to_write_leaves_no_directory(tmp_path, monkeypatch, capsys):
    import errno

    from ppvae.app import files

    def full(path, data):
        raise files.WriteError(errno.ENOSPC, f"cannot write {path}: no space left on device")

    monkeypatch.setattr(files, "write_bytes", full)
    out = tmp_path / "new" / "ppca"
    assert main(["ppca", "--num-data", "30", "--data-dim", "4", "--latent-dim", "1",
                 "--steps", "5", "--num-samples", "20", "--iwae-k", "5", "--out",
                 str(out)]) == 2
    assert "no space left on device" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


USER_MODELS = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.nn import PyroModule


    class Linear(PyroModule):
        def __init__(self, data_dim, latent_dim=2):
            super().__init__()
            self.latent_dim = latent_dim
            self.decoder = PyroModule[torch.nn.Linear](latent_dim, data_dim)

        def forward(self, x, **kwargs):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0)
                                .to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


    class Encoder(PyroModule):
        def __init__(self, data_dim, latent_dim):
            super().__init__()
            self.net = PyroModule[torch.nn.Linear](data_dim, 2 * latent_dim)

        def forward(self, x, **kwargs):
            loc, log_scale = self.net(x).chunk(2, -1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


    def make_model(shape):
        return Linear(shape.data_dim)


    def make_guide(model, shape):
        return Encoder(shape.data_dim, model.latent_dim)


    def broken(shape):
        raise RuntimeError("no such layer")
''')


def test_users_own_model_and_guide(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "my_vae_models.py").write_text(USER_MODELS)
    monkeypatch.chdir(src)  # importable from the current folder, as with `python -m`
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(src))])
    out = tmp_path / "own"
    assert main(["train", "--model", "my_vae_models:make_model", "--out", str(out),
                 *TINY]) == 0
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["model"] == "my_vae_models:make_model" and cfg["guide"] == "diag"
    assert "likelihood" not in cfg  # a user model states its own
    assert main(["evaluate", str(out), "--num-data", "10", "--k", "10"]) == 0  # reopened
    toml = tmp_path / "own.toml"
    toml.write_text(f'model = "{src / "my_vae_models.py"}:make_model"\n'
                    f'guide = "{src / "my_vae_models.py"}:make_guide"\n'
                    '[train]\nepochs = 1\n')
    out2 = tmp_path / "own2"
    assert main(["train", "--config", str(toml), "--out", str(out2), "--quiet"]) == 0
    assert main(["sample", str(out2), "--num", "4"]) == 0
    capsys.readouterr()
    for argv, message in [
        (["--model", "no_such_module:make"], "cannot import module 'no_such_module'"),
        (["--model", "my_vae_models:nothing"], "'my_vae_models' has no attribute 'nothing'"),
        (["--model", "my_vae_models:broken"], "failed to build for data of shape"),
        (["--model", "my_vae_models:make_model", "--likelihood", "gaussian"],
         "is your own and states its likelihood"),
        (["--model", "my_vae_models:make_model", "--latent-dim", "3"],
         "running the model on x of shape (128, 64) failed"),
        (["--model", "transformer"], "or module:function for your own"),
    ]:
        assert main(["train", "--out", str(tmp_path / "refused"), *argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "refused").exists()
