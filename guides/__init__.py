"""Guides: amortized recognition networks and other variational families keeping the contract."""

from .linear import AmortizedLinearGaussian
from .mlp import MLPEncoder, mlp

__all__ = ["AmortizedLinearGaussian", "MLPEncoder", "mlp"]
