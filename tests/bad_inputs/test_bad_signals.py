"""Signals and concurrent writers, in real processes: Ctrl-C at any moment of the start-up, a
resume hint safe to paste, two trainings on one directory, a killed run's lock."""

import json
import shlex
import signal
import subprocess
import sys
import time

import pytest
from bad_inputs.harness import assert_refused

TRAIN = ["train", "--epochs", "400", "--hidden", "16", "--latent-dim", "2", "--quiet"]


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "ppvae", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=60.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("delay", [0.1, 0.4, 1.0, 2.0])
def test_ctrl_c_at_start_up_is_one_line_and_leaves_nothing_half_made(tmp_path, delay):
    """Wherever the interrupt lands (imports, parsing, data, the first epoch): exit 130, one
    line, no traceback; either no run directory at all or one with a saved epoch and a hint."""
    out = tmp_path / "run"
    proc = _start(*TRAIN, "--out", out)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    line = assert_refused(proc.returncode, err, "interrupted", exit_code=130)
    if out.exists():
        assert (out / "checkpoint.pt").is_file() and (out / "config.toml").is_file(), line
        assert "Continue with:" in line
    else:
        assert "nothing" in line


def test_the_resume_hint_is_shell_quoted(tmp_path):
    out = tmp_path / "a b;echo INJECTED $(id)"
    proc = _start(*TRAIN, "--out", out)
    _wait_for(out / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    line = assert_refused(proc.returncode, err, "Continue with: ", exit_code=130)
    hint = line.split("Continue with: ", 1)[1]
    assert shlex.split(hint) == ["ppvae", "train", "--out", str(out), "--resume"]
    echoed = subprocess.run(["bash", "-c", "set -- ; " + hint.replace("ppvae", "echo", 1)],
                            capture_output=True, text=True)
    assert echoed.stdout.strip() == f"train --out {out} --resume"  # one word for the path


def test_two_trainings_on_one_directory_one_refused(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "30", "--hidden", "16", "--latent-dim", "2", "--quiet",
            "--out", out]
    procs = [_start(*argv), _start(*argv)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    refused_err = next(e for c, e in results if c == 2)
    line = assert_refused(2, refused_err)
    assert "in use by another ppvae command (pid " in line or "already holds a run" in line
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 31))


def test_a_killed_run_does_not_stay_locked(tmp_path):
    out = tmp_path / "run"
    proc = _start(*TRAIN, "--out", out)
    _wait_for(out / "checkpoint.pt", proc)
    proc.kill()
    proc.communicate()
    done = subprocess.run([sys.executable, "-m", "ppvae", "sample", str(out), "--num", "4"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (out / ".ppvae-lock").exists()
