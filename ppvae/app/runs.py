"""Run directories of the ``ppvae`` command line: one folder per trained model and its reports.

A run directory holds

* ``config.toml``: the run's configuration (model, guide, data, training options), written here
  for flat and one-level nested tables of simple values (str, int, float, bool and lists of
  them; strings escaped by :func:`toml_string`, so any UTF-8 text round-trips) and read back
  with the standard library's :mod:`tomllib`,
* ``metrics.jsonl``: one JSON object per training epoch, appended as the epoch ends,
* ``checkpoint.pt``: the :mod:`ppvae.train.checkpoint` file written by :func:`ppvae.fit` every epoch
  (so an interrupted run resumes), and ``guide-<name>.pt`` for guides trained later on the
  frozen model,
* ``report.json`` / ``report.md``: sections (training, evaluation, gaps, posterior, samples;
  ``ppvae ppca`` writes its own run directory with a PPCA section and no config.toml) that each
  command adds or replaces; the markdown is re-rendered from all sections in a fixed order,
* PNG figures and ArviZ netCDF files of posterior samples.

Every section records where its numbers came from (:func:`provenance`): the command line, the
time (ISO 8601, UTC), the checkpoint's epoch and content hash (the first 12 hex digits of the
sha256 of ``checkpoint.pt``), the seed, the rows used (:func:`describe_rows`; the indices are in
report.json) and the ppvae / Pyro / torch versions; report.json also carries a top-level
``versions`` block. The :class:`~ppvae.DiagnosticWarning` messages a section's computation
raised (:func:`record_warnings`) are stored with it and listed in a "Warnings" section at the top
of report.md.

Stale sections: a section computed from another checkpoint than the one a newer section was
computed from (after ``ppvae train --resume`` trains further, or a retrain), or one that a later
command superseded (``ppvae gaps`` without ``--mcmc`` supersedes an earlier MCMC comparison), is
moved from ``sections`` to ``stale`` in report.json, listed under "Stale sections" in report.md
with the checkpoint it came from, the reason and the command that recomputes it, and its figures
and netCDF files are moved into the ``stale/`` folder. Nothing in the top level of the run
directory describes another model state than the current checkpoint. Writing the section again
removes its stale entry and files.

Every file is written whole by :mod:`ppvae.app.files` (temporary file, flush, rename: a crash or
a full disk keeps the previous version, symlinks are replaced, not written through), and the
commands hold the directory's lock (:class:`ppvae.app.files.RunLock`) while they write. Only the
primary process writes (``RANK`` 0 when launched by torchrun), so a distributed training run
shares one directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
import time
import tomllib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .files import replacing, write_text

__all__ = ["READ_THE_NUMBERS", "SECTIONS", "RunDir", "RunError", "checkpoint_id",
           "command_line", "describe_rows", "is_primary", "json_safe", "provenance", "read_toml",
           "record_warnings", "set_command", "to_toml", "versions"]

SECTIONS = ("train", "evaluate", "gaps", "posterior", "samples", "ppca")  # report.md order
READ_THE_NUMBERS = 'docs/reading-numbers.md, "How to read the numbers"'  # the warnings explained
# the command that recomputes a section ({run}: the run directory)
_RERUN = {"train": "ppvae train --out {run} --resume --epochs N",
          "evaluate": "ppvae evaluate {run}", "gaps": "ppvae gaps {run}",
          "posterior": "ppvae gaps {run} --mcmc N", "samples": "ppvae sample {run}",
          "ppca": "ppvae ppca --out {run}"}
_STALE_DIR = "stale"
_command: list[str] | None = None  # the CLI's arguments while a command runs


def set_command(argv: Sequence[str] | None) -> None:
    """Record the ``ppvae`` command line's arguments for the reports (None: forget them)."""
    global _command
    _command = None if argv is None else [str(a) for a in argv]


def command_line() -> str:
    """The command that is computing, shell-quoted.

    ``ppvae <arguments>`` while the command line runs a command (:func:`set_command`); from the
    Python API, the process's ``sys.argv``.
    """
    if _command is not None:
        return shlex.join(["ppvae", *_command])
    return shlex.join(sys.argv) if sys.argv else "python"


def versions() -> dict[str, str]:
    """The ppvae, Pyro, torch and Python versions."""
    import pyro
    import torch

    from .. import __version__

    return {"ppvae": __version__, "pyro": pyro.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0]}


def checkpoint_id(path: str | os.PathLike) -> dict[str, Any] | None:
    """The epoch and content hash of a checkpoint: ``{"epoch": int, "sha256": 12 hex digits}``.

    None when there is no file; ``epoch`` is None for a file whose metadata cannot be read.
    """
    from ..train.checkpoint import CheckpointError, read_meta

    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    try:
        epoch: int | None = read_meta(p).epoch
    except (CheckpointError, OSError):
        epoch = None
    return {"epoch": epoch, "sha256": h.hexdigest()[:12]}


def provenance(run: RunDir, *, seed: int | None = None, rows: dict[str, dict] | None = None,
               **extra: Any) -> dict[str, Any]:
    """Where a section's numbers come from, as its ``provenance`` record in report.json.

    Args:
        run: the run directory (its checkpoint is identified by :func:`checkpoint_id`).
        seed: the seed of the computation (None: none was set).
        rows: name -> row record (:meth:`ppvae.app.trained.Rows.record`) of each set of rows
            the section used.
        extra: further JSON values to record (e.g. the hashes of extra guides).

    Returns:
        ``command`` (:func:`command_line`), ``time`` (ISO 8601, UTC), ``checkpoint``
        (:func:`checkpoint_id`), ``seed``, ``rows``, ``versions`` (:func:`versions`) and
        ``extra``'s keys.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"command": command_line(), "time": now, "checkpoint": checkpoint_id(run.checkpoint),
            "seed": seed, "rows": rows or {}, "versions": versions(), **extra}


def describe_rows(rec: dict[str, Any]) -> str:
    """One phrase for a row record, e.g. '300 of 10000 test rows, seeded random (seed 0), ...'."""
    sel, n, total, split = rec["selection"], rec["count"], rec["of"], rec["split"]
    if sel == "all":
        return f"all {total} {split} rows"
    if sel == "first":
        return f"the first {n} of {total} {split} rows"
    return (f"{n} of {total} {split} rows, seeded random (seed {rec['seed']}), indices in "
            "report.json")


def _describe_provenance(prov: dict[str, Any]) -> str:
    ck = prov.get("checkpoint")
    where = ("" if not ck else  # no model state (the PPCA study)
             f" from checkpoint epoch {ck.get('epoch')} (sha256 `{ck.get('sha256')}`)")
    parts = [f"Computed by `{prov.get('command')}` at {prov.get('time')}{where}"]
    if prov.get("seed") is not None:
        parts.append(f"seed {prov['seed']}")
    rows = prov.get("rows") or {}
    if rows:
        parts.append("rows: " + "; ".join(f"{k}: {describe_rows(r)}" for k, r in rows.items()))
    v = prov.get("versions") or {}
    if v:
        parts.append(", ".join(f"{k} {v[k]}" for k in ("ppvae", "pyro", "torch") if k in v))
    return "_" + "; ".join(parts) + "._"


def _sha(section: dict[str, Any] | None) -> str | None:
    """The checkpoint hash a section was computed from (None: unknown)."""
    ck = ((section or {}).get("provenance") or {}).get("checkpoint")
    return ck.get("sha256") if isinstance(ck, dict) else None


def _section_files(name: str, section: dict[str, Any]) -> list[str]:
    """The files of a section (reports written before sections listed them: the usual ones)."""
    if "files" in section:
        return list(section["files"])
    legacy = {"train": ["training.png", "posterior_guide.nc"],
              "evaluate": ["reconstructions.png"], "gaps": ["gaps.png", "gaps.json"],
              "posterior": ["posterior.png", *(section.get("data") or {}).get("files", [])],
              "samples": ["samples.png"]}
    return legacy.get(name, [])


@contextmanager
def record_warnings() -> Iterator[list[str]]:
    """The :class:`~ppvae.DiagnosticWarning` messages raised in the block, for a report section.

    Like :func:`ppvae.core.diagnostic_warnings.collect` (messages ``"<Class>: <message>"``,
    deduplicated, complete when the block exits), but every warning caught is raised again
    after the block, so a caller of the API (or the command line's own ``collect``) still sees
    it.
    """
    from ..core.diagnostic_warnings import DiagnosticWarning

    found: list[str] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught_:
            caught = caught_
            warnings.simplefilter("always", DiagnosticWarning)
            yield found
    finally:
        for w in caught:
            if issubclass(w.category, DiagnosticWarning):
                text = f"{w.category.__name__}: {w.message}"
                if text not in found:
                    found.append(text)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


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
        return toml_string(v, where)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise TypeError(f"config value {where} = {v!r}: only str, int, float, bool and lists of "
                    "them can be written to TOML")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def toml_string(s: str, where: str = "value") -> str:
    """``s`` as a TOML basic string: any Unicode text round-trips through :mod:`tomllib`.

    Quotes, backslashes and control characters are escaped; everything else (accents, emoji,
    any character outside the Basic Multilingual Plane) is written as itself in UTF-8.

    Raises:
        ValueError: ``s`` holds a lone surrogate, which is how Python spells bytes of a file
            name that are not UTF-8; TOML text cannot hold them.
    """
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:
            raise ValueError(f"{where} = {s!r} holds bytes that are not UTF-8 (a file name in "
                             "another encoding?); rename the file or folder so that its name "
                             "is UTF-8 text")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


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
    if not p.exists():
        raise RunError(f"config file not found: {p}")
    if not p.is_file():
        raise RunError(f"config file {p} is not a file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{p}: not a valid TOML file ({e})") from e
    except OSError as e:
        raise RunError(f"cannot read {p}: {e.strerror or e}") from e


def json_safe(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


class RunDir(NamedTuple):
    """Paths and writers of one run directory."""

    path: Path

    @classmethod
    def create(cls, path: str | os.PathLike) -> RunDir:
        """Make (or reuse) the folder; :class:`RunError` naming it when that fails.

        Whether it can be written is checked when a command takes its lock
        (:class:`ppvae.app.files.RunLock`).
        """
        p = Path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create output directory {p}: {e.strerror or e}") from e
        if not p.is_dir():
            raise RunError(f"{p} is not a directory")
        return cls(p)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory (it must hold config.toml)."""
        p = Path(path)
        if not p.exists():
            raise RunError(f"run directory {p} does not exist")
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
            write_text(self.config_path, to_toml(config))

    def read_config(self) -> dict[str, Any]:
        """The run's config.toml as a dict."""
        return read_toml(self.config_path)

    def append_metrics(self, **row: Any) -> None:
        """One line of ``metrics.jsonl`` (non-finite floats written as null).

        The file is replaced whole (:func:`ppvae.app.files.write_text`), so a crash or a full
        disk never leaves half a line and a symlink is never written through.
        """
        if not is_primary():
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in row.items()}
        clean.setdefault("time", round(time.time(), 3))
        rows = self.read_metrics()
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in [*rows, clean]))

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every row of ``metrics.jsonl`` (none when the file is missing).

        Raises:
            RunError: a line that is not a JSON object, naming the file and the line.
        """
        p = self.metrics_path
        if not p.exists():
            return []
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"cannot read {p}: {getattr(e, 'strerror', None) or e}") from e
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                raise RunError(f"{p}, line {i}: not a JSON object ({line[:60]!r}); fix or "
                               "delete that line (resuming restores the epochs the checkpoint "
                               "holds)")
            rows.append(row)
        return rows

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs (a resumed run continues from its checkpoint)."""
        if is_primary() and self.metrics_path.exists():
            rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
            write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def read_report(self) -> dict[str, Any]:
        """The run's ``report.json`` (an empty report when there is none yet)."""
        p = self.path / "report.json"
        if not p.exists():
            return {"format": "ppvae.Run/1", "sections": {}}
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: not valid JSON ({e}); move it away to start a new report"
                           ) from e
        except OSError as e:
            raise RunError(f"cannot read {p}: {e.strerror or e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("sections"), dict) or \
                doc.get("format") != "ppvae.Run/1":
            fmt = doc.get("format") if isinstance(doc, dict) else None
            raise RunError(f"{p}: not a ppvae run report (format {fmt!r}); move it away to "
                           "start a new report")
        return doc

    def set_section(self, name: str, title: str, markdown: str, data: dict[str, Any], *,
                    provenance: dict[str, Any] | None = None, warnings: Iterable[str] = (),
                    files: Iterable[str] = ()) -> None:
        """Add or replace one report section; rewrites report.json and report.md.

        Args:
            name: one of :data:`SECTIONS`.
            title: the section's heading in report.md.
            markdown: its text.
            data: its numbers (JSON; non-finite floats are written as null).
            provenance: where the numbers come from (:func:`provenance`).
            warnings: the diagnostic warnings its computation raised (:func:`record_warnings`).
            files: the files (in the run directory) it wrote; files of the section it replaces
                that are not among them are deleted.

        Every other section computed from another checkpoint than this one's becomes stale
        (moved under ``stale``, its files into ``stale/``); a stale entry of this section is
        removed with its files.
        """
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; use one of {SECTIONS}")
        if not is_primary():
            return
        doc = self.read_report()
        files = list(files)
        old = doc["sections"].get(name)
        if old is not None:
            for f in _section_files(name, old):
                if f not in files:
                    self.file(f).unlink(missing_ok=True)
        gone = doc.setdefault("stale", {}).pop(name, None)
        if gone is not None:
            for f in gone.get("files", []):
                self.file(f).unlink(missing_ok=True)
        doc["sections"][name] = {"title": title, "markdown": markdown, "data": json_safe(data),
                                 "provenance": provenance, "warnings": list(warnings),
                                 "files": files}
        sha = _sha(doc["sections"][name])
        if sha is not None:
            ck = provenance["checkpoint"] if provenance else {}
            self._stale(doc, [k for k, sec in doc["sections"].items()
                              if k != name and _sha(sec) not in (None, sha)],
                        f"computed from another checkpoint than the current one (epoch "
                        f"{ck.get('epoch')}, sha256 {sha})")
        self._write(doc)

    def mark_stale(self, names: Iterable[str], reason: str) -> list[str]:
        """Move sections ``names`` (those present) to the report's stale entries.

        Their files go into ``stale/``. Returns the names moved.
        """
        if not is_primary():
            return []
        doc = self.read_report()
        moved = self._stale(doc, [n for n in names if n in doc["sections"]], reason)
        if moved:
            self._write(doc)
        return moved

    def sweep_stale(self, reason: str, *, unknown: bool = False) -> list[str]:
        """Mark stale every section computed from another checkpoint than the current one.

        ``unknown``: also those that record no checkpoint (written before reports did).
        Returns the names moved.
        """
        if not is_primary():
            return []
        current = checkpoint_id(self.checkpoint)
        sha = current["sha256"] if current else None
        doc = self.read_report()
        names = [k for k, sec in doc["sections"].items()
                 if (_sha(sec) is None and unknown) or (_sha(sec) not in (None, sha))]
        return self.mark_stale(names, reason) if names else []

    def _stale(self, doc: dict[str, Any], names: list[str], reason: str) -> list[str]:
        """Move ``names`` from ``doc["sections"]`` to ``doc["stale"]``, files into stale/."""
        stale = doc.setdefault("stale", {})
        for name in names:
            sec = doc["sections"].pop(name)
            prev = stale.pop(name, None)
            if prev is not None:  # an older stale version of the same section
                for f in prev.get("files", []):
                    self.file(f).unlink(missing_ok=True)
            moved = []
            for f in _section_files(name, sec):
                src = self.file(f)
                if src.is_file():
                    dst = self.file(_STALE_DIR) / f
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
                    moved.append(f"{_STALE_DIR}/{f}")
            stale[name] = {**sec, "files": moved, "reason": reason,
                           "rerun": self._rerun(name, sec)}
        return names

    def _rerun(self, name: str, section: dict[str, Any]) -> str:
        """The command that recomputes a section.

        The one that computed it, when that was the section's own command (not e.g.
        ``ppvae demo``); else that command with its defaults.
        """
        cmd = (section.get("provenance") or {}).get("command") or ""
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = []
        own = {"evaluate": "evaluate", "gaps": "gaps", "posterior": "gaps", "samples": "sample",
               "ppca": "ppca"}
        if words[:1] == ["ppvae"] and own.get(name) in words:
            return cmd
        return _RERUN[name].format(run=shlex.quote(str(self.path)))

    def _write(self, doc: dict[str, Any]) -> None:
        """Write report.json and render report.md from ``doc``."""
        doc["config"] = json_safe(self.read_config()) if self.config_path.is_file() else {}
        doc["versions"] = versions()
        doc["warnings"] = [{"section": k, "message": m} for k in SECTIONS
                           if k in doc["sections"] for m in doc["sections"][k].get("warnings")
                           or []]
        write_text(self.path / "report.json", json.dumps(doc, indent=1, allow_nan=False))
        write_text(self.path / "report.md", self._markdown(doc))

    def _markdown(self, doc: dict[str, Any]) -> str:
        cfg, sections = doc["config"], doc["sections"]
        what = (f"Model `{cfg.get('model', '?')}`, guide `{cfg.get('guide', '?')}`, data "
                f"`{cfg.get('data', '?')}`; configuration in `config.toml`. " if cfg else "")
        parts = [f"# ppvae run: {self.path.name}", "",
                 f"{what}Each section ends with where its numbers come from; report.json holds "
                 "the same and the indices of the rows used."]
        if doc["warnings"]:
            parts += ["", "## Warnings", "",
                      "Diagnostics that failed their thresholds: the numbers they name are less "
                      f"reliable than their standard errors suggest (see {READ_THE_NUMBERS}).",
                      ""]
            parts += [f"- {sections[w['section']]['title']}: {w['message']}"
                      for w in doc["warnings"]]
        for key in SECTIONS:
            if key in sections:
                s = sections[key]
                parts += ["", f"## {s['title']}", "", s["markdown"].rstrip()]
                if s.get("provenance"):
                    parts += ["", _describe_provenance(s["provenance"])]
        stale = doc.get("stale") or {}
        if stale:
            ck = checkpoint_id(self.checkpoint)
            now = ("no checkpoint" if not ck else
                   f"epoch {ck['epoch']}, sha256 `{ck['sha256']}`")
            parts += ["", "## Stale sections", "",
                      f"Computed from another model state than the current checkpoint ({now}) "
                      "or superseded by a later command. Their numbers are kept in report.json "
                      "under `stale`, their files in `stale/`; do not read them as results of "
                      "this model.", ""]
            for key in SECTIONS:
                if key in stale:
                    s = stale[key]
                    ck_old = (s.get("provenance") or {}).get("checkpoint")
                    came = ("an unrecorded checkpoint" if not ck_old else
                            f"epoch {ck_old.get('epoch')}, checkpoint `{ck_old.get('sha256')}`")
                    cmd = (s.get("provenance") or {}).get("command")
                    files = ", ".join(f"`{f}`" for f in s.get("files", []))
                    parts.append(
                        f"- **{s['title']}** (computed from {came}"
                        + (f" by `{cmd}`" if cmd else "") + f"): {s['reason']}."
                        + (f" Files: {files}." if files else "")
                        + f" Rerun: `{s['rerun']}`.")
        return "\n".join(parts) + "\n"

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.path / f"{name}.png"
        try:
            if is_primary():
                with replacing(path) as tmp:
                    fig.savefig(tmp, dpi=100)
        finally:
            plt.close(fig)
        return path
