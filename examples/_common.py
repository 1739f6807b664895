"""Shared set-up of the example scripts: arguments, the digits data, saving figures, bounds.

Every example is ``python examples/<model>.py OUT_DIR [--epochs E] [--seed S]``: it trains one
zoo model on scikit-learn's bundled 8x8 digits (binarized at 0.5, no network needed) in well
under a minute on a CPU, prints its held-out bounds and writes its figures as PNG files to
OUT_DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pyro
import torch

import ppvae

__all__ = ["bounds", "digits", "parse", "save"]


def parse(doc: str, epochs: int = 30) -> argparse.Namespace:
    """``OUT_DIR``, ``--epochs`` and ``--seed``; creates OUT_DIR and seeds Pyro."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("out", type=Path, help="folder for the PNG figures")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest on shared CPUs
    return args


def digits() -> ppvae.data.Dataset:
    """The 8x8 digits, binarized at 0.5 (train 1297, valid 200, test 300 rows, with labels)."""
    return ppvae.data.load_dataset("digits", binarize="threshold")


def save(fig, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  wrote {path}")


def bounds(model, guide, x: torch.Tensor, label: str, k: int = 100, **kwargs) -> None:
    """Print the held-out ELBO and IWAE_k per datapoint with their standard errors."""
    with torch.no_grad():
        e = ppvae.elbo(model, guide, x, num_samples=100, model_kwargs=kwargs)
        b = ppvae.iwae(model, guide, x, k=k, model_kwargs=kwargs)
    print(f"{label}: ELBO {e.mean:.2f} ± {e.mean_stderr:.2f}, "
          f"IWAE_{k} {b.mean:.2f} ± {b.mean_stderr:.2f} nats per digit")
