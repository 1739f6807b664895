"""Broken, locked, read-only and symlinked run directories: one line, the documented exit code,
and the directory as it was (or, where a command succeeds, nothing written through a link)."""

import os
import pickle

import numpy as np
import pytest
import torch
from bad_inputs.harness import assert_refused, refused, run_cli, snapshot

from ppvae.app.files import RunLock


def _ck(run):
    return run / "checkpoint.pt"


def _break(run, how):
    """Damage the run directory ``run`` as ``how`` says."""
    if how == "checkpoint is a folder":
        _ck(run).unlink()
        _ck(run).mkdir()
    elif how == "checkpoint corrupt":
        _ck(run).write_bytes(_ck(run).read_bytes()[:200])
    elif how == "checkpoint without rng":
        payload = torch.load(_ck(run), weights_only=True)
        del payload["rng"]
        torch.save(payload, _ck(run))
    elif how == "checkpoint a raw pickle":
        with open(_ck(run), "wb") as f:
            pickle.dump({"format": "x"}, f)
    elif how == "checkpoint missing":
        _ck(run).unlink()
    elif how == "metrics corrupt":
        text = (run / "metrics.jsonl").read_text()
        (run / "metrics.jsonl").write_text("{not json\n" + text)
    elif how == "metrics a list":
        (run / "metrics.jsonl").write_text("[1, 2]\n")
    elif how == "report corrupt":
        (run / "report.json").write_text("{")
    elif how == "report foreign":
        (run / "report.json").write_text('{"format": "other", "sections": {}}')
    elif how == "config not TOML":
        (run / "config.toml").write_text("model = \n")
    elif how == "config bad value":
        text = (run / "config.toml").read_text().replace("epochs = 1", 'epochs = "x"')
        (run / "config.toml").write_text(text)
    elif how == "config other sizes":
        text = (run / "config.toml").read_text().replace("latent_dim = 2", "latent_dim = 3")
        (run / "config.toml").write_text(text)
    else:
        raise AssertionError(how)


RESUME_CASES = [
    ("checkpoint is a folder", "is not a checkpoint file"),
    ("checkpoint corrupt", "not a readable ppvae checkpoint"),
    ("checkpoint without rng", "malformed checkpoint: missing entry 'rng'"),
    ("checkpoint a raw pickle", "checkpoint.pt"),
    ("metrics corrupt", "metrics.jsonl, line 1: not a JSON object"),
    ("metrics a list", "metrics.jsonl, line 1: not a JSON object"),
    ("report corrupt", "report.json: not valid JSON"),
    ("report foreign", "not a ppvae run report (format 'other')"),
    ("config not TOML", "config.toml: not a valid TOML file"),
    ("config bad value", "config.toml: [train] epochs must be an integer, got the string 'x'"),
    ("config other sizes", "in the checkpoint but (6, 16) in the model/guide"),
]


@pytest.mark.parametrize("how,expect", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_of_a_broken_run_is_refused_and_changes_nothing(run_copy, capsys, how, expect):
    _break(run_copy, how)
    refused(["train", "--out", run_copy, "--resume", "--epochs", "2", "--quiet"], capsys,
            expect, watch=[run_copy])


USE_CASES = [  # commands that read a run and write report sections
    (["evaluate", "{run}", "--num-data", "5", "--k", "10"], "report corrupt",
     "report.json: not valid JSON"),
    (["sample", "{run}", "--num", "4"], "report foreign", "not a ppvae run report"),
    (["gaps", "{run}", "--num-data", "5", "--guides"], "report corrupt", "report.json"),
    (["sample", "{run}"], "checkpoint missing", "checkpoint.pt is missing: train the run"),
    (["evaluate", "{run}"], "checkpoint corrupt", "not a readable ppvae checkpoint"),
    (["evaluate", "{run}"], "checkpoint without rng", "missing entry 'rng'"),
    (["sample", "{run}"], "config not TOML", "not a valid TOML file"),
    (["sample", "{run}"], "config other sizes", "has shape (4, 16) in the checkpoint"),
]


@pytest.mark.parametrize("argv,how,expect", USE_CASES,
                         ids=[f"{c[0][0]} {c[1]}" for c in USE_CASES])
def test_commands_refuse_a_broken_run_before_computing(run_copy, capsys, argv, how, expect):
    _break(run_copy, how)
    argv = [a.replace("{run}", str(run_copy)) for a in argv]
    refused(argv, capsys, expect, watch=[run_copy])


LOCKED = [["evaluate", "{run}", "--num-data", "5"], ["sample", "{run}"],
          ["gaps", "{run}", "--num-data", "5"], ["train", "--out", "{run}", "--resume",
                                                 "--epochs", "2", "--quiet"]]


@pytest.mark.parametrize("argv", LOCKED, ids=[a[0] for a in LOCKED])
def test_a_second_command_on_a_run_in_use_is_refused_naming_the_holder(run_copy, capsys, argv):
    argv = [a.replace("{run}", str(run_copy)) for a in argv]
    with RunLock(run_copy, "ppvae train --out elsewhere"):
        before = snapshot(run_copy)
        code, _, err = run_cli(argv, capsys)
        assert snapshot(run_copy) == before
    assert_refused(code, err, ["is in use by another ppvae command",
                               f"pid {os.getpid()}", "ppvae train --out elsewhere"])
    assert not (run_copy / ".ppvae-lock").exists()  # released with the holder


def test_a_new_run_directory_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "new"
    out.mkdir()
    with RunLock(out, "ppvae demo"):
        (out / "metrics.jsonl").write_text("{}\n")  # the holder's first file: not ours to undo
        refused(["train", "--out", out, "--epochs", "1", "--quiet"], capsys,
                "in use by another ppvae command", watch=[tmp_path])


@pytest.mark.parametrize("argv", [["evaluate", "{run}", "--num-data", "5"], ["sample", "{run}"],
                                  ["gaps", "{run}", "--num-data", "5", "--guides"]],
                         ids=["evaluate", "sample", "gaps"])
def test_a_read_only_run_is_refused_before_computing(trained_run, read_only, capsys, argv):
    run = read_only(trained_run)
    argv = [a.replace("{run}", str(run)) for a in argv]
    line = refused(argv, capsys, ["cannot write to run directory", str(run)], watch=[run])
    assert "read-only file system" in line or "permission denied" in line


def test_train_into_a_read_only_place_is_refused(trained_run, read_only, capsys):
    parent = read_only(trained_run, "parent")
    refused(["train", "--out", parent / "new", "--epochs", "1", "--quiet"], capsys,
            "cannot create output directory", watch=[parent])


def test_an_existing_run_is_not_trained_over(run_copy, capsys):
    refused(["train", "--out", run_copy, "--epochs", "1", "--quiet"], capsys,
            "already holds a run (config.toml); continue it with --resume", watch=[run_copy])


def test_resume_under_other_settings_is_refused(run_copy, capsys):
    refused(["train", "--out", run_copy, "--resume", "--lr", "0.1", "--quiet"], capsys,
            "written by a run with other settings (lr 0.001 -> 0.1)", watch=[run_copy])


def test_symlinks_in_a_run_are_replaced_never_written_through(run_copy, tmp_path, capsys):
    """report.md, metrics.jsonl and checkpoint.pt as links to files elsewhere: the commands
    replace the links with their own files and leave the targets as they were."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("report.md", "metrics.jsonl", "checkpoint.pt"):
        target = outside / name
        target.write_bytes((run_copy / name).read_bytes())
        (run_copy / name).unlink()
        (run_copy / name).symlink_to(target)
    before = snapshot(outside)
    code, _, err = run_cli(["train", "--out", run_copy, "--resume", "--epochs", "2", "--quiet"],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["sample", run_copy, "--num", "4"], capsys)
    assert code == 0, err
    assert snapshot(outside) == before
    for name in ("report.md", "metrics.jsonl", "checkpoint.pt"):
        assert not (run_copy / name).is_symlink()


def test_stale_temporaries_are_removed_at_the_next_start(run_copy, capsys):
    temps = [run_copy / ".checkpoint.pt.k2j3x9a1.tmp", run_copy / ".report.json.0a1b2c3d.tmp.json",
             run_copy / "stale"]
    temps[0].write_bytes(b"\0" * 1000)
    temps[1].write_text("{")
    keep = [run_copy / ".hidden-user-file", run_copy / "notes.tmp"]
    for p in keep:
        p.write_text("mine")
    code, _, err = run_cli(["sample", run_copy, "--num", "4"], capsys)
    assert code == 0, err
    assert not temps[0].exists() and not temps[1].exists()
    assert all(p.read_text() == "mine" for p in keep)
    assert not [p for p in run_copy.iterdir() if ".tmp" in p.name and p not in keep]


def _rows(path):
    np.save(path, (np.random.default_rng(0).random((30, 6)) < 0.5).astype(np.float32))
    return path


def test_any_utf8_data_path_round_trips(tmp_path, capsys):
    """An emoji, quotes, a backslash and a tab in the data path: config.toml stays valid TOML,
    and evaluate and resume use the run."""
    folder = tmp_path / 'd😀 "q" \\ \t é'
    folder.mkdir()
    data = _rows(folder / "x.npy")
    out = tmp_path / "r"
    code, _, err = run_cli(["train", "--data", data, "--out", out, "--epochs", "1",
                            "--hidden", "8", "--latent-dim", "2", "--quiet"], capsys)
    assert code == 0, err
    import tomllib

    assert tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))["data"] == str(data)
    code, _, err = run_cli(["evaluate", out, "--num-data", "3", "--k", "10"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--out", out, "--resume", "--epochs", "2", "--quiet"],
                           capsys)
    assert code == 0, err


def test_a_data_path_that_is_not_utf8_is_refused_before_writing(tmp_path, capsys):
    folder = os.path.join(os.fsencode(tmp_path), b"bad\xff")
    try:
        os.mkdir(folder)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    data = os.fsdecode(os.path.join(folder, b"x.npy"))
    _rows(data)
    out = tmp_path / "r"
    refused(["train", "--data", data, "--out", out, "--quiet"], capsys,
            "holds bytes that are not UTF-8", watch=[tmp_path])


def test_a_run_stopped_on_non_finite_values_exits_3_and_keeps_its_last_finite_epoch(
        run_copy, capsys, monkeypatch):
    """Resuming a run whose next epochs are non-finite: exit 3, one line saying where, the
    checkpoint of the last finite epoch untouched (not exit 0 with "trained ... (non_finite)")."""
    from ppvae.train import loop

    monkeypatch.setattr(loop, "check_window", lambda t, ep, tally: "step 7: site 'x' is NaN")
    before = snapshot(run_copy)
    code, out, err = run_cli(["train", "--out", run_copy, "--resume", "--epochs", "3",
                              "--quiet"], capsys)
    line = assert_refused(code, err, [
        "training stopped on non-finite values", "step 7: site 'x' is NaN",
        "the last finite epoch (1) is saved"], exit_code=3)
    assert "train again with a smaller --lr into a new --out" in line
    after = snapshot(run_copy)
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    assert out == ""


def test_a_new_run_non_finite_in_its_first_epoch_leaves_nothing(tmp_path, capsys, monkeypatch):
    """...and the corrected rerun into the same --out is not refused as 'already holds a run'."""
    from ppvae.train import loop

    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(loop, "check_window", lambda t, ep, tally: "step 0: site 'z' is NaN")
        code, _, err = run_cli(["train", "--out", out, "--epochs", "2", "--quiet"], capsys)
    line = assert_refused(code, err, "nothing was kept", exit_code=3)
    assert "site 'z'" in line
    assert not out.exists()
    code, _, err = run_cli(["train", "--out", out, "--epochs", "1", "--quiet"], capsys)
    assert code == 0, err
