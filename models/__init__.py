"""Generative models as Pyro model functions keeping the ppvae contract."""

from .autoencoder import Autoencoder
from .bayesian_vae import BayesianVAE, WeightGuide
from .conv_vae import ConvVAE
from .cvae import CVAE
from .hierarchical import HierarchicalVAE
from .ppca import PPCA
from .sparse_autoencoder import SPARSE_LIKELIHOODS, SparseAutoencoder
from .supervised import SupervisedVAE
from .vae import LIKELIHOODS, VAE
from .vqvae import VQVAE, UniformCodebook

__all__ = [
    "CVAE",
    "LIKELIHOODS",
    "PPCA",
    "SPARSE_LIKELIHOODS",
    "VAE",
    "VQVAE",
    "Autoencoder",
    "BayesianVAE",
    "ConvVAE",
    "HierarchicalVAE",
    "SparseAutoencoder",
    "SupervisedVAE",
    "UniformCodebook",
    "WeightGuide",
]
