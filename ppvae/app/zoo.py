"""Names to objects for the command line: models, guides and data sets.

Model names: ``vae`` (:class:`models.VAE`, Kingma and Welling 2014), ``conv-vae``
(:class:`models.ConvVAE`), ``cvae`` (:class:`models.CVAE`, Sohn et al. 2015), ``hierarchical``
(:class:`models.HierarchicalVAE`, two stochastic layers) and ``autoencoder``
(:class:`models.Autoencoder`, a MAP autoencoder with a normal prior).

Guide names: ``diag`` (:class:`guides.MLPEncoder`), ``full`` (:class:`guides.FullCovEncoder`),
``flow`` (:class:`guides.FlowEncoder`, IAF of Kingma et al. 2016), ``conv``
(:class:`guides.ConvEncoder`), ``conditional`` (:class:`guides.ConditionalEncoder`),
``bottom-up`` / ``ladder`` (:class:`guides.BottomUpGuide` / :class:`guides.LadderGuide`,
Sønderby et al. 2016) and ``delta`` (:class:`guides.DeltaEncoder`).

A guide is built for any model it can be constructed for; whether the pair keeps the ppvae
contract is then decided by :func:`ppvae.check_pair` (a ``diag`` guide for the hierarchical
model fails there, naming the site). Names that are unknown, or that cannot be built for the
model or data (``ladder`` without the hierarchical model, ``conditional`` without labels),
raise :class:`BuildError` listing the valid choices. ``models`` and ``guides`` are imported
inside the functions: the engine does not depend on the zoo.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["DEFAULT_GUIDE", "GUIDES", "MODELS", "BuildError", "ModelSpec", "build_data",
           "build_guide", "build_model", "check_names"]

MODELS = ("vae", "conv-vae", "cvae", "hierarchical", "autoencoder")
GUIDES = ("diag", "full", "flow", "conv", "conditional", "bottom-up", "ladder", "delta")
DEFAULT_GUIDE = {"vae": "diag", "conv-vae": "conv", "cvae": "conditional",
                 "hierarchical": "bottom-up", "autoencoder": "delta"}
_GUIDE_NEEDS = {"ladder": ("hierarchical",)}  # guides built from the model object itself


class BuildError(ValueError):
    """An unknown or unbuildable model, guide or data set name."""


class ModelSpec(NamedTuple):
    """Sizes shared by model and guide."""

    latent_dim: int = 4
    hidden: tuple[int, ...] = (128,)
    top_latent_dim: int = 2  # the hierarchical model's upper layer
    num_flows: int = 2  # flow guide layers
    channels: int = 16  # conv model / guide


def check_names(model: str, guide: str) -> None:
    """Raise :class:`BuildError` for an unknown model or guide name, or a guide that needs
    another model (before any data are loaded)."""
    if model not in MODELS:
        raise BuildError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    if guide not in GUIDES:
        raise BuildError(f"unknown guide '{guide}'; choose one of: {', '.join(GUIDES)}")
    needs = _GUIDE_NEEDS.get(guide)
    if needs is not None and model not in needs:
        raise BuildError(f"guide '{guide}' does not fit model '{model}' (it needs model "
                         f"{' or '.join(needs)}); guides for '{model}': "
                         f"{', '.join(g for g in GUIDES if g not in _GUIDE_NEEDS)}")


def _side(data_dim: int, image_shape, who: str) -> int:
    side = math.isqrt(data_dim)
    if image_shape is None or side * side != data_dim or side % 4:
        raise BuildError(f"'{who}' needs square images with a side divisible by 4; this data "
                         f"has {data_dim} features per row (image shape {image_shape})")
    return side


def build_model(name: str, spec: ModelSpec, data_dim: int, *, image_shape=None,
                num_classes: int | None = None, binary: bool = True, label: str = "model"):
    """The model ``name`` for data rows of ``data_dim`` features. ``binary``: the data are 0/1
    (Bernoulli likelihood); otherwise the VAE gets a Gaussian likelihood with learned scale
    and the other models, Bernoulli only, are refused."""
    from ppvae import models

    h = tuple(spec.hidden)
    if name == "vae":
        if not binary:
            return models.VAE(data_dim, spec.latent_dim, h, likelihood="gaussian",
                              learn_sigma=True, name=label)
        return models.VAE(data_dim, spec.latent_dim, h, name=label)
    if not binary and name in MODELS:
        raise BuildError(f"model '{name}' has a Bernoulli likelihood and needs 0/1 data; "
                         "binarize the data (--binarize static) or use model 'vae' (Gaussian "
                         "likelihood for real-valued data)")
    if name == "conv-vae":
        return models.ConvVAE(_side(data_dim, image_shape, name), spec.latent_dim,
                              spec.channels, name=label)
    if name == "cvae":
        if not num_classes:
            raise BuildError("model 'cvae' needs labelled data (digits, mnist, fashion-mnist)")
        return models.CVAE(data_dim, num_classes, spec.latent_dim, h, name=label)
    if name == "hierarchical":
        return models.HierarchicalVAE(data_dim, (spec.latent_dim, spec.top_latent_dim), h,
                                      name=label)
    if name == "autoencoder":
        return models.Autoencoder(data_dim, spec.latent_dim, h, prior="normal", name=label)
    raise BuildError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")


def build_guide(name: str, model, model_name: str, spec: ModelSpec, data_dim: int, *,
                image_shape=None, num_classes: int | None = None, label: str = "guide"):
    """The guide ``name`` for ``model`` (built as ``model_name``)."""
    from ppvae import guides

    check_names(model_name, name)
    h, k = tuple(reversed(spec.hidden)), spec.latent_dim
    if name == "diag":
        return guides.MLPEncoder(data_dim, k, h, name=label)
    if name == "full":
        return guides.FullCovEncoder(data_dim, k, h, name=label)
    if name == "flow":
        return guides.FlowEncoder(data_dim, k, h, num_flows=spec.num_flows, name=label)
    if name == "conv":
        return guides.ConvEncoder(_side(data_dim, image_shape, name), k, spec.channels,
                                  name=label)
    if name == "conditional":
        if not num_classes or model_name != "cvae":
            raise BuildError(f"guide 'conditional' needs model 'cvae' with labelled data; for "
                             f"'{model_name}' use {DEFAULT_GUIDE.get(model_name, 'diag')}")
        return guides.ConditionalEncoder(data_dim, num_classes, k, h, name=label)
    if name == "bottom-up":
        return guides.BottomUpGuide(data_dim, (k, spec.top_latent_dim), h, name=label)
    if name == "ladder":
        return guides.LadderGuide(model, (h[0], 64), name=label)
    if name == "delta":
        return guides.DeltaEncoder(data_dim, k, h, name=label)
    raise BuildError(f"unknown guide '{name}'; choose one of: {', '.join(GUIDES)}")


def _split_file(x: torch.Tensor, seed: int):
    """80 / 10 / 10 seeded split of a user's matrix."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, n // 10)
    return x[perm[2 * n_hold:]], x[perm[:n_hold]], x[perm[n_hold:2 * n_hold]]


def build_data(name: str, *, binarize: str | None = None, path: str | None = None,
               seed: int = 0, download: bool = True, load_matrix=None):
    """A :class:`ppvae.data.Dataset` from a data set name or a ``.npy`` / ``.csv`` file.

    ``load_matrix(path) -> [N, D] tensor`` reads user files (the CLI's checked reader);
    a file's rows are split 80 / 10 / 10 with ``seed``.
    """
    from ..data import DATASETS, Dataset, load_dataset
    from ..data import binarize as binarize_images

    if name in DATASETS:
        try:
            return load_dataset(name, binarize=binarize, path=path, seed=seed,
                                download=download)
        except FileNotFoundError as e:
            raise BuildError(f"data file missing: {e}") from e
        except (ValueError, RuntimeError) as e:
            raise BuildError(f"data set '{name}': {e}") from e
    if Path(name).suffix in (".npy", ".csv", ".txt") and load_matrix is not None:
        x = load_matrix(name).to(torch.float32)
        if binarize is not None and binarize != "dynamic":
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise BuildError(f"{name}: binarize needs values in [0, 1]")
            x = binarize_images(x, binarize, seed=seed)
        train, valid, test = _split_file(x, seed)
        return Dataset(Path(name).name, train, valid, test, None, None, None, None, binarize)
    raise BuildError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}, or a "
                     ".npy / .csv file of rows")
