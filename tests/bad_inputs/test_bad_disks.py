"""A full disk: every command ends in one line and exit 2, and keeps every file it had.

As root the disk is a small tmpfs filled to the last byte (a real ENOSPC from the kernel);
elsewhere ENOSPC is injected where a buffered write reports it (fsync). A second set injects
the failure at one late write (the report, after the computation) to check that the previous
version of that file is kept and no temporary is left.
"""

import errno
import os

import pytest
from bad_inputs.harness import refused, run_cli, snapshot

from ppvae.app import files

COMMANDS = [["evaluate", "{run}", "--num-data", "5", "--k", "10"], ["sample", "{run}"],
            ["gaps", "{run}", "--num-data", "5", "--local-steps", "2", "--samples", "4",
             "--k", "4", "--guides"],
            ["train", "--out", "{run}", "--resume", "--epochs", "2", "--quiet"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=[a[0] for a in COMMANDS])
def test_a_full_disk_is_one_line_and_keeps_the_run(trained_run, full_disk, capsys, argv):
    run = full_disk(trained_run)
    argv = [a.replace("{run}", str(run)) for a in argv]
    line = refused(argv, capsys, "no space left on device", watch=[run])
    assert str(run) in line


def test_a_new_run_on_a_full_disk_leaves_nothing(full_disk, capsys):
    parent = full_disk(None, "parent")
    out = parent / "new"
    refused(["train", "--out", out, "--epochs", "1", "--quiet"], capsys,
            "no space left on device", watch=[parent])
    assert not out.exists()


LATE = [("evaluate", ["evaluate", "{run}", "--num-data", "5", "--k", "10"], "report.json"),
        ("sample", ["sample", "{run}", "--num", "4"], "samples.png"),
        ("resume", ["train", "--out", "{run}", "--resume", "--epochs", "2", "--quiet"],
         "checkpoint.pt")]


@pytest.mark.parametrize("name,argv,victim", LATE, ids=[c[0] for c in LATE])
def test_a_disk_filling_up_late_keeps_the_previous_file(run_copy, capsys, monkeypatch, name,
                                                        argv, victim):
    """The disk fills while one file is written after the work is done: that file keeps its
    previous version (or is not created), no temporary is left, and the line names it."""
    real_fsync = os.fsync
    opened: dict[int, str] = {}
    real_open = os.open

    def tracking_open(path, flags, *a, **kw):
        fd = real_open(path, flags, *a, **kw)
        opened[fd] = os.fspath(path)
        return fd

    def fsync(fd):
        if os.path.basename(opened.get(fd, "")).startswith(f".{victim}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "fsync", fsync)
    before = snapshot(run_copy)
    argv = [a.replace("{run}", str(run_copy)) for a in argv]
    code, _, err = run_cli(argv, capsys)
    from bad_inputs.harness import assert_refused

    line = assert_refused(code, err, victim)
    assert "no space left on device" in line.lower()
    after = snapshot(run_copy)
    if victim in before:
        assert after[victim] == before[victim]
        assert "is unchanged" in line
    else:
        assert victim not in after
    assert not [p for p in after if ".tmp" in p]


def test_write_failure_names_the_file_and_what_was_kept(tmp_path):
    p = tmp_path / "a.txt"
    assert files.write_failure(p, OSError(errno.ENOSPC, "x")).endswith("a.txt was not written")
    p.write_text("old")
    msg = files.write_failure(p, OSError(errno.EROFS, "x"))
    assert "read-only file system" in msg and "the previous a.txt is unchanged" in msg
