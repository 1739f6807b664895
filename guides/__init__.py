"""Guides: amortized recognition networks and other variational families keeping the contract."""

from .conditional import ConditionalEncoder
from .conv import ConvEncoder
from .delta import DeltaEncoder
from .flow import FlowEncoder
from .fullcov import FullCovEncoder
from .hierarchical import BottomUpGuide, LadderGuide
from .linear import AmortizedLinearGaussian
from .mlp import MLPEncoder
from .sparse import SparseEncoder
from .vq import VQEncoder

__all__ = [
    "AmortizedLinearGaussian",
    "BottomUpGuide",
    "ConditionalEncoder",
    "ConvEncoder",
    "DeltaEncoder",
    "FlowEncoder",
    "FullCovEncoder",
    "LadderGuide",
    "MLPEncoder",
    "SparseEncoder",
    "VQEncoder",
]
