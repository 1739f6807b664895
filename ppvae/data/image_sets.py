"""MNIST and Fashion-MNIST through torchvision, as grey levels in [0, 1] with labels.

MNIST is LeCun et al. (1998), Fashion-MNIST is Xiao, Rasul and Vollgraf (2017).

torchvision reads the IDX files ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(``FashionMNIST`` for Fashion-MNIST) and downloads them when missing and ``download`` is true;
a failed download leaves no empty folder behind.
The official 60k training images are split into training and validation: the last 10k form the
validation set (for a smaller file set, the last sixth). Binarization (static or dynamic) is
applied by :func:`ppvae.data.load_dataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .downloads import undo_new_folders

__all__ = ["load_torchvision"]

_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _read(cls, root: Path, train: bool, download: bool):
    name = cls.__name__
    raw = root / name / "raw"
    try:
        with undo_new_folders(raw):  # a failed download leaves no empty folder behind
            ds = cls(str(root), train=train, download=download)
    except RuntimeError as e:
        if "not found" in str(e):
            raise FileNotFoundError(
                f"{name} files are missing from {raw} and "
                + ("could not be downloaded (offline?)" if download else "download=False")
                + ": put the IDX files (train-images-idx3-ubyte, ...) there") from e
        raise ValueError(f"{name} files in {raw} could not be read: {e}") from e
    except (AssertionError, ValueError, IndexError) as e:  # torchvision asserts on bad headers
        raise ValueError(f"{name} files in {raw} are malformed (not IDX image/label files of "
                         f"matching sizes): {type(e).__name__}: {e}") from e
    except OSError as e:  # failed download
        raise FileNotFoundError(f"could not download {name} into {raw} ({e}); offline? "
                                "Put the IDX files there") from e
    x = ds.data.numpy()
    y = ds.targets.numpy()
    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"{name} files in {raw} are malformed: images {x.shape}, labels "
                         f"{y.shape}")
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64), x.shape[1:]


def load_torchvision(name: str, root: str | Path, *, download: bool = True):
    """``((train, valid, test), (labels...), image_shape)`` of "mnist" or "fashion-mnist"."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _CLASSES[name])
    root = Path(root)
    x, y, shape = _read(cls, root, True, download)
    xt, yt, _ = _read(cls, root, False, download)
    n_valid = 10000 if len(x) >= 20000 else max(1, len(x) // 6)
    splits = (x[:-n_valid], x[-n_valid:], xt)
    labels = (y[:-n_valid], y[-n_valid:], yt)
    return splits, labels, tuple(shape)
