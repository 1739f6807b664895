"""``ppvae info``: versions, the device ppvae would use, and where data is looked for."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``ppvae info`` takes no flags."""


def main(args) -> int:
    """Print versions, device and data locations; returns the exit code."""
    import arviz
    import pyro
    import torch

    from .. import __version__
    from ..core.device import resolve_device
    from ..data import DATASETS, default_root

    print(f"ppvae {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, arviz {arviz.__version__}")
    print(f"device: {resolve_device()} (CUDA available: {torch.cuda.is_available()})")
    print(f"data sets: {', '.join(DATASETS)} (digits is bundled); downloads go to "
          f"{default_root()} (set PPVAE_DATA to change)")
    print("your own data: --data <folder of images> (flat, or one subfolder per class) or "
          "--data <file>.npy/.csv/.txt (rows; a CSV header row is allowed)")
    return 0
