"""MkDocs hook: the import tree that mkdocstrings reads the API reference from.

ppvae installs ``models/`` and ``guides/`` (top-level folders of the repository) as
``ppvae.models`` and ``ppvae.guides`` (setuptools ``package-dir``). Griffe, which reads the
sources for mkdocstrings without importing them, finds packages by folder, so each build lays
out a temporary ``ppvae/`` folder (a symlink to every entry of the repository's ``ppvae/``, plus
``models`` and ``guides``) and points the Python handler's ``paths`` at it. A fresh folder per
build keeps concurrent builds (``make test`` next to ``pytest``) apart; it is removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]


def lay_out(parent: Path) -> Path:
    """Lay out ``parent/ppvae`` as the installed package looks; returns ``parent``."""
    package = parent / "ppvae"
    package.mkdir()
    for entry in sorted((ROOT / "ppvae").iterdir()):
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry, entry.is_dir())
    for name in ("models", "guides"):
        (package / name).symlink_to(ROOT / name, target_is_directory=True)
    return parent


@event_priority(100)  # before mkdocstrings reads its handlers' configuration
def on_config(config: Any, **kwargs: Any) -> Any:
    """Lay out the source tree and give it to the Python handler as its only search path."""
    tree = Path(tempfile.mkdtemp(prefix="ppvae-docs-src-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(lay_out(tree))]
    return config
