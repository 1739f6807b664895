"""Training throughput of ppvae.fit on 1 vs 2 torchrun processes (CPU, gloo), same effective batch.

    python benchmarks/distributed_throughput.py [--rows 10000] [--epochs 2] [--batch 128]

The driver launches ``torchrun --nproc_per_node P`` on this script for P = 1 and 2 (127.0.0.1, a
free port); each rank trains the same VAE (784-200-50 on binarized MNIST rows, or the 8x8
digits when the MNIST file is absent) with ``ppvae.fit``, per-rank batch ``batch / P`` so that
every run takes the same optimizer steps on the same minibatches, one intra-op thread per
process. Rank 0 reports the optimizer steps per second of training time (``FitResult``,
validation and start-up excluded); the driver prints datapoints per second and the 2-vs-1
ratio. On GPUs pass ``--gpus N`` to compare 1 with N processes (NCCL, one GPU each).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "binarized_mnist.npz"


def _data(num: int):
    import numpy as np
    import torch

    if MNIST.exists():
        return torch.from_numpy(np.load(MNIST)["train"][:num]).float(), "binarized MNIST"
    import ppvae

    return ppvae.data.load_dataset("digits", binarize="static").train[:num], "digits"


def worker(args) -> None:
    import torch

    import ppvae
    from ppvae import distributed as ddp
    from ppvae.models import VAE

    torch.set_num_threads(args.threads)
    ddp.init_from_env()
    x, name = _data(args.num)
    torch.manual_seed(0)
    vae = VAE(x.shape[1], 50, (200,), name="bench_vae")
    per_rank = args.batch // ddp.world_size()
    r = ppvae.fit(vae, vae.guide, x, epochs=args.epochs, batch_size=per_rank, lr=1e-3, seed=0,
                  quiet=True, device="cuda" if args.gpus else "cpu")
    if ddp.is_main():
        print(json.dumps({"ranks": ddp.world_size(), "data": name, "rows": x.shape[0],
                          "steps_per_second": r.steps_per_second,
                          "rows_per_second": r.steps_per_second * args.batch,
                          "train_elbo": r.train_objective[-1]}), flush=True)
    ddp.shutdown()


def _launch(procs: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
           "--master_addr", "127.0.0.1", "--master_port", str(port), __file__, "--worker",
           "--rows", str(args.num), "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--threads", str(args.threads), "--gpus", str(args.gpus)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", dest="num", type=int, default=10000, help="training rows")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="effective (global) batch")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--gpus", type=int, default=0, help="compare 1 with this many GPUs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    many = args.gpus or 2
    one, two = _launch(1, args), _launch(many, args)
    print(f"data: {one['data']}, {one['rows']} rows, {args.epochs} epochs, effective batch "
          f"{args.batch}, {args.threads} thread(s) per process, "
          f"{'GPU' if args.gpus else 'CPU (gloo)'}")
    for r in (one, two):
        print(f"  {r['ranks']} process(es): {r['rows_per_second']:9.0f} rows/s "
              f"({r['steps_per_second']:.1f} steps/s), final train ELBO {r['train_elbo']:.2f}")
    print(f"throughput ratio {many} vs 1 processes: "
          f"{two['rows_per_second'] / one['rows_per_second']:.2f}x")


if __name__ == "__main__":
    main()
