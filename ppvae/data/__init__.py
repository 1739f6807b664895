"""Data sets for ppvae as :class:`Dataset` records: train, valid, test, labels, image shape.

* :func:`load_dataset`: the named sets (bundled digits, binarized MNIST, MNIST, Fashion-MNIST,
  synthetic PPCA, sprites).
* A user's own data: :func:`load_image_folder` (a folder of images, flat or in class
  subfolders), :func:`load_table` (a ``.npy`` / ``.csv`` / ``.txt`` matrix, a header row
  allowed), :func:`from_tensor` (rows or images in memory) and :func:`from_torch_dataset` (any
  ``torch.utils.data.Dataset``), each split 80 / 10 / 10 with a seed.
* :func:`sprites` (:class:`Sprites`, :func:`render_sprites`): binary shape images with known
  generative factors, for disentanglement metrics.
* :func:`ppca_dataset`: synthetic data with known parameters; :func:`binarize` and
  :func:`dynamic_binarize` for Bernoulli likelihoods.
"""

from .binarize import binarize, dynamic_binarize
from .datasets import DATASETS, Dataset, default_root, load_dataset
from .folders import load_image_folder
from .sprites import Sprites, sprites
from .sprites import render as render_sprites
from .synthetic import PPCAData, ppca_dataset
from .tables import Table, TableError, read_table
from .user import from_tensor, from_torch_dataset, load_table

__all__ = [
    "DATASETS",
    "Dataset",
    "PPCAData",
    "Sprites",
    "Table",
    "TableError",
    "binarize",
    "default_root",
    "dynamic_binarize",
    "from_tensor",
    "from_torch_dataset",
    "load_dataset",
    "load_image_folder",
    "load_table",
    "ppca_dataset",
    "read_table",
    "render_sprites",
    "sprites",
]
