"""How many datapoint-particle pairs one chunk of ``ppvae.log_weights`` should hold, measured.

``log_weights`` draws its particles in chunks, each one vectorized evaluation of the guide and
the model over ``chunk * N`` datapoint-particle pairs. Too small a chunk pays Pyro's per-trace
overhead too often; too large a one spills out of the CPU's caches (or, on a GPU, is what keeps
it busy). This script times IWAE_k on MNIST-sized test images for chunks of 2^10 ... 2^16 pairs,
in rounds that visit every size once in a shuffled order (so drift in the machine's speed hits
all sizes alike), and prints the median time of each, its spread, and its ratio to the best.
The default (``ppvae.core.weights.default_chunk_size``, chosen per device from this table) is
timed alongside.

    python benchmarks/chunk_size.py [--data ../shared/data/binarized_mnist.npz] [--device cuda]

Threads: 1 unless ``--threads`` (the ratios are what matters; state the thread count with them).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from pathlib import Path

import torch

import ppvae
from ppvae.core.weights import default_chunk_size
from ppvae.models import VAE


def _images(path: str | None, n: int, device: torch.device) -> torch.Tensor:
    if path and Path(path).exists():
        from ppvae.data.binarized_mnist import read_npz

        test = read_npz(path)[2]
        rows = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(0))[:n]
        return torch.as_tensor(test[rows.numpy()], dtype=torch.float32).to(device)
    g = torch.Generator().manual_seed(0)  # stand-in with MNIST's shape and pixel density
    return torch.bernoulli(torch.full((n, 784), 0.13), generator=g).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/binarized_mnist.npz")
    p.add_argument("--num-data", type=int, default=500)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = _images(args.data, args.num_data, device)
    vae = VAE(x.shape[1], 50, (400,), name="chunk_vae").to(device)  # 784-400-50
    default = default_chunk_size(x.shape[0], device, x[0].numel())
    sizes = sorted({max(1, 2**e // x.shape[0]) for e in range(10, 17)} | {default})
    times: dict[int, list[float]] = {s: [] for s in sizes}
    warnings.simplefilter("ignore")  # an untrained VAE's weights: k-hat warnings, not timed
    with torch.no_grad():
        ppvae.iwae(vae, vae.guide, x, k=8, chunk_size=8)  # warm-up
        for _ in range(args.rounds):
            order = sizes[:]
            random.Random(len(times[sizes[0]])).shuffle(order)
            for s in order:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                ppvae.iwae(vae, vae.guide, x, k=args.k, chunk_size=s)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[s].append(time.perf_counter() - start)
    best = min(statistics.median(t) for t in times.values())
    print(f"IWAE_{args.k} of {x.shape[0]} images, VAE 784-400-50, {device}, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds; median [min, max] s")
    print("| particles per chunk | pairs per chunk | time (s) | ratio to best |")
    print("|---|---|---|---|")
    for s in sizes:
        t = times[s]
        mark = " (default)" if s == default else ""
        print(f"| {s}{mark} | {s * x.shape[0]} | {statistics.median(t):.2f} "
              f"[{min(t):.2f}, {max(t):.2f}] | {statistics.median(t) / best:.2f} |")


if __name__ == "__main__":
    main()
