"""Bad data files (train and ppca) and bad flags of the other commands: one line, exit 2,
nothing written."""

import numpy as np
import pytest
from bad_inputs.harness import refused


def _write(path, kind):
    """A bad data file of ``kind`` at ``path`` (the suffix decides the format)."""
    rng = np.random.default_rng(0)
    makers = {
        "strings": lambda: np.save(path, np.array([["a", "b"]] * 20)),
        "complex": lambda: np.save(path, rng.normal(size=(20, 3)) * (1 + 2j)),
        "no columns": lambda: np.save(path, np.zeros((50, 0))),
        "one-d": lambda: np.save(path, rng.normal(size=20)),
        "three-d": lambda: np.save(path, rng.normal(size=(4, 4, 4))),
        "two rows": lambda: np.save(path, rng.random((2, 4))),
        "one row": lambda: np.save(path, rng.random((1, 4))),
        "nan": lambda: np.save(path, np.where(rng.random((20, 3)) < 0.1, np.nan, 0.5)),
        "inf": lambda: np.save(path, np.full((20, 3), np.inf)),
        "object": lambda: np.save(path, np.array([{"a": 1}] * 20, dtype=object)),
        "truncated": lambda: path.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'"),
        "csv word in a row": lambda: path.write_text("f0,f1\n" + "0.1,0.2\n" * 5 + "0.1,x\n"
                                                     + "0.1,0.2\n" * 10),
        "csv header only": lambda: path.write_text("f0,f1\n"),
        "csv ragged": lambda: path.write_text("0.1,0.2\n" * 10 + "0.1\n"),
        "csv empty": lambda: path.write_text(""),
        "csv words": lambda: path.write_text("a,b\nc,d\n" * 10),
        "txt nan": lambda: path.write_text("1 2\nnan 3\n" * 5),
        "directory": lambda: path.mkdir(),
    }
    makers[kind]()


DATA_CASES = [  # (kind, suffix, what the line must contain)
    ("strings", ".npy", "the data are not numbers (dtype <U1)"),
    ("complex", ".npy", "the data are complex numbers"),
    ("no columns", ".npy", "got shape (50, 0)"),
    ("one-d", ".npy", "expected a 2-D array [N, D]"),
    ("three-d", ".npy", "got shape (4, 4, 4)"),
    ("two rows", ".npy", "N >= 3 rows"),
    ("nan", ".npy", "the data contain non-finite values"),
    ("inf", ".npy", "the data contain non-finite values"),
    ("object", ".npy", "could not read a numeric matrix"),
    ("truncated", ".npy", "could not read a numeric matrix"),
    ("csv word in a row", ".csv", "line 7, column 2 ('f1'): 'x' is not a number"),
    ("csv header only", ".csv", "a header row (f0, f1) and no rows of numbers below it"),
    ("csv ragged", ".csv", "line 11: 1 value where the rows above have 2"),
    ("csv empty", ".csv", "input contained no data"),
    ("csv words", ".csv", "line 2, column 1 ('a'): 'c' is not a number"),
    ("txt nan", ".txt", "non-finite values"),
    ("directory", ".npy", "is not a file"),
]


@pytest.mark.parametrize("kind,suffix,expect", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_train_refuses_bad_data_files(tmp_path, capsys, kind, suffix, expect):
    path = tmp_path / f"data{suffix}"
    _write(path, kind)
    out = tmp_path / "out"
    line = refused(["train", "--data", path, "--out", out, "--quiet"], capsys, expect,
                   watch=[tmp_path])
    assert str(path) in line


PPCA_DATA = [("strings", ".npy", "not numbers"), ("complex", ".npy", "complex numbers"),
             ("one row", ".npy", "N >= 2 rows"), ("nan", ".npy", "non-finite"),
             ("csv word in a row", ".csv", "line 7, column 2 ('f1'): 'x' is not a number")]


@pytest.mark.parametrize("kind,suffix,expect", PPCA_DATA, ids=[c[0] for c in PPCA_DATA])
def test_ppca_refuses_bad_data_files(tmp_path, capsys, kind, suffix, expect):
    path = tmp_path / f"data{suffix}"
    _write(path, kind)
    refused(["ppca", "--data", path, "--steps", "1"], capsys, expect, watch=[tmp_path])


FLAG_CASES = [  # (argv after the command, what the line must contain); {run}: a trained run
    (["sample", "{run}", "--num", "0"], "argument --num: must be an integer >= 1, got 0"),
    (["sample", "{run}", "--num", "-4"], "argument --num: must be an integer >= 1, got -4"),
    (["sample", "{run}", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["sample", "{run}", "--nmu", "4"], "(did you mean --num?)"),
    (["evaluate", "{run}", "--num-data", "0"], "argument --num-data: must be an integer >= 1"),
    (["evaluate", "{run}", "--num-data", "-1"], "argument --num-data: must be an integer >= 1"),
    (["evaluate", "{run}", "--k", "0"], "argument --k: must be an integer >= 1"),
    (["evaluate", "{run}", "--ais-chains", "0"], "argument --ais-chains: must be an integer"),
    (["evaluate", "{run}", "--ais-steps", "-5"], "argument --ais-steps: must be an integer"),
    (["evaluate", "{run}", "--split", "validation"], "invalid choice: 'validation'"),
    (["evaluate", "{run}", "--estimator", "mcmc"], "invalid choice: 'mcmc'"),
    (["evaluate", "{run}", "--num-data", "ten"], "must be an integer, got 'ten'"),
    (["gaps", "{run}", "--num-data", "0"],
     "argument --num-data: expected a positive integer or 'all', got 0"),
    (["gaps", "{run}", "--num-data", "al"],
     "argument --num-data: expected a positive integer or 'all', got 'al'"),
    (["gaps", "{run}", "--local-steps", "0"], "argument --local-steps: must be an integer"),
    (["gaps", "{run}", "--mcmc", "-1"], "argument --mcmc: must be an integer >= 0"),
    (["gaps", "{run}", "--guide-epochs", "0"], "argument --guide-epochs: must be an integer"),
    (["gaps", "{run}", "--guides", "ladder", "--num-data", "5"],
     "the gap report needs an amortized guide"),
    (["gaps", "{run}", "--log-px", "exact"], "invalid choice: 'exact'"),
    (["ppca", "--num-data", "0"], "argument --num-data: must be an integer >= 1, got 0"),
    (["ppca", "--num-data", "1"], "--num-data must be at least 2"),
    (["ppca", "--latent-dim", "0"], "argument --latent-dim: must be an integer >= 1"),
    (["ppca", "--latent-dim", "20", "--data-dim", "20"], "--latent-dim must be between 1 and"),
    (["ppca", "--steps", "-3"], "argument --steps: must be an integer >= 1"),
    (["ppca", "--iwae-k", "0"], "argument --iwae-k: must be an integer >= 1"),
    (["demo", "--epochs", "0", "--out", "{tmp}/demo"], "argument --epochs: must be an integer"),
    (["demo", "--num-data", "-3", "--out", "{tmp}/demo"], "argument --num-data: must be an"),
    (["demo", "--device", "tpu", "--out", "{tmp}/demo"], "unknown device 'tpu'"),
    (["evaluate"], "the following arguments are required: run"),
    (["evaluate", "{tmp}"], "is not a ppvae run directory (no config.toml)"),
    (["evaluate", "{tmp}/nowhere"], "run directory"),
    (["sample", "{tmp}/file.txt"], "is not a ppvae run directory"),
    (["gaps", "{tmp}/nowhere"], "does not exist"),
    (["trian"], "invalid choice: 'trian'"),
    (["trian"], "(did you mean 'train'?)"),
    ([], "the following arguments are required: command"),
    (["--threads", "abc", "info"], "argument --threads: must be an integer, got 'abc'"),
]


@pytest.mark.parametrize("argv,expect", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_other_commands_refuse_bad_flags(run_copy, tmp_path, capsys, argv, expect):
    (tmp_path / "file.txt").write_text("")
    argv = [a.replace("{run}", str(run_copy)).replace("{tmp}", str(tmp_path)) for a in argv]
    refused(argv, capsys, expect, watch=[tmp_path])
