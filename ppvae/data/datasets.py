"""Data sets as typed records of tensors: :func:`load_dataset` and the :class:`Dataset` record.

Names:

* ``"digits"`` — scikit-learn's bundled 8x8 handwritten digits (Alpaydin and Kaynak 1998; 1797
  images, scaled to [0, 1]), split 1297 / 200 / 300 with a seeded permutation: the embedded
  default, no network needed.
* ``"binarized-mnist"`` — statically binarized MNIST of Larochelle and Murray (2011), 50k / 10k /
  10k, from ``.amat`` files or an ``.npz`` (:mod:`ppvae.data.binarized_mnist`).
* ``"mnist"``, ``"fashion-mnist"`` — through torchvision (LeCun et al. 1998; Xiao et al. 2017);
  the last 10k training images form the validation split (:mod:`ppvae.data.image_sets`).
* ``"ppca"`` — synthetic data from a probabilistic PCA (:func:`ppvae.data.ppca_dataset`).
* ``"sprites"`` — binary 32x32 images of a square, an ellipse or a heart at 5 scales, 8
  rotations and 8 x 8 positions, generated with the seed (:mod:`ppvae.data.sprites`, after
  dSprites, Matthey et al. 2017): 6000 images split 4800 / 600 / 600 with a seeded
  permutation; labels are the shape, and ``factors`` holds every image's five factor indices
  (for :mod:`ppvae.analysis.disentangle`).

Images are flattened to ``[N, D]`` rows (``image_shape`` says how to fold them back); labels are
``int64`` tensors, or None where a set has none; ``factors`` (sets with known generative factors)
are ``[N, F]`` ``int64`` factor indices per split, named by ``factor_names``. ``binarize`` is
None, ``"static"``, ``"threshold"`` or ``"dynamic"`` (:mod:`ppvae.data.binarize`); with
``"dynamic"`` the training split keeps its grey levels and :func:`ppvae.fit` draws a fresh
binarization each epoch, while validation and test are binarized once with the seed so
evaluation is fixed. Sprites are binary already: every binarization leaves them as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .binarize import BINARIZATIONS, binarize_splits
from .sprites import FACTOR_NAMES, SHAPES, sprites

__all__ = ["DATASETS", "Dataset", "default_root", "load_dataset"]

DATASETS = ("digits", "binarized-mnist", "mnist", "fashion-mnist", "ppca", "sprites")
_OPTIONS = {"ppca": ("num_data", "data_dim", "latent_dim", "sigma"),  # load_dataset's **options
            "sprites": ("num_data", "size")}


class Dataset(NamedTuple):
    """A data set's train, validation and test splits, with labels and image shape when known."""
    name: str
    train: torch.Tensor  # [N_train, D]
    valid: torch.Tensor  # [N_valid, D]
    test: torch.Tensor  # [N_test, D]
    train_labels: torch.Tensor | None  # [N_train] int64
    valid_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    image_shape: tuple[int, ...] | None  # (H, W) or (C, H, W), e.g. (28, 28); None: not images
    binarization: str | None  # None, "static", "threshold" or "dynamic"
    columns: tuple[str, ...] | None = None  # names of the D columns (a CSV header), if known
    classes: tuple[str, ...] | None = None  # names of the labels 0, 1, ... (folder names), if known
    # per split [N, F] int64 generative factor indices (synthetic sets such as "sprites")
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    factor_names: tuple[str, ...] | None = None  # names of the F factors

    @property
    def data_dim(self) -> int:
        """D, the size of one (flattened) datapoint."""
        return int(self.train.shape[1])

    def __repr__(self) -> str:
        extra = "" if self.image_shape is None else f", images {self.image_shape}"
        if self.classes is not None:
            extra += f", classes {', '.join(self.classes[:5])}" + (
                ", ..." if len(self.classes) > 5 else "")
        if self.columns is not None:
            extra += f", columns {', '.join(self.columns[:5])}" + (
                ", ..." if len(self.columns) > 5 else "")
        if self.factor_names is not None:
            extra += f", factors {', '.join(self.factor_names)}"
        return (f"Dataset({self.name}: train {tuple(self.train.shape)}, valid "
                f"{tuple(self.valid.shape)}, test {tuple(self.test.shape)}, labels "
                f"{self.train_labels is not None}, binarization {self.binarization}{extra})")


def default_root() -> Path:
    """Where downloads go: ``$PPVAE_DATA`` or ``~/.cache/ppvae``."""
    return Path(os.environ.get("PPVAE_DATA", Path.home() / ".cache" / "ppvae"))


def _split(n: int, sizes: tuple[int, int], seed: int) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = sizes
    return perm[n_valid + n_test:], perm[:n_valid], perm[n_valid:n_valid + n_test]


def _digits(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float32) / 16.0  # [1797, 64] in [0, 1]
    tr, va, te = _split(len(x), (200, 300), seed)
    y = d.target.astype(np.int64)
    return (x[tr], x[va], x[te]), (y[tr], y[va], y[te]), (8, 8)


def _ppca(seed: int, num_data: int = 1000, data_dim: int = 10, latent_dim: int = 3,
          sigma: float = 0.5):
    from .synthetic import ppca_dataset

    x = ppca_dataset(num_data, data_dim, latent_dim, sigma, seed=seed).x.numpy()
    n_hold = max(1, num_data // 10)
    tr, va, te = x[2 * n_hold:], x[:n_hold], x[n_hold:2 * n_hold]
    return (tr, va, te), None, None


def _sprites(seed: int, num_data: int = 6000, size: int = 32):
    s = sprites(num_data, size, seed=seed)
    n_hold = num_data // 10
    idx = _split(num_data, (n_hold, n_hold), seed)
    x, f = s.images.reshape(num_data, -1).numpy(), s.factors.numpy()  # [N, S * S], [N, 5]
    return [x[i] for i in idx], [f[i, 0] for i in idx], (size, size), [f[i] for i in idx]


def load_dataset(name: str, *, root: str | os.PathLike | None = None, path=None,
                 binarize: str | None = None, download: bool = True, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 **options) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) as a :class:`Dataset`.

    Args:
        name: the data set, one of :data:`DATASETS`.
        root: folder for downloaded files (default :func:`default_root`).
        path: for ``"binarized-mnist"``, an ``.npz`` file or a folder with the ``.amat`` files.
        binarize: None, ``"static"``, ``"threshold"`` or ``"dynamic"``. ``"binarized-mnist"`` is
            binary already; ``"ppca"`` is real-valued and takes none.
        download: fetch missing files when online (a clear error otherwise).
        seed: seeds splits and binarization.
        dtype: dtype of the data tensors (labels are int64).
        device: device of the data and label tensors.
        options: for ``"ppca"``: ``num_data``, ``data_dim``, ``latent_dim``, ``sigma``; for
            ``"sprites"``: ``num_data`` (default 6000) and ``size`` (the image side, default
            32).
    """
    if binarize not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
    unknown = sorted(set(options) - set(_OPTIONS.get(name, ())))
    if unknown:
        raise TypeError(f"unexpected options for '{name}': {unknown}"
                        + (f" (it takes {', '.join(_OPTIONS[name])})" if name in _OPTIONS else ""))
    root = Path(root) if root is not None else default_root()
    factors = None
    if name == "digits":
        splits, labels, shape = _digits(seed)
    elif name == "ppca":
        if binarize is not None:
            raise ValueError("the 'ppca' data set is real-valued; it takes no binarize option")
        splits, labels, shape = _ppca(seed, **options)
    elif name == "sprites":
        splits, labels, shape, factors = _sprites(seed, **options)
    elif name == "binarized-mnist":
        from .binarized_mnist import load_binarized_mnist

        if binarize not in (None, "static"):
            raise ValueError("'binarized-mnist' is statically binarized already; for dynamic "
                             "binarization use 'mnist' with binarize='dynamic'")
        splits, labels, shape = load_binarized_mnist(path, root=root, download=download), None, (
            28, 28)
        binarize = "static"
    elif name in ("mnist", "fashion-mnist"):
        from .image_sets import load_torchvision

        splits, labels, shape = load_torchvision(name, root, download=download)
    else:
        raise ValueError(f"unknown data set '{name}'; choose one of {DATASETS}")

    tensors = [torch.as_tensor(np.asarray(s)).to(device=device, dtype=dtype) for s in splits]
    if name != "binarized-mnist":
        tensors = list(binarize_splits(tensors[0], tensors[1], tensors[2], binarize, seed))
    labs = [None] * 3 if labels is None else [torch.as_tensor(np.asarray(y), dtype=torch.int64,
                                                              device=device) for y in labels]
    extra: dict = {} if factors is None else {
        "classes": SHAPES, "factor_names": FACTOR_NAMES, "factors": tuple(
            torch.as_tensor(f, dtype=torch.int64, device=device) for f in factors)}
    return Dataset(name, *tensors, *labs, shape, binarize, **extra)  # type: ignore[call-arg, arg-type]  # mypy cannot count the lists

