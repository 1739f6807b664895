"""Generative models as Pyro model functions keeping the ppvae contract."""

from .ppca import PPCA
from .vae import LIKELIHOODS, VAE

__all__ = ["LIKELIHOODS", "PPCA", "VAE"]
