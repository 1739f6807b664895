"""Progress bars for long work, one rule for the whole package.

Every function that can run for more than a couple of seconds (``fit``, ``fit_local``,
``ais``, ``bdmc``, ``hmc``, ``nuts``, ``log_weights`` / ``iwae`` / ``elbo`` over many chunks,
each stage of ``gaps``) takes ``progress: bool | None = None`` and draws its bar with
:func:`bar`:

* ``True``: a tqdm bar on stderr; ``False``: silent;
* ``None`` (the default): a bar only when stderr is a terminal, so scripts, notebooks' logs,
  CI and pipes stay clean. :func:`set_default` (the command line's ``--quiet``) or the
  environment variable ``PPVAE_PROGRESS`` (``0``/``1``) overrides the terminal test.

Bars close when their work ends (``leave=False`` for inner stages), so nested work (the stages
of ``gaps``, the chains of ``bdmc``) stacks rather than floods the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "enabled", "set_default", "stage"]

_default: bool | None = None  # set_default's value; None: ask the terminal / environment


def set_default(value: bool | None) -> None:
    """Set what ``progress=None`` means in this process (None: back to the terminal test)."""
    global _default
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"progress must be True, False or None, got {value!r}")
    _default = value


def enabled(progress: bool | None) -> bool:
    """Whether a function called with ``progress`` draws its bar."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, got {progress!r}")
        return progress
    if _default is not None:
        return _default
    env = os.environ.get("PPVAE_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def bar(progress: bool | None, *, total: int | None, desc: str, unit: str = "it",
        leave: bool = False, initial: int = 0, **kwargs: Any) -> tqdm:
    """A tqdm bar for ``total`` units of ``desc`` work; disabled unless :func:`enabled`.

    A disabled bar costs nothing per ``update`` and prints nothing, so callers update it
    unconditionally. ``mininterval`` is 0.5 s so that a bar refreshing from a hot loop does not
    itself cost time.
    """
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                disable=not enabled(progress), file=sys.stderr, **kwargs)


@contextlib.contextmanager
def stage(progress: bool | None, desc: str, *, total: int | None = None,
          unit: str = "it") -> Iterator[tqdm]:
    """A bar that closes when the ``with`` block ends (also on an error)."""
    b = bar(progress, total=total, desc=desc, unit=unit)
    try:
        yield b
    finally:
        b.close()
