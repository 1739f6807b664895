"""Fixtures of the bad-input suite: a trained run to copy, full and read-only disks."""

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ppvae.app import cli


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny trained run on the digits (1 epoch), made once; copy it with ``run_copy``."""
    path = tmp_path_factory.mktemp("bad_inputs") / "run"
    code = cli.main(["train", "--out", str(path), "--epochs", "1", "--hidden", "16",
                     "--latent-dim", "2", "--quiet"])
    assert code == 0
    return path


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A fresh copy of the trained run for one test."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst, symlinks=True)
    return dst


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (root only); True when it worked."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _fill(path: Path) -> None:
    """Fill the file system of ``path`` until no byte is left (unbuffered writes, halving the
    chunk at each ENOSPC down to one byte)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        chunk = 1 << 20
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                chunk //= 2
    finally:
        os.close(fd)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """``place(src) -> path``: a copy of ``src`` (or an empty folder) on a full disk.

    As root, a small tmpfs filled to the last byte; elsewhere every fsync of a new file fails
    with ENOSPC (how a full disk shows in a buffered write), injected.
    """
    mount = tmp_path / "disk"
    mounted = _mount_tmpfs(mount, "16m")
    state = {"filled": False}

    def place(src=None, name="run"):
        dst = mount / name
        if src is None:
            dst.mkdir(parents=True)
        else:
            shutil.copytree(src, dst, symlinks=True)
        if mounted:
            _fill(mount)
        elif not state["filled"]:
            def no_space(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(os, "fsync", no_space)
            state["filled"] = True
        return dst

    place.real = mounted
    yield place
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    """``place(src) -> path``: a copy of ``src`` on a read-only file system (EROFS) as root,
    else in a folder without write permission."""
    mount = tmp_path / "ro"
    mounted = _mount_tmpfs(mount, "64m")
    made = []

    def place(src, name="run"):
        dst = mount / name
        shutil.copytree(src, dst, symlinks=True)
        if mounted:
            r = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True)
            assert r.returncode == 0, r.stderr
        else:
            for p in [dst, *dst.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
                    made.append(p)
        return dst

    yield place
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    for p in made:
        p.chmod(0o755)
