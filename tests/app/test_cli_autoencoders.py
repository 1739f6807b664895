"""The command line's autoencoder family: denoising-ae, sparse-ae, wae and the sprites data.

Each name trains end to end with the options people type, records what it trained in
config.toml, reports the numbers its family is about (code sparsity, latent MMD and
prior-sample score, disentanglement) and refuses options that would be ignored, naming the flag.
"""

import json
import tomllib

import pytest

from ppvae.app.cli import main

TINY = ["--epochs", "1", "--hidden", "16", "--quiet"]


def _train(tmp_path, *argv):
    out = tmp_path / "run"
    rc = main(["train", *argv, *TINY, "--out", str(out)])
    assert rc == 0
    cfg = tomllib.loads((out / "config.toml").read_text())
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())["sections"]["train"]
    return cfg, report, numbers


def test_denoising_ae_trains_with_masking_noise_by_default(tmp_path):
    cfg, report, _ = _train(tmp_path, "--model", "denoising-ae")
    assert cfg["train"]["corruption"] == "masking" and cfg["guide"] == "delta"
    assert "Objective: denoising ELBO, masking 0.25." in report


def test_any_model_takes_a_corruption(tmp_path):
    cfg, report, _ = _train(tmp_path, "--model", "vae", "--corruption", "gaussian",
                            "--noise", "0.3", "--objective", "beta", "--beta", "2")
    assert cfg["train"]["corruption"] == "gaussian" and cfg["train"]["noise"] == 0.3
    assert "Objective: denoising beta-ELBO (beta=2.0), gaussian 0.3." in report


def test_sparse_ae_reports_its_code_sparsity(tmp_path):
    cfg, report, numbers = _train(tmp_path, "--model", "sparse-ae", "--top-k", "5", "--l1", "0")
    assert cfg["sizes"]["latent_dim"] == 100 and cfg["sizes"]["top_k"] == 5
    assert cfg["guide"] == "sparse"
    # top-k keeps exactly k units of every code: 5 active per datapoint
    assert numbers["data"]["code_sparsity"]["active_per_datapoint"] == 5
    assert "Code sparsity on the 300 test rows: z: 5.00/100 units active per datapoint" in report


def test_sparse_ae_with_the_rate_penalty(tmp_path):
    cfg, _, numbers = _train(tmp_path, "--model", "sparse-ae", "--code-activation", "sigmoid",
                             "--target-rate", "0.05", "--sparsity-weight", "2",
                             "--latent-dim", "20")
    assert cfg["train"]["target_rate"] == 0.05 and cfg["sizes"]["latent_dim"] == 20
    assert "code_sparsity" in numbers["data"]


def test_wae_reports_latent_mmd_and_the_prior_sample_score(tmp_path):
    cfg, report, numbers = _train(tmp_path, "--model", "wae", "--mmd-weight", "5")
    assert cfg["train"]["objective"] == "wae" and cfg["guide"] == "delta"
    values = numbers["data"]
    assert values["latent_mmd"] == pytest.approx(values["latent_mmd"])  # a number, not NaN
    assert values["prior_sample_nll"] > 0 and values["data_nll"] > 0
    assert "Objective: WAE-MMD (lambda=5.0)." in report and "`ppvae.latent_mmd`" in report


def test_sprites_data_reports_disentanglement(tmp_path):
    _, report, numbers = _train(tmp_path, "--data", "sprites", "--latent-dim", "5")
    dis = numbers["data"]["disentanglement"]
    assert set(dis["mig_per_factor"]) == {"shape", "scale", "rotation", "x", "y"}
    assert 0 <= dis["mig"] <= 1 and 0 <= dis["factor_vae_score"] <= 1
    assert "| rotation |" in report


@pytest.mark.parametrize("argv,message", [
    (["--model", "vae", "--noise", "0.2"],
     "--noise sets the level of a corruption, but none is set"),
    (["--model", "denoising-ae", "--noise", "1.2"],
     "--noise 1.2: the masking corruption's level is the probability"),
    (["--model", "vae", "--corruption", "blur"], "invalid choice: 'blur'"),
    (["--model", "vae", "--mmd-weight", "3"], "--mmd-weight is used only by objective 'wae'"),
    (["--model", "vae", "--l1", "0.1"], "--l1 is not used by model 'vae'"),
    (["--model", "sparse-ae", "--sparsity-weight", "2"], "no target rate is set"),
    (["--model", "sparse-ae", "--target-rate", "1.5"], "--target-rate must be a number <= 1"),
    (["--model", "sparse-ae", "--target-rate", "1"], "must lie in (0, 1)"),
    (["--model", "sparse-ae", "--top-k", "500"], "--top-k 500 keeps more code units than the code"),
])
def test_ignored_or_bad_options_are_refused_by_flag(tmp_path, capsys, argv, message):
    args = ["train", *argv, *TINY, "--out", str(tmp_path / "run")]
    if "invalid choice" in message:  # argparse's own check of the choices
        with pytest.raises(SystemExit):
            main(args)
    else:
        assert main(args) != 0
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "run").exists()
