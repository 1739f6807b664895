"""Bad configuration values, in a ``--config`` TOML file and as flags: each refused in one line
naming the key and where it came from, before the run directory is created."""

import numpy as np
import pytest
from bad_inputs.harness import refused, run_cli

# (TOML text, what the one line must contain); each case trains into a new --out
CONFIG_CASES = [
    # top level: types and names
    ('model = ["vae"]', "model must be a string, got the list ['vae']"),
    ('model = "transformer"', "unknown model 'transformer'; choose one of: vae"),
    ("model = 1", "model must be a string, got 1"),
    ("guide = 3", "guide must be a string"),
    ('guide = "mystery"', "unknown guide 'mystery'"),
    ('guide = "ladder"', "guide 'ladder' does not fit model 'vae'"),
    ('guide = ""', "unknown guide ''"),
    ("data = 5", "data must be a string"),
    ('data = "imagenet"', "unknown data set 'imagenet'"),
    ('data = "missing.npy"', "data file not found: missing.npy"),
    ('data = "x.npz"', "unsupported data file type '.npz'"),
    ('binarize = "otsu"', "unknown binarize 'otsu'"),
    ("binarize = true", "binarize must be a string"),
    ("seed = -1", "seed must be an integer >= 0, got -1"),
    ("seed = 1.5", "seed must be an integer, got 1.5"),
    ('seed = "0"', "seed must be an integer, got the string '0'"),
    ("seed = 4294967296", "seed must be an integer <= 4294967295"),
    ('device = "tpu"', "unknown device 'tpu'"),
    ("device = 0", "device must be a string"),
    # unknown keys and tables
    ("epochs = 3", "unknown key 'epochs'"),
    ("sizes = 4", "'sizes' must be a table"),
    ("train = [1]", "'train' must be a table"),
    ("[train]\nepochz = 3", "unknown key 'epochz' in [train] (did you mean 'epochs'?)"),
    ("[sizes]\nhiden = [8]", "unknown key 'hiden' in [sizes] (did you mean 'hidden'?)"),
    ("[extra]\na = 1", "unknown key 'extra'"),
    ("[train]\nlearning_rate = 0.1", "unknown key 'learning_rate' in [train]"),
    # [sizes]
    ("[sizes]\nhidden = 5", "[sizes] hidden must be a non-empty list of integers"),
    ("[sizes]\nhidden = []", "[sizes] hidden must be a non-empty list of integers"),
    ("[sizes]\nhidden = [0]", "[sizes] hidden must be a list of integers >= 1"),
    ("[sizes]\nhidden = [16, -1]", "got -1"),
    ('[sizes]\nhidden = ["16"]', "got the string '16'"),
    ("[sizes]\nhidden = [1.5]", "got 1.5"),
    ("[sizes]\nlatent_dim = [2]", "[sizes] latent_dim must be an integer, got the list [2]"),
    ("[sizes]\nlatent_dim = -2", "[sizes] latent_dim must be an integer >= 1, got -2"),
    ("[sizes]\nlatent_dim = 0", "[sizes] latent_dim must be an integer >= 1, got 0"),
    ("[sizes]\nlatent_dim = 2.0", "[sizes] latent_dim must be an integer, got 2.0"),
    ("[sizes]\nlatent_dim = true", "must be an integer, got true (a boolean)"),
    ("[sizes]\nnum_flows = 2", "[sizes] num_flows is not used by model 'vae' with guide 'diag'"),
    ("[sizes]\nchannels = 8", "[sizes] channels is not used by model 'vae'"),
    ("[sizes]\ntop_latent_dim = 2", "[sizes] top_latent_dim is not used by model 'vae'"),
    ('guide = "flow"\n[sizes]\nnum_flows = 0', "[sizes] num_flows must be an integer >= 1"),
    # [train]
    ('[train]\nepochs = "abc"', "[train] epochs must be an integer, got the string 'abc'"),
    ('[train]\nepochs = "2"', "[train] epochs must be an integer, got the string '2'"),
    ("[train]\nepochs = -1", "[train] epochs must be an integer >= 1, got -1"),
    ("[train]\nepochs = 0", "[train] epochs must be an integer >= 1, got 0"),
    ("[train]\nepochs = 1.7", "[train] epochs must be an integer, got 1.7"),
    ("[train]\nepochs = true", "[train] epochs must be an integer, got true (a boolean)"),
    ("[train]\nbatch_size = 0", "[train] batch_size must be an integer >= 1, got 0"),
    ("[train]\nbatch_size = -8", "[train] batch_size must be an integer >= 1"),
    ("[train]\nlr = -0.5", "[train] lr must be a number > 0, got -0.5"),
    ("[train]\nlr = 0", "[train] lr must be a number > 0, got 0"),
    ("[train]\nlr = inf", "[train] lr must be a finite number, got inf"),
    ("[train]\nlr = nan", "[train] lr must be a finite number, got nan"),
    ('[train]\nlr = "fast"', "[train] lr must be a number, got the string 'fast'"),
    ("[train]\nlr = true", "[train] lr must be a number, got true (a boolean)"),
    ('[train]\nobjective = "vi"', "unknown objective 'vi'; choose one of: elbo"),
    ("[train]\nobjective = 1", "[train] objective must be a string"),
    ("[train]\nparticles = 0", "[train] particles must be an integer >= 1"),
    ("[train]\niwae_k = 10", "[train] iwae_k is used only by objective 'iwae'"),
    ("[train]\nbeta = 2.0", "[train] beta is used only by objective 'beta'"),
    ('[train]\nobjective = "beta"\nbeta = -1', "[train] beta must be a number > 0"),
    ('[train]\nobjective = "beta"\nbeta = 0', "[train] beta must be a number > 0, got 0"),
    ("[train]\nwarmup_steps = 100", "[train] warmup_steps is used only by objective 'kl-warmup'"),
    ('[train]\nobjective = "iwae"\nparticles = 2', "[train] particles is used only by"),
    ("[train]\npatience = 0", "[train] patience must be an integer >= 1"),
    ("[train]\npatience = 1.5", "[train] patience must be an integer, got 1.5"),
    ('[train]\njit = "no"', "[train] jit must be true or false, got the string 'no'"),
    ("[train]\njit = 1", "[train] jit must be true or false, got 1"),
    ('[train]\njit = "true"', "[train] jit must be true or false, got the string 'true'"),
    # data and likelihood
    ('image_mode = "CMYK"', "c.toml: unknown image mode 'CMYK'; choose one of: L, RGB"),
    ("image_size = [28]", "c.toml: image_size must be a list of 2 integers, got 1: [28]"),
    ("image_size = [28, 0]", "c.toml: image_size must be a list of integers >= 1"),
    ("image_shape = [8, 8]", "c.toml: image_shape applies to a .npy / .csv / .txt file of "
                             "rows; data 'digits' is a named data set"),
    ('likelihood = "poisson"', "c.toml: unknown likelihood 'poisson'; choose one of: "
                               "bernoulli, continuous-bernoulli, gaussian"),
    ('model = "cvae"\nlikelihood = "gaussian"', "likelihood gaussian: model 'cvae' has only "
                                                "bernoulli; use model 'vae'"),
    ('model = "no_such_module_xyz:make"', "cannot import module 'no_such_module_xyz'"),
    ('model = "not a name"', "unknown model 'not a name'; choose one of: vae"),
    # not TOML
    ("model = ", "not a valid TOML file"),
    ("[train\nepochs = 1", "not a valid TOML file"),
    ('model = "vae"\nmodel = "cvae"', "not a valid TOML file"),
]


@pytest.mark.parametrize("text,expect", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_value_is_named_and_nothing_is_written(tmp_path, capsys, text, expect):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    out = tmp_path / "out"
    line = refused(["train", "--config", cfg, "--out", out, "--quiet"], capsys, expect,
                   watch=[out, cfg])
    if "=" in text and not text.startswith(("model", "guide", "data", "binarize", "device")):
        assert "c.toml" in line  # a key's error names the file it came from
    assert not out.exists()


# (flags, what the one line must contain)
FLAG_CASES = [
    (["--epochs", "abc"], "argument --epochs: must be an integer, got 'abc'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["--epochs", "-1"], "argument --epochs: must be an integer >= 1, got -1"),
    (["--epochs", "2.5"], "argument --epochs: must be an integer, got '2.5'"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["--lr", "-0.5"], "argument --lr: must be a finite number > 0, got -0.5"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["--lr", "fast"], "argument --lr: must be a number, got 'fast'"),
    (["--hidden", "0"], "argument --hidden: must be an integer >= 1, got 0"),
    (["--hidden", "16", "-1"], "argument --hidden: must be an integer >= 1, got -1"),
    (["--latent-dim", "0"], "argument --latent-dim: must be an integer >= 1"),
    (["--particles", "0"], "argument --particles: must be an integer >= 1"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--objective", "beta", "--beta", "-1"], "--beta must be a number > 0, got -1.0"),
    (["--objective", "beta", "--beta", "nan"], "--beta must be a finite number, got nan"),
    (["--objective", "elbow"], "invalid choice: 'elbow'"),
    (["--objective", "elbow"], "(did you mean 'elbo'?)"),
    (["--binarize", "otsu"], "argument --binarize: invalid choice: 'otsu'"),
    (["--model", "transformer"], "unknown model 'transformer'"),
    (["--guide", "ladder"], "guide 'ladder' does not fit model 'vae'"),
    (["--iwae-k", "5"], "--iwae-k is used only by objective 'iwae'"),
    (["--num-flows", "3"], "--num-flows is not used by model 'vae' with guide 'diag'"),
    (["--epochz", "3"], "unrecognized arguments: --epochz 3 (did you mean --epochs?)"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--data", "binarized-mnist", "--data-path", "nowhere.npz"], "data file missing"),
    (["--data", "imagenet"], "unknown data set 'imagenet'"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    (["--threads", "-1"], "argument --threads: must be an integer >= 1, got -1"),
    (["--model", "cvae", "--data", "{tenrows}"], "model 'cvae' has a Bernoulli likelihood"),
    (["--model", "cvae", "--data", "{binrows}"], "model 'cvae' needs labelled data"),
    (["--guide", "conditional"], "guide 'conditional' needs model 'cvae'"),
    (["--model", "conv-vae", "--data", "{binrows}"],
     "'conv-vae' needs square one-channel (grey) images"),
    (["--image-mode", "CMYK"], "argument --image-mode: invalid choice: 'CMYK'"),
    (["--image-size", "28"], "argument --image-size: expected 2 arguments"),
    (["--image-size", "0", "28"], "argument --image-size: must be an integer >= 1, got 0"),
    (["--image-size", "28", "28"], "--image-size applies to a folder of images; data "
                                   "'digits' is a named data set"),
    (["--likelihood", "poisson"], "argument --likelihood: invalid choice: 'poisson'"),
    (["--model", "cvae", "--likelihood", "gaussian"], "model 'cvae' has only bernoulli"),
    (["--image-shape", "8", "8"], "--image-shape applies to a .npy / .csv / .txt file"),
    (["--data", "{tenrows}", "--image-shape", "2", "2", "2", "2"],
     "--image-shape must be a list of 2 or 3 integers, got 4"),
    (["--data", "{tenrows}", "--image-size", "2", "2"], "--image-size applies to a folder"),
    (["--model", "hierarchical", "--guide", "diag", "--top-latent-dim", "2"], "'z'"),
    (["--data", "{tenrows}", "--binarize", "static"], "binarize needs values in [0, 1]"),
    (["--resume"], "--resume needs --out RUN_DIR"),
]


@pytest.mark.parametrize("flags,expect", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_a_bad_flag_is_named_and_nothing_is_written(tmp_path, capsys, flags, expect):
    rows = tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(10, 5)) * 3)
    binary = tmp_path / "binary.npy"
    np.save(binary, np.random.default_rng(0).random((10, 5)) < 0.5)
    flags = [f.replace("{tenrows}", str(rows)).replace("{binrows}", str(binary)) for f in flags]
    out = tmp_path / "out"
    argv = ["train", *flags, "--quiet"] + ([] if "--resume" in flags else ["--out", out])
    refused(argv, capsys, expect, watch=[out, tmp_path])
    assert not out.exists()


def test_cuda_asked_for_without_cuda_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    refused(["train", "--device", "cuda", "--out", tmp_path / "o"], capsys,
            "device 'cuda' was asked for but CUDA is not available here", watch=[tmp_path])


def test_config_file_problems(tmp_path, capsys):
    refused(["train", "--config", tmp_path / "none.toml", "--out", tmp_path / "o"], capsys,
            "config file not found", watch=[tmp_path])
    refused(["train", "--config", tmp_path, "--out", tmp_path / "o"], capsys,
            "is not a file", watch=[tmp_path])
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    refused(["train", "--config", binary, "--out", tmp_path / "o"], capsys,
            "not a valid TOML file", watch=[tmp_path])


def test_a_flag_overrides_a_bad_file_value_only_when_given(tmp_path, capsys):
    """Each layer is checked on its own: a bad value in the file is named even when a flag
    would override it, so no file with broken values is silently accepted."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nepochs = "2"\n')
    refused(["train", "--config", cfg, "--epochs", "2", "--out", tmp_path / "o"], capsys,
            "c.toml: [train] epochs must be an integer", watch=[tmp_path])


def test_a_good_config_still_trains(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "vae"\n[sizes]\nhidden = [8]\nlatent_dim = 2\n'
                   '[train]\nepochs = 1\nlr = 0.01\nobjective = "iwae"\niwae_k = 3\n')
    code, out, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "o", "--quiet"],
                             capsys)
    assert code == 0, err
    assert "trained 1 epochs" in out
