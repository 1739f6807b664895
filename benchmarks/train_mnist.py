"""Train a VAE on statically binarized MNIST with ppvae.fit and report test log p(x) by IWAE.

Reference (Burda, Grosse and Salakhutdinov 2016, one stochastic layer): a VAE scores about
-89.9 nats on this test set with k = 5000. The script reports the IWAE_k estimate of the
mean test log-likelihood with its Monte Carlo standard error, the epochs and the wall time.
The defaults are the configuration recorded in docs/performance.md (VAE 784-500-500-50, batch
100, Adam 1e-3 halved after 3 epochs without a better validation ELBO, KL warm-up over 10
epochs, early stopping after 25 such epochs, the best epoch restored; 1000 test points); about
25 minutes on a 2-core CPU. A quick look:

    python benchmarks/train_mnist.py --epochs 10 --test-subset 500

The test array is ordered by class, so a subset is a seeded random one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch

import ppvae
import ppvae.core.device
from ppvae.models import VAE

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="binarized MNIST .npz (train/valid/test) or folder of .amat files")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    ap.add_argument("--latent", type=int, default=50)
    ap.add_argument("--activation", choices=["relu", "tanh", "softplus"], default="relu")
    ap.add_argument("--schedule", choices=["none", "plateau", "cosine"], default="plateau",
                    help="per-epoch learning-rate schedule (plateau: halve after 3 epochs "
                         "without a better validation ELBO)")
    ap.add_argument("--warmup-epochs", type=float, default=10.0,
                    help="KL warm-up: beta rises linearly from 0.01 to 1 over these epochs")
    ap.add_argument("--patience", type=int, default=25,
                    help="early stopping: epochs without a better validation ELBO")
    ap.add_argument("--valid-rows", type=int, default=2000, help="validation rows per epoch")
    ap.add_argument("--train-subset", type=int, default=None, help="first N training rows")
    ap.add_argument("--test-subset", type=int, default=1000, help="seeded random test rows")
    ap.add_argument("--k", type=int, default=5000, help="IWAE samples per test point")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--jit", action="store_true",
                    help="fit(jit=True): replay the training step from a captured graph")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.exists():
        raise SystemExit(f"data not found: {args.data} (pass --data)")

    dev = ppvae.core.device.resolve_device(args.device)
    ds = ppvae.data.load_dataset("binarized-mnist", path=args.data, download=False, device=dev)
    train = ds.train[: args.train_subset] if args.train_subset else ds.train
    g = torch.Generator().manual_seed(args.seed)
    test_rows = torch.randperm(len(ds.test), generator=g)[: args.test_subset]
    test = ds.test[test_rows.to(dev)]

    pyro.set_rng_seed(args.seed)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}
    vae = VAE(784, args.latent, tuple(args.hidden), activation=act[args.activation],
              name="mnist_vae")
    steps_per_epoch = -(-len(train) // args.batch_size)
    objective = None
    if args.warmup_epochs > 0:
        objective = ppvae.objectives.kl_warmup(max(1, round(args.warmup_epochs * steps_per_epoch)))
    t0 = time.perf_counter()
    res = ppvae.fit(vae, vae.guide, train, valid=ds.valid[: args.valid_rows], epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=dev,
                    objective=objective, patience=args.patience,
                    schedule=None if args.schedule == "none" else args.schedule,
                    checkpoint=args.checkpoint, resume=args.checkpoint, jit=args.jit)
    train_s = time.perf_counter() - t0
    print(f"trained {res.epochs} epochs on {len(train)} rows in {train_s:.0f} s "
          f"({res.steps_per_second:.1f} steps/s); valid ELBO per epoch: "
          + ", ".join(f"{v:.2f}" for v in res.valid_elbo))

    t0 = time.perf_counter()
    with torch.no_grad():
        el = ppvae.elbo(vae, vae.guide, test, num_samples=100)
        iw = ppvae.iwae(vae, vae.guide, test, k=args.k)
    eval_s = time.perf_counter() - t0
    arch = "-".join(map(str, [784, *args.hidden, args.latent]))
    print(f"VAE {arch} ({args.activation}), {res.epochs} epochs (best {res.best_epoch + 1}), "
          f"lr {args.lr} schedule {args.schedule}, warm-up {args.warmup_epochs} epochs, "
          f"{len(test)} random test points:")
    print(f"  test ELBO      {el.mean:.2f} ± {el.mean_stderr:.2f} nats")
    print(f"  test IWAE_{args.k} {iw.mean:.2f} ± {iw.mean_stderr:.2f} nats  (log p(x) estimate; "
          f"published VAE: -89.9)")
    print(f"  wall time: train {train_s:.0f} s, evaluation {eval_s:.0f} s, device {dev}")


if __name__ == "__main__":
    main()
