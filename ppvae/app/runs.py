"""Run directories of the ``ppvae`` command line: one folder per trained model and its reports.

A run directory holds

* ``config.toml``: the run's configuration (model, guide, data, training options), written here
  by hand for flat and one-level nested tables of simple values (str, int, float, bool and
  lists of them) and read back with the standard library's :mod:`tomllib`,
* ``metrics.jsonl``: one JSON object per training epoch, appended as the epoch ends,
* ``checkpoint.pt``: the :mod:`ppvae.checkpoint` file written by :func:`ppvae.fit` every epoch
  (so an interrupted run resumes), and ``guide-<name>.pt`` for guides trained later on the
  frozen model,
* ``report.json`` / ``report.md``: sections (training, evaluation, gaps, posterior, samples)
  that each command adds or replaces; the markdown is re-rendered from all sections in a fixed
  order,
* PNG figures and ArviZ netCDF files of posterior samples.

Only the primary process writes (``RANK`` 0 when launched by torchrun), so a distributed
training run shares one directory.
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["SECTIONS", "RunDir", "RunError", "is_primary", "read_toml", "to_toml"]

SECTIONS = ("train", "evaluate", "gaps", "posterior", "samples")  # report.md order


class RunError(Exception):
    """A run directory that cannot be created, written or read."""


def is_primary() -> bool:
    """True unless this is a non-zero rank of a torchrun launch."""
    return int(os.environ.get("RANK", "0")) == 0


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise TypeError(f"config value {where} = {v!r}: only str, int, float, bool and lists of "
                    "them can be written to TOML")


def to_toml(config: dict[str, Any]) -> str:
    """TOML text for ``config``: top-level simple values, then one table per nested dict.

    ``None`` values are left out (TOML has no null).
    """
    top = [f"{k} = {_toml_value(v, k)}" for k, v in config.items()
           if v is not None and not isinstance(v, dict)]
    out = [*top]
    for k, table in config.items():
        if isinstance(table, dict):
            out += ["", f"[{k}]"]
            out += [f"{kk} = {_toml_value(vv, f'{k}.{kk}')}" for kk, vv in table.items()
                    if vv is not None]
            if any(isinstance(vv, dict) for vv in table.values()):
                raise TypeError(f"config table [{k}] nests another table; only one level "
                                "is supported")
    return "\n".join(out) + "\n"


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file raises :class:`RunError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise RunError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{p}: not a valid TOML file ({e})") from e


def _finite(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


class RunDir(NamedTuple):
    """Paths and writers of one run directory."""

    path: Path

    @classmethod
    def create(cls, path: str | os.PathLike) -> RunDir:
        """Make (or reuse) the folder and check it is writable."""
        p = Path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".ppvae-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write to output directory {p}: "
                           f"{e.strerror or e}") from e
        return cls(p)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory (it must hold config.toml)."""
        p = Path(path)
        if not (p / "config.toml").is_file():
            raise RunError(f"{p} is not a ppvae run directory (no config.toml); "
                           "create one with 'ppvae train'")
        return cls(p)

    @property
    def config_path(self) -> Path:
        """The run's ``config.toml``."""
        return self.path / "config.toml"

    @property
    def checkpoint(self) -> Path:
        """The run's ``checkpoint.pt``."""
        return self.path / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        """The run's ``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    def file(self, name: str) -> Path:
        """The path of file ``name`` inside the run directory."""
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config`` as the run's config.toml (rank 0 only)."""
        if is_primary():
            self.config_path.write_text(to_toml(config))

    def read_config(self) -> dict[str, Any]:
        """The run's config.toml as a dict."""
        return read_toml(self.config_path)

    def append_metrics(self, **row: Any) -> None:
        """One line of ``metrics.jsonl`` (non-finite floats written as null)."""
        if not is_primary():
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in row.items()}
        clean.setdefault("time", round(time.time(), 3))
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(clean) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every row of ``metrics.jsonl`` (none when the file is missing)."""
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs (a resumed run continues from its checkpoint)."""
        if is_primary() and self.metrics_path.is_file():
            rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def read_report(self) -> dict[str, Any]:
        """The run's ``report.json`` (an empty report when there is none yet)."""
        p = self.path / "report.json"
        if not p.is_file():
            return {"format": "ppvae.Run/1", "sections": {}}
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{p}: not valid JSON ({e})") from e
        if doc.get("format") != "ppvae.Run/1":
            raise RunError(f"{p}: not a ppvae run report (format {doc.get('format')!r})")
        return doc

    def set_section(self, name: str, title: str, markdown: str, data: dict[str, Any]) -> None:
        """Add or replace one report section; rewrites report.json and report.md."""
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; use one of {SECTIONS}")
        if not is_primary():
            return
        doc = self.read_report()
        doc["config"] = self.read_config() if self.config_path.is_file() else {}
        doc["sections"][name] = {"title": title, "markdown": markdown, "data": _finite(data)}
        (self.path / "report.json").write_text(json.dumps(doc, indent=1, allow_nan=False))
        parts = [f"# ppvae run: {self.path.name}", "",
                 f"Model `{doc['config'].get('model', '?')}`, guide "
                 f"`{doc['config'].get('guide', '?')}`, data "
                 f"`{doc['config'].get('data', '?')}`; configuration in `config.toml`."]
        for key in SECTIONS:
            if key in doc["sections"]:
                s = doc["sections"][key]
                parts += ["", f"## {s['title']}", "", s["markdown"].rstrip()]
        (self.path / "report.md").write_text("\n".join(parts) + "\n")

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.path / f"{name}.png"
        if is_primary():
            fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
