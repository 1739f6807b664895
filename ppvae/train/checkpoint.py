"""Training checkpoints: atomic, self-describing, and loaded without arbitrary unpickling.

A checkpoint is one file written by ``torch.save`` to a temporary name in the target folder,
flushed to disk, then renamed over the target (``os.replace``), so a crash never leaves a
half-written checkpoint under the real name. It holds only tensors, numbers, strings, lists and
dicts, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``:

* ``params``: the trained (unconstrained) parameters by Pyro parameter-store name,
* ``model_state`` / ``guide_state``: the ``state_dict`` of model and guide when they are
  ``nn.Module`` s (buffers included),
* ``optimizer`` / ``scheduler``: their ``state_dict`` s,
* ``rng``: the torch (and CUDA) generator states, so a resumed run continues exactly,
* ``meta_json``: JSON text with the ppvae, Pyro and torch versions, the epoch and step, the
  fit configuration and the training history (:class:`CheckpointMeta`),
* ``best`` (optional; absent from older checkpoints): the best validation epoch's parameters and
  module buffers (:class:`BestParams`) when fit restores the best epoch and it is not the
  checkpoint's own, so that ``restore_best`` holds across a resume.

A file that cannot be read, was not written by ppvae, has another format version, lacks one of
the entries above (``best`` aside), or does not match the parameters it is loaded into raises
:class:`CheckpointError` naming the file and the problem, before anything is overwritten; torch's
own warnings while reading a file are silenced, so that error is all a caller sees.

The temporary file of a write that was killed (``.{name}.XXXX.tmp`` next to the checkpoint) is
left behind; :func:`remove_stale_temps` deletes such files, and :func:`ppvae.fit` calls it before
it writes. Two processes must therefore never write the same checkpoint path at once (the CLI
holds a lock on its run directory). A symlink at the checkpoint path is replaced by the new file,
never written through. :func:`same_run` is the check fit's ``resume`` adds:
the settings that decide the run's course must be those the checkpoint was written with.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import pyro
import torch

__all__ = ["FORMAT", "BestParams", "CheckpointError", "CheckpointMeta", "load_checkpoint",
           "read_meta", "remove_stale_temps", "same_run", "save_atomic", "save_checkpoint"]

FORMAT = "ppvae-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("meta_json", "params", "model_state", "guide_state", "optimizer", "scheduler", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, foreign, of another version, or does not fit."""


class CheckpointMeta(NamedTuple):
    """What a checkpoint records besides the tensors: progress, versions, settings, state."""
    epoch: int  # epochs completed
    step: int  # optimizer steps completed
    versions: dict[str, str]  # ppvae, pyro, torch
    config: dict[str, Any]  # the fit configuration (JSON types)
    state: dict[str, Any]  # training history and early-stopping state (JSON types)


class BestParams(NamedTuple):
    """The best epoch's parameters and buffers, kept when they are not the checkpoint's own.

    ``params`` by parameter-store name (unconstrained); ``buffers`` those of model and guide in
    the order :func:`ppvae.train.params.module_buffers` lists them.
    """

    epoch: int  # 0-based
    params: dict[str, torch.Tensor]
    buffers: list[torch.Tensor]


def _versions() -> dict[str, str]:
    from ppvae import __version__  # late: ppvae/__init__ imports this module

    return {"ppvae": __version__, "pyro": pyro.__version__, "torch": torch.__version__}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(path: str | os.PathLike, *, params: dict[str, torch.Tensor], model=None,
                    guide=None, optimizer=None, scheduler=None, epoch: int, step: int,
                    config: dict, state: dict, best: BestParams | None = None) -> Path:
    """Write a checkpoint atomically; refuses non-finite parameters. Returns the path.

    ``best``: the best epoch's parameters and buffers, when they are not ``params`` (the
    ``best`` entry). A symlink at ``path`` is replaced, not written through.
    """
    path = Path(path)
    for name, p in params.items():
        if not torch.isfinite(p).all():
            raise CheckpointError(f"refusing to write {path}: parameter '{name}' is not finite")
    meta = {"epoch": epoch, "step": step, "versions": _versions(), "config": config,
            "state": state}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta_json": json.dumps(meta),
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "model_state": model.state_dict() if isinstance(model, torch.nn.Module) else {},
        "guide_state": guide.state_dict() if isinstance(guide, torch.nn.Module) else {},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "rng": _rng_state(),
    }
    if best is not None:
        payload["best"] = {"epoch": int(best.epoch),
                           "params": {k: v.detach().cpu() for k, v in best.params.items()},
                           "buffers": [b.detach().cpu() for b in best.buffers]}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_atomic(payload, path)
    except BaseException as e:
        if isinstance(e, OSError) and e.filename is None:  # name the file (e.g. a full disk)
            kept = "the previous checkpoint is unchanged" if path.exists() else "none was written"
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}; {kept}") from e
        raise
    return path


def save_atomic(payload: Any, path: Path) -> None:
    """``torch.save(payload)`` to ``path`` atomically.

    A temporary file in the same folder, synced to disk, then renamed over ``path``; on any
    failure the temporary file is removed and ``path`` is as it was.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes of checkpoint ``path`` left next to it.

    Only regular files named ``.{name}.*.tmp`` (the pattern :func:`save_checkpoint` writes) in
    the checkpoint's folder, never the checkpoint itself, a symlink or a folder. Call it only
    while no other process writes ``path``: a write in progress would lose its file. Returns the
    files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for p in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
        if p.name == path.name or p.is_symlink() or not p.is_file():
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # gone meanwhile
            continue
        removed.append(p)
    return removed


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" for a raw pickle
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable ppvae checkpoint (corrupt, truncated, or containing "
            f"objects that weights_only loading refuses): {type(e).__name__}: {first}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ppvae checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not "
            f"supported (this ppvae reads version {FORMAT_VERSION})"
        )
    for key in REQUIRED:
        if key not in payload:
            raise CheckpointError(f"{path}: malformed checkpoint: missing entry '{key}'")
    rng = payload["rng"]
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
        raise CheckpointError(f"{path}: malformed checkpoint: entry 'rng' has no torch "
                              "generator state")
    if not isinstance(payload["params"], dict):
        raise CheckpointError(f"{path}: malformed checkpoint: entry 'params' is not a dict")
    return payload


def _meta(path: Path, payload: dict) -> CheckpointMeta:
    try:
        m = json.loads(payload["meta_json"])
        return CheckpointMeta(int(m["epoch"]), int(m["step"]), m["versions"], m["config"],
                              m["state"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint metadata: {e}") from e


def read_meta(path: str | os.PathLike) -> CheckpointMeta:
    """The metadata of a checkpoint, without loading anything into a model."""
    path = Path(path)
    return _meta(path, _read(path))


def _check_shapes(path: Path, saved: dict, live: dict, what: str) -> None:
    """Names and shapes of ``saved`` tensors against the ``live`` ones, before any is copied."""
    missing, extra = sorted(set(live) - set(saved)), sorted(set(saved) - set(live))
    if missing or extra:
        raise CheckpointError(
            f"{path}: {what} do not match: missing from the checkpoint {missing[:5]}, "
            f"not in the model/guide {extra[:5]}"
        )
    for name, t in live.items():
        if isinstance(t, torch.Tensor) and tuple(saved[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{path}: {what[:-1]} '{name}' has shape {tuple(saved[name].shape)} in the "
                f"checkpoint but {tuple(t.shape)} in the model/guide"
            )


def _best(path: Path, payload: dict, params: dict[str, torch.Tensor],
          buffers: Sequence[torch.Tensor]) -> BestParams | None:
    """The checkpoint's ``best`` entry, checked against the live ``params`` and ``buffers``."""
    entry = payload.get("best")
    if entry is None:
        return None
    try:
        epoch, saved, bufs = int(entry["epoch"]), dict(entry["params"]), list(entry["buffers"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint: entry 'best': {e}") from e
    _check_shapes(path, saved, params, "best-epoch parameters")
    shapes = [tuple(b.shape) if isinstance(b, torch.Tensor) else None for b in bufs]
    if shapes != [tuple(b.shape) for b in buffers]:
        raise CheckpointError(f"{path}: the best epoch's module buffers {shapes[:5]} do not "
                              f"match the model/guide's {[tuple(b.shape) for b in buffers][:5]}")
    return BestParams(epoch, saved, bufs)


def load_checkpoint(path: str | os.PathLike, *, params: dict[str, torch.Tensor], model=None,
                    guide=None, optimizer=None, scheduler=None, restore_rng: bool = True,
                    check: Callable[[CheckpointMeta], None] | None = None,
                    buffers: Sequence[torch.Tensor] = (),
                    best: Callable[[BestParams], None] | None = None) -> CheckpointMeta:
    """Load a checkpoint into existing parameters, modules, optimizer and scheduler (in place).

    ``params`` maps parameter-store names to the live (unconstrained) tensors, as
    :func:`ppvae.fit` collects them. ``check(meta)`` may refuse the checkpoint by raising. Raises
    :class:`CheckpointError` on any mismatch; every check runs before anything is overwritten.

    ``best(entry)`` is called with the checkpoint's :class:`BestParams` when it has one (checked
    against ``params`` and the module ``buffers``, in :func:`ppvae.train.params.module_buffers`
    order); the entry is not loaded into anything.
    """
    path = Path(path)
    payload = _read(path)
    meta = _meta(path, payload)
    if check is not None:
        check(meta)
    entry = _best(path, payload, params, buffers) if best is not None else None
    modules = cast("list[tuple[torch.nn.Module, dict]]",  # the states present, so not None
                   [(obj, payload.get(key)) for obj, key in ((model, "model_state"),
                                                             (guide, "guide_state"))
                    if isinstance(obj, torch.nn.Module) and payload.get(key)])
    try:
        _check_shapes(path, payload["params"], params, "parameters")
        for obj, state in modules:
            _check_shapes(path, state, obj.state_dict(), f"{type(obj).__name__} entries")
        for obj, state in modules:
            obj.load_state_dict(state)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(payload["params"][name].to(device=p.device, dtype=p.dtype))
        if optimizer is not None and payload["optimizer"]:
            optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["scheduler"]:
            scheduler.load_state_dict(payload["scheduler"])
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: does not fit this model/guide/optimizer: {e}") from e
    if restore_rng:
        torch.set_rng_state(payload["rng"]["torch"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    if best is not None and entry is not None:
        best(entry)
    return meta


RUN_SETTINGS = ("num_data", "objective", "lr", "clip_norm")  # with the seed and effective batch


def same_run(path, now: dict[str, Any], seed_given: bool) -> Callable[[CheckpointMeta], None]:
    """A ``check`` for :func:`load_checkpoint` when :func:`ppvae.fit` resumes.

    It refuses a checkpoint written under other settings that decide the run's course (data
    size, objective, learning rate, clipping, the minibatch seed when one is given, the
    effective batch ``batch_size x ranks``), since resuming under them would not continue that
    run. Epochs, patience, device and ``jit`` may change.
    """
    def effective(c: dict) -> int:
        return int(c["batch_size"]) * int(c.get("world_size", 1))

    def check(meta: CheckpointMeta) -> None:
        was = meta.config
        keys = RUN_SETTINGS + (("seed",) if seed_given else ())
        diffs = [f"{k} {was[k]!r} -> {now[k]!r}" for k in keys if k in was and was[k] != now[k]]
        if "batch_size" in was and effective(was) != effective(now):
            diffs.append(f"batch_size x ranks {effective(was)} -> {effective(now)}")
        if diffs:
            raise CheckpointError(
                f"{path}: written by a run with other settings ({'; '.join(diffs)}): resuming "
                "would not continue it. Resume with its settings, or start afresh (no resume)"
            )
    return check
