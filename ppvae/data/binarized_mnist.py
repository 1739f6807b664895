"""Statically binarized MNIST (Larochelle and Murray 2011).

The split used for VAE log-likelihood comparisons (Burda et al. 2016 report a VAE at about
-89.8 nats on its test set).

Reads, from a path the user gives, either

* an ``.npz`` file with arrays ``train`` (50000, 784), ``valid`` (10000, 784) and ``test``
  (10000, 784) of 0/1 values, or
* a folder with the standard text files ``binarized_mnist_{train,valid,test}.amat`` (one image per
  line: 784 space-separated 0/1 values),

and downloads the ``.amat`` files from their usual public location into that folder (default:
``<root>/binarized_mnist``) when they are missing and ``download`` is true. Malformed files,
failed downloads and offline machines give an error naming the file and the problem; a failed
download leaves no empty folder behind (files fetched before the failure are kept).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import cast

import numpy as np

from .downloads import undo_new_folders

__all__ = ["AMAT_URL", "SPLITS", "load_binarized_mnist", "read_amat", "read_npz"]

AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
SPLITS = ("train", "valid", "test")
_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
_D = 784


def _check(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] != _D:
        raise ValueError(f"{where}: expected rows of {_D} pixels, got an array of shape "
                         f"{arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{where}: values must be 0 or 1 (statically binarized), found "
                         f"{np.unique(arr)[:5]}")
    return arr.astype(np.uint8)


def read_amat(path: str | os.PathLike) -> np.ndarray:
    """Read one ``.amat`` file: rows of 784 space-separated 0/1 values -> uint8 ``[N, 784]``."""
    path = Path(path)
    rows = []
    with path.open("rb") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = np.array(line.split(), dtype=np.float32)
            except ValueError as e:
                raise ValueError(f"{path}, line {i}: not a row of numbers ({e})") from e
            if row.shape[0] != _D:
                raise ValueError(f"{path}, line {i}: expected {_D} values, got {row.shape[0]}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return _check(np.stack(rows), str(path))


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an ``.npz`` with arrays train / valid / test (uint8 0/1, 784 columns)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    with z:
        missing = [s for s in SPLITS if s not in z.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (has {z.files}); expected "
                             f"train, valid and test")
        return cast("tuple[np.ndarray, np.ndarray, np.ndarray]",
                    tuple(_check(z[s], f"{path}[{s}]") for s in SPLITS))


def _download(split: str, folder: Path, base_url: str) -> Path:
    name = f"binarized_mnist_{split}.amat"
    url = base_url + name
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, folder / name)
    except (urllib.error.URLError, OSError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {url} into {folder} ({e}); offline? Put the three "
            f"binarized_mnist_*.amat files in {folder}, or pass path= an .npz with train, "
            "valid and test arrays") from e
    return folder / name


def load_binarized_mnist(path: str | os.PathLike | None = None, *, root: str | os.PathLike,
                         download: bool = True, base_url: str = AMAT_URL,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train / valid / test arrays (uint8 ``[N, 784]``) from an ``.npz`` or ``.amat`` folder."""
    p = Path(path) if path is not None else Path(root) / "binarized_mnist"
    if p.suffix == ".npz":
        if not p.is_file():
            raise FileNotFoundError(f"binarized MNIST file not found: {p}")
        return read_npz(p)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{p}: give an .npz file or a folder of binarized_mnist_*.amat files")
    out = []
    with undo_new_folders(p):  # a failed download leaves no empty folder behind
        for split in SPLITS:
            f = p / f"binarized_mnist_{split}.amat"
            if not f.is_file():
                if not download:
                    raise FileNotFoundError(f"{f} is missing and download=False")
                f = _download(split, p, base_url)
            out.append(read_amat(f))
    return cast("tuple[np.ndarray, np.ndarray, np.ndarray]", tuple(out))
