"""Ctrl-C during training, acted on at a safe point.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives.
In a training loop that can be inside ``torch.save`` (torch then reports a corrupt zip record
instead of the interrupt), or inside a finalizer or an import-lock callback, where Python prints
"Exception ignored" and the interrupt is lost: training goes on to the last epoch.

:class:`DeferredInterrupt` replaces the SIGINT handler while :func:`ppvae.fit` runs: the first
Ctrl-C is noted, and fit raises ``KeyboardInterrupt`` at its next step boundary (a finished
epoch's checkpoint is complete by then); a second Ctrl-C raises at once. It changes nothing
outside the main thread, when another program installed its own SIGINT handler, or under
several ranks (where each rank would stop at a different step and leave the others waiting in
a collective).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["DeferredInterrupt"]


class DeferredInterrupt:
    """``install()`` before the loop, ``check()`` at safe points, ``uninstall()`` in ``finally``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def install(self, enabled: bool = True) -> DeferredInterrupt:
        """Defer Ctrl-C to :meth:`check`; returns ``self``.

        Only when ``enabled``, in the main thread, and while SIGINT has Python's default handler.
        """
        if (enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.requested:  # asked twice: stop now, wherever that is
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since :meth:`install`."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def uninstall(self) -> None:
        """Put back the SIGINT handler that :meth:`install` replaced, if any."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
