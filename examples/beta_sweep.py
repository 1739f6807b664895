"""A beta sweep on the sprites: the trade-off beta-VAE makes, measured (Higgins et al. 2017).

Trains the same VAE (1024-256-10, Bernoulli decoder, diagonal Gaussian encoder) on ppvae's
sprites (32x32 binary images with five known factors: shape, scale, rotation, x, y; 4800
training rows) with ``ppvae.beta_vae(beta)`` for each beta, and prints per beta, on the 600
test sprites: the reconstruction term E_q log p(x | z), the KL term, the ELBO, the active units
(variance of E_q[z | x] over the data above 0.01), the mutual information gap (MIG, Chen et al.
2018) and the FactorVAE score (Kim and Mnih 2018), as mean ± sd over the seeds. Writes
``traversals_beta<b>.png`` for the first seed: for each factor, the latent coordinate most
informative of it (by mutual information), swept from -3 to 3.

Run: ``python examples/beta_sweep.py OUT_DIR [--epochs E] [--seeds S] [--betas 1 2 4 8]``.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots
from ppvae.data import load_dataset

p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
p.add_argument("out", type=Path, help="folder for the traversal figures")
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--seeds", type=int, default=2, help="training seeds per beta")
p.add_argument("--betas", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
args = p.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

data = load_dataset("sprites")
x, factors = data.test, data.factors[2]
D, K = data.data_dim, 10
print(f"sprites: {data.train.shape[0]} training / {x.shape[0]} test images "
      f"{data.image_shape}, factors {', '.join(data.factor_names)}; {args.epochs} epochs, "
      f"{args.seeds} seed(s) per beta")


def run(beta: float, seed: int) -> dict:
    """Train one beta-VAE and measure it on the test sprites."""
    name = f"b{beta:g}_s{seed}"
    model = models.VAE(D, K, (256,), name=f"vae_{name}")
    guide = guides.MLPEncoder(D, K, (256,), name=f"enc_{name}")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=1e-3, seed=seed,
              objective=ppvae.beta_vae(beta), progress=False)
    torch.manual_seed(seed)
    elbo = ppvae.elbo(model, guide, x, num_samples=10).mean
    recon = -ppvae.reconstruction_error(model, guide, x, num_samples=10).mean
    report = ppvae.disentanglement(model, guide, x, factors, data.factor_names, seed=seed)
    if seed == 0:
        dims = report.best_latent.tolist()
        labels = [f"{f} → z[{j}]" for f, j in zip(data.factor_names, dims, strict=True)]
        save(plots.latent_traversals(
            model, guide, x, dims=dims, row_labels=labels,
            title=f"beta = {beta:g}: for each factor, the coordinate of z most informative of "
                  "it, swept over [-3, 3] (others at E_q[z | x] of test sprite 0)"),
            args.out, f"traversals_beta{beta:g}")
    return {"recon": recon, "kl": recon - elbo, "elbo": elbo,
            "active": float(report.num_active), "mig": report.mig,
            "factorvae": report.factor_vae_score}


def cell(values: list[float], digits: int) -> str:
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{sd}"


rows = []
for beta in args.betas:
    start = time.perf_counter()
    results = [run(beta, seed) for seed in range(args.seeds)]
    col = {k: [r[k] for r in results] for k in results[0]}
    rows.append((beta, col))
    print(f"  beta {beta:g}: {time.perf_counter() - start:.0f} s")

print("\n| beta | E_q log p(x∣z) | KL | ELBO | active units | MIG | FactorVAE score |")
print("|---|---|---|---|---|---|---|")
for beta, col in rows:
    print(f"| {beta:g} | {cell(col['recon'], 1)} | {cell(col['kl'], 1)} | "
          f"{cell(col['elbo'], 1)} | {cell(col['active'], 1)} | {cell(col['mig'], 3)} | "
          f"{cell(col['factorvae'], 3)} |")
ranking = sorted(rows, key=lambda r: -statistics.mean(r[1]["mig"]))
print("\nMIG ranking (highest first): " + " > ".join(f"beta {b:g}" for b, _ in ranking))
