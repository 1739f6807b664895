"""Each example script runs end to end (one epoch) and writes valid PNG figures (slow: one
Python process per script; run with ``pytest -m slow``)."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.py")
                  if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_saves_figures(script, tmp_path):
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "--epochs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs, f"{script.name} wrote no figure"
    for png in pngs:
        img = mpimg.imread(png)
        assert img.shape[0] > 20 and img[..., :3].std() > 0.01, png.name
