"""Generative models as Pyro model functions keeping the ppvae contract."""

from .ppca import PPCA

__all__ = ["PPCA"]
