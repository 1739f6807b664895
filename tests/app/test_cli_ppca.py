"""The `ppvae ppca` and `ppvae info` commands: tables with finite numbers, one-line errors."""

import re
import subprocess
import sys

import numpy as np
import pytest

import ppvae
from ppvae.app.cli import main


def _numbers(text):
    return [float(t) for t in re.findall(r"-?\d+\.\d+", text)]


def test_ppca_on_a_user_file(tmp_path, capsys):
    x = ppvae.data.ppca_dataset(120, 6, 2, 0.4, seed=5).x.numpy()
    path = tmp_path / "mydata.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c,d,e,f", comments="")  # a header row
    assert main(["ppca", "--data", str(path), "--latent-dim", "2", "--steps", "200",
                 "--num-samples", "200", "--iwae-k", "20", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "maximum likelihood parameters" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5  # header + 4 guides
    nums = _numbers(out)
    assert nums and all(np.isfinite(nums))
    exact_row = next(r for r in rows if r.startswith("| exact posterior"))
    gap_exact = _numbers(exact_row)[-2]
    assert abs(gap_exact) < 1e-8  # the exact-posterior guide has no gap


@pytest.mark.parametrize("content,message", [
    (None, "data file not found"),
    ("1,2\n3\n", "bad.csv, line 2: 1 value where the rows above have 2"),
    ("x,y\n1,2\n3,z\n", "bad.csv, line 3, column 2 ('y'): 'z' is not a number"),
    ("1,2,3\n", "expected a 2-D array"),
])
def test_bad_data_files_get_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    assert main(["ppca", "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ppvae: error:") and message in err and "\n" not in err


def test_latent_dim_too_large_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(10, 3)))
    assert main(["ppca", "--data", str(path), "--latent-dim", "3"]) == 2
    assert "--latent-dim must be between 1 and D - 1 = 2" in capsys.readouterr().err


def test_info_console_script():
    out = subprocess.run([sys.executable, "-m", "ppvae", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert f"ppvae {ppvae.__version__}" in out and "pyro" in out and "device:" in out
