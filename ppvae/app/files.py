"""Writing a run directory safely: whole-file replacement, an OS lock, stale temporaries removed.

* :func:`replacing`: every file of a run directory is written to a temporary name next to it,
  flushed to disk, then renamed over the target (``os.replace``). A crash, a full disk or an
  error while writing leaves the previous version of the file untouched, and a symlink at the
  target is replaced by the new file, never written through to what it points at.
  :func:`write_text` and :func:`write_bytes` are the usual cases.
* :class:`RunLock`: an exclusive ``flock`` on the run directory, held by a command for as long
  as it writes there (``ppvae train``, ``evaluate``, ``gaps``, ``sample``, ``demo``). A second
  command on the same directory is refused at once, naming the holder's pid and command line
  (kept in ``.ppvae-lock`` while the lock is held). The operating system releases the lock when
  the process ends, however it ends, so a killed run never leaves the directory locked. On
  systems without ``fcntl`` (Windows) no lock is taken.
* :func:`remove_stale_temps`: temporaries a killed process left (a ``kill -9`` during a
  checkpoint write leaves a ``.checkpoint.pt.XXXX.tmp`` of the checkpoint's size) are deleted
  when the next command takes the lock, the only moment no one can be writing them.
* :func:`write_failure`: the one-line message for an ``OSError`` met while writing a file
  (disk full, read-only file system, permission), saying that the previous version is kept.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["HOLDER", "RunLock", "WriteError", "reason", "remove_stale_temps", "replacing",
           "write_bytes", "write_failure", "write_text"]

HOLDER = ".ppvae-lock"  # the lock holder's pid and command, present while the lock is held
# temporaries: ".<name>.<token>.tmp" (checkpoints) or ".<name>.<token>.tmp<suffix>" (the rest)
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")
_WHY = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted"}


class WriteError(OSError):
    """An ``OSError`` met writing a file.

    Its message names the file, the cause and what was kept (:func:`write_failure`).
    """


def reason(err: OSError) -> str:
    """The cause of an ``OSError`` in words ("no space left on device", ...).

    For a :class:`WriteError`, its whole message.
    """
    if isinstance(err, WriteError):
        return str(err.strerror)
    return _WHY.get(err.errno or -1) or err.strerror or str(err)


def write_failure(path: str | os.PathLike, err: OSError) -> str:
    """One line for an ``OSError`` met writing ``path``: the file, the cause, what was kept."""
    p = Path(path)
    why = reason(err)
    kept = (f"; the previous {p.name} is unchanged" if p.exists() else
            f"; {p.name} was not written")
    return f"cannot write {p}: {why}{kept}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for the new ``path``; on leaving the block it replaces ``path``.

    The caller writes the whole new file to the yielded path (keeping ``path``'s suffix, so
    writers that infer a format from it work); it is flushed to disk and renamed over ``path``.
    On any error the temporary is removed and ``path`` is as before; an ``OSError`` is raised
    again with a message naming ``path`` and the cause (:func:`write_failure`).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, write_failure(path, e)) from e
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` (:func:`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` in UTF-8 (:func:`replacing`)."""
    write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of :func:`replacing` and of checkpoints left in ``directory``.

    Only regular files named like one (``.<name>.<token>.tmp[.<suffix>]``) in the folder and in
    its ``stale/`` folder are removed. Call it only while holding the directory's
    :class:`RunLock`. Returns the files removed.
    """
    gone = []
    for folder in (Path(directory), Path(directory) / "stale"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


class RunLock:
    """An exclusive lock on a run directory while a command writes to it.

    Use as a context manager (``with RunLock(path, "ppvae train ..."):``). Taking it also
    checks the directory is writable, and removes stale temporaries (:func:`remove_stale_temps`).
    """

    def __init__(self, path: str | os.PathLike, command: str = "") -> None:
        self.path = Path(path)
        self.command = command
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds the lock, from ``.ppvae-lock`` (``"another process"`` when unknown).

        The holder writes the file just after taking the lock, so a command that lost the race
        by a few milliseconds waits up to half a second for it.
        """
        for _ in range(10):
            try:
                info = json.loads((self.path / HOLDER).read_text(encoding="utf-8"))
                return (f"pid {info['pid']}, `{info['command']}`, since "
                        f"{time.strftime('%H:%M:%S', time.localtime(info['since']))}")
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return "another process"

    def acquire(self) -> RunLock:
        """Take the lock; :class:`ppvae.app.runs.RunError` when held or not writable."""
        from .runs import RunError

        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            raise RunError(f"cannot open run directory {self.path}: "
                           f"{e.strerror or e}") from e
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunError(f"{self.path} is in use by another ppvae command "
                               f"({self.holder()}); wait for it to finish or choose another "
                               "directory") from e
        self._fd = fd
        try:
            write_text(self.path / HOLDER, json.dumps(
                {"pid": os.getpid(), "command": self.command, "since": time.time()}))
        except OSError as e:
            self.release()
            raise RunError(f"cannot write to run directory {self.path}: {reason(e)}") from e
        remove_stale_temps(self.path)
        return self

    def release(self) -> None:
        """Give the lock back (and remove ``.ppvae-lock``)."""
        if self._fd is None:
            return
        try:
            (self.path / HOLDER).unlink(missing_ok=True)
        except OSError:  # a directory that became read-only: the lock goes with the fd
            pass
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
