"""Reference inference on binarized MNIST: BDMC-certified AIS next to IWAE.

1. Train a small VAE with ``ppvae.fit`` (or load ``--checkpoint``).
2. BDMC (Grosse et al. 2015; Wu et al. 2017) on data simulated from the trained model, for
   schedules of increasing length, until the mean sandwich gap is under ``--target-gap`` nats.
3. AIS with that schedule on ``--num-test`` seeded random test images: mean log p-hat(x) with
   its standard error, next to IWAE_k from the encoder, and the wall time.

MCMC on the same model and images (batched ``ppvae.hmc`` against one joint Pyro NUTS run and a
loop of NUTS runs) is ``benchmarks/mcmc_mnist.py``, which trains (or loads) the VAE with
:func:`train_vae` from here.

Every size is an argument, since the full run needs a GPU or a long CPU run:

    python benchmarks/reference_mnist.py --data PATH/binarized_mnist.npz --epochs 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyro
import torch

import ppvae
from ppvae.data.binarized_mnist import read_npz
from ppvae.infer.bdmc import simulate
from ppvae.models import VAE


def train_vae(args, train: torch.Tensor) -> VAE:
    """The VAE of ``args`` loaded from ``args.checkpoint``, or trained (and saved there)."""
    vae = VAE(784, args.latent, tuple(args.hidden), name="ref_vae")
    if args.checkpoint and Path(args.checkpoint).exists():
        vae.load_state_dict(torch.load(args.checkpoint))
        print(f"loaded {args.checkpoint}")
        return vae
    res = ppvae.fit(vae, vae.guide, train, epochs=args.epochs, batch_size=100, lr=1e-3,
                    quiet=True, device="cpu")
    print(f"trained {res.epochs} epochs in {res.wall_time:.0f} s, final train ELBO "
          f"{res.train_objective[-1]:.2f}")
    if args.checkpoint:
        torch.save(vae.state_dict(), args.checkpoint)
    return vae


def _bdmc(args, vae, template: torch.Tensor) -> int:
    print(f"\nBDMC on {template.shape[0]} simulated datapoints, {args.chains} chains, "
          f"{args.leapfrog} leapfrog steps per transition")
    print("| steps | lower | upper | mean gap | seconds |\n|---|---|---|---|---|")
    chosen = args.schedules[-1]
    x_sim, z_sim = simulate(vae, template)  # one simulated data set for every schedule
    for steps in args.schedules:
        t = time.perf_counter()
        r = ppvae.bdmc(vae, x_sim, z=z_sim, num_steps=steps, num_chains=args.chains,
                       num_leapfrog=args.leapfrog)
        print(f"| {steps} | {r.lower.mean:.3f} ± {r.lower.mean_stderr:.3f} | {r.upper.mean:.3f} "
              f"± {r.upper.mean_stderr:.3f} | {r.mean_gap:.3f} | {time.perf_counter() - t:.1f} |",
              flush=True)
        if r.mean_gap < args.target_gap:
            chosen = steps
            break
    return chosen


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz")
    ap.add_argument("--checkpoint", default=None, help="VAE state dict to load or write")
    ap.add_argument("--train-size", type=int, default=50000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--hidden", type=int, nargs="+", default=[200])
    ap.add_argument("--num-test", type=int, default=100)
    ap.add_argument("--bdmc-datapoints", type=int, default=20)
    ap.add_argument("--schedules", type=int, nargs="+", default=[100, 300, 1000, 3000])
    ap.add_argument("--target-gap", type=float, default=0.5)
    ap.add_argument("--chains", type=int, default=8, help="AIS chains per datapoint")
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--k", type=int, default=5000, help="IWAE samples for comparison")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    train, _, test = read_npz(args.data)
    train = torch.tensor(train[: args.train_size], dtype=torch.float32)
    rng = np.random.default_rng(args.seed)  # the test set is ordered by class
    test = torch.tensor(test[rng.permutation(len(test))[: args.num_test]], dtype=torch.float32)
    vae = train_vae(args, train)

    steps = _bdmc(args, vae, test[: args.bdmc_datapoints])
    t = time.perf_counter()
    a = ppvae.ais(vae, test, num_steps=steps, num_chains=args.chains, num_leapfrog=args.leapfrog)
    t_ais = time.perf_counter() - t
    with torch.no_grad():
        iw = ppvae.iwae(vae, vae.guide, test, k=args.k)
    print(f"\nAIS on {test.shape[0]} test images, {steps} steps, {args.chains} chains: "
          f"{a.mean:.3f} ± {a.mean_stderr:.3f} nats in {t_ais:.1f} s "
          f"(acceptance {float(a.accept_rate.mean()):.2f}); IWAE_{args.k}: "
          f"{iw.mean:.3f} ± {iw.mean_stderr:.3f}; AIS - IWAE = {a.mean - iw.mean:.3f}")


if __name__ == "__main__":
    main()
