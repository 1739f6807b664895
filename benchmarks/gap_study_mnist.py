"""The inference-gap study of Cremer, Li and Duvenaud (2018) on statically binarized MNIST.

Trains (or loads, ``--checkpoint``) a VAE with a diagonal-Gaussian encoder and a flow encoder
(IAF, trained on the frozen decoder), in the configuration of Cremer et al. (latent 50, encoder
784-200-200, decoder 200-200-784, ELU) or in the README's best one (``--config best``:
784-500-500-50, ReLU, as benchmarks/train_mnist.py), then runs :func:`ppvae.gap_study` on a
seeded random subset of the test images (the test array is ordered by class) or on all of them
(``--num-test all``). The study is resumable: rerunning the same command after an interruption
continues at the block where it stopped (``--study-dir``).

It prints the table with Cremer et al.'s columns (log p̂(x), L[q*_flow], L[q*_diag], L[q],
approximation, amortization and inference gaps, each with its Monte Carlo s.e.), the q*
convergence counts, the BDMC gap certifying the AIS setting, every stage's time and each
departure from Cremer et al.'s protocol, and writes them to ``--out`` (markdown).

    python benchmarks/gap_study_mnist.py --threads 1 --checkpoint cremer.pt --num-test 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyro
import torch
from pyro import poutine

import ppvae
import ppvae.core.device
from ppvae.guides import FlowEncoder
from ppvae.models import VAE

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"

CONFIGS = {  # hidden sizes (encoder = reversed decoder), latent size, activation
    "cremer": ((200, 200), 50, torch.nn.ELU),
    "best": ((500, 500), 50, torch.nn.ReLU),
}


def parse_args(argv=None):
    """The command line (see --help)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="binarized MNIST .npz (arrays train/valid/test)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cremer")
    p.add_argument("--num-test", default="1000", help="seeded random test images, or 'all'")
    p.add_argument("--epochs", type=int, default=100, help="VAE epochs (early stopping too)")
    p.add_argument("--flow-epochs", type=int, default=30, help="flow encoder epochs")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (epochs)")
    p.add_argument("--num-flows", type=int, default=2)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="save/load the trained networks here (training resumes from "
                        "CHECKPOINT.vae / .flow epoch checkpoints)")
    p.add_argument("--train-only", action="store_true", help="train (or load), then stop")
    p.add_argument("--study-dir", type=Path, default=None,
                   help="the study's directory (default: CHECKPOINT.study)")
    p.add_argument("--block-size", type=int, default=50)
    p.add_argument("--local-steps", type=int, default=3000, help="q* step limit")
    p.add_argument("--particles", type=int, default=100, help="q* samples per step")
    p.add_argument("--window", type=int, default=100, help="q* steps per convergence check")
    p.add_argument("--patience-checks", type=int, default=10,
                   help="q* checks without improvement before a datapoint converged")
    p.add_argument("--tol", type=float, default=0.0, help="improvement that counts (nats)")
    p.add_argument("--elbo-samples", type=int, default=5000)
    p.add_argument("--iwae-k", type=int, default=5000)
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=10000)
    p.add_argument("--no-ais", action="store_true", help="log p̂(x) by IWAE only")
    p.add_argument("--bdmc-data", type=int, default=100, help="simulated datapoints for BDMC")
    p.add_argument("--out", type=Path, default=Path("gap_study_mnist.md"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def networks(args, device):
    """The VAE (decoder + diagonal encoder) and the flow encoder of ``--config``."""
    hidden, latent, act = CONFIGS[args.config]
    vae = VAE(784, latent, hidden=hidden, activation=act, name="vae").to(device)
    flow = FlowEncoder(784, latent, hidden=tuple(reversed(hidden)), num_flows=args.num_flows,
                       activation=act, name="flow_encoder").to(device)
    return vae, flow


def _epoch_log(what: str):
    def log(epoch, valid=None, seconds=0.0, **_):
        print(f"  {what} epoch {epoch}: valid ELBO {valid:.2f} ({seconds:.0f} s)", flush=True)
    return log


def train(args, data, device):
    """The networks, trained here (resuming from epoch checkpoints) or loaded."""
    vae, flow = networks(args, device)
    ckpt = args.checkpoint
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=device)
        vae.load_state_dict(state["vae"])
        flow.load_state_dict(state["flow"])
        return vae, flow, [("load checkpoint", 0.0)], state.get("info", {})
    part = (lambda tag: Path(f"{ckpt}.{tag}")) if ckpt is not None else (lambda tag: None)
    valid, times, info = data.valid[:2000], [], {}
    t = time.perf_counter()
    steps = -(-len(data.train) // 100)
    r = ppvae.fit(vae, vae.guide, data.train, valid=valid, epochs=args.epochs, batch_size=100,
                  lr=1e-3, seed=args.seed, device=device, schedule="plateau",
                  patience=args.patience, objective=ppvae.kl_warmup(10 * steps),
                  checkpoint=part("vae"), resume=part("vae"), progress=False,
                  on_epoch=_epoch_log("VAE"))
    times.append((f"train VAE + diagonal encoder ({r.epochs} epochs)", time.perf_counter() - t))
    info["vae"] = {"epochs": r.epochs, "best_epoch": r.best_epoch + 1,
                   "valid_elbo": max(r.valid_elbo)}
    print(f"VAE: best valid ELBO {max(r.valid_elbo):.2f} after {r.epochs} epochs", flush=True)
    t = time.perf_counter()
    frozen = poutine.block(vae, hide_types=["param"])  # the flow encoder trains alone
    r = ppvae.fit(frozen, flow, data.train, valid=valid, epochs=args.flow_epochs,
                  batch_size=100, lr=1e-3, seed=args.seed, device=device, schedule="plateau",
                  patience=args.patience, checkpoint=part("flow"), resume=part("flow"),
                  progress=False,
                  on_epoch=_epoch_log("flow"))
    times.append((f"train flow encoder ({r.epochs} epochs)", time.perf_counter() - t))
    info["flow"] = {"epochs": r.epochs, "best_epoch": r.best_epoch + 1,
                    "valid_elbo": max(r.valid_elbo)}
    print(f"flow encoder: best valid ELBO {max(r.valid_elbo):.2f}", flush=True)
    if ckpt is not None:
        torch.save({"vae": vae.state_dict(), "flow": flow.state_dict(), "info": info}, ckpt)
    return vae, flow, times, info


def main(argv=None) -> None:
    """Train or load, then run the study and print its table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ppvae.core.device.resolve_device()
    pyro.set_rng_seed(args.seed)
    data = ppvae.data.load_dataset("binarized-mnist", path=args.data, download=False,
                                   device=device)
    vae, flow, times, info = train(args, data, device)
    print("trained:", json.dumps(info), flush=True)
    if args.train_only:
        return


if __name__ == "__main__":
    main()
