"""Downloads that leave nothing behind when they fail: :func:`undo_new_folders`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["missing_folders", "undo_new_folders"]


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and its ancestors that do not exist, deepest first."""
    out = []
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


@contextlib.contextmanager
def undo_new_folders(*paths: str | os.PathLike) -> Iterator[None]:
    """On an error in the block, remove the folders it created on the way to ``paths``.

    Only folders that did not exist when the block started and are empty when it fails are
    removed (deepest first), so a failed download into a new data folder leaves no empty
    folder, while files it did fetch (and folders holding them) are kept.
    """
    new = sorted({p for path in paths for p in missing_folders(path)},
                 key=lambda p: len(p.parts), reverse=True)
    try:
        yield
    except BaseException:
        for folder in new:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise
