"""Per-step cost of ppvae.fit against a hand-written PyTorch training loop (and Pyro's SVI).

The same VAE (784-400-50, Bernoulli likelihood, the MLP encoder of ``models.VAE``), batch,
optimizer (one Adam over all parameters) and device in one process. The hand-written loop
computes the single-sample reparameterized ELBO from the networks with formulas (no Pyro);
ppvae.fit runs its trace-based loop with the minibatch scaled to the data set, eagerly and with
``jit=True`` (the objective captured as a graph of tensor operations, :mod:`ppvae.capture`;
timed on its second epoch, after the capture); Pyro's
``SVI.step`` with ``Trace_ELBO`` is shown for reference. Rounds are interleaved (the order
rotates) and the median ms/step is reported; the ratios are paired within each round (median
[min-max] over rounds), since the speed of a shared CPU drifts.

    python benchmarks/svi_overhead.py --batches 16 128 1024 --steps 150 --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from torch.nn import functional as F

import ppvae
import ppvae.core.device
from ppvae.models import VAE
from ppvae.train.settings import default_adam


def hand_written(vae: VAE, x: torch.Tensor, batch: int, steps: int) -> float:
    params = list(vae.parameters())
    opt = default_adam(params, lr=1e-3)  # the optimizer fit uses: fused Adam
    n = x.shape[0]
    g = torch.Generator(device=x.device).manual_seed(0)
    perm = torch.randperm(n, generator=g, device=x.device)
    t0 = time.perf_counter()
    for b in range(steps):
        xb = x[perm[b * batch:(b + 1) * batch]]
        loc, raw = vae.guide.net(xb).chunk(2, -1)  # [B, K]
        scale = F.softplus(raw) + vae.guide.min_scale
        eps = torch.randn_like(loc)
        z = loc + scale * eps  # [B, K]
        logits = vae.decoder(z)  # [B, D]
        log_lik = -F.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1)
        log_prior = (-0.5 * z.pow(2)).sum(-1)  # constants cancel with log q's
        log_q = (-0.5 * eps.pow(2) - scale.log()).sum(-1)
        loss = -(n / xb.shape[0]) * (log_lik + log_prior - log_q).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    float(loss.detach())  # wait for the device
    return (time.perf_counter() - t0) / steps


def with_fit(vae: VAE, x: torch.Tensor, batch: int, steps: int) -> float:
    r = ppvae.fit(vae, vae.guide, x[: batch * steps], epochs=1, batch_size=batch, lr=1e-3,
                  quiet=True, device=x.device, check_every=100)
    return 1.0 / r.steps_per_second


def with_fit_jit(vae: VAE, x: torch.Tensor, batch: int, steps: int) -> float:
    """fit(jit=True): the second epoch's time per step (the first captures and verifies)."""
    seconds = []
    ppvae.fit(vae, vae.guide, x[: batch * steps], epochs=2, batch_size=batch, lr=1e-3,
              quiet=True, device=x.device, check_every=100, jit=True,
              on_epoch=lambda **e: seconds.append(e["seconds"]))
    return seconds[-1] / steps


def with_pyro_svi(vae: VAE, x: torch.Tensor, batch: int, steps: int) -> float:
    n = x.shape[0]
    model_scaled = pyro.poutine.scale(vae, n / batch)
    guide_scaled = pyro.poutine.scale(vae.guide, n / batch)
    svi = pyro.infer.SVI(model_scaled, guide_scaled, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO())
    svi.step(x[:batch])  # parameters created outside the timing
    t0 = time.perf_counter()
    for b in range(steps):
        svi.step(x[b * batch:(b + 1) * batch])
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 128, 1024])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation", action="store_true",
                    help="keep Pyro validation on globally (default off, as in production)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(args.validation)
    dev = ppvae.core.device.resolve_device(args.device)
    print(f"device {dev}, {args.threads} thread(s), Pyro validation {args.validation}, "
          f"{args.steps} steps x {args.rounds} interleaved rounds, median ms/step")
    print("| batch | hand-written | ppvae.fit | fit(jit=True) | Pyro SVI | fit / hand "
          "| jit / hand | SVI / hand |")
    print("|---|---|---|---|---|---|---|---|")
    runs = (("hand", hand_written), ("fit", with_fit), ("jit", with_fit_jit),
            ("svi", with_pyro_svi))
    for batch in args.batches:
        x = torch.bernoulli(torch.full((batch * args.steps, 784), 0.2)).to(dev)
        times = {key: [] for key, _ in runs}
        for r in range(args.rounds):
            k = r % len(runs)
            for key, fn in runs[k:] + runs[:k]:  # rotate the order across rounds
                pyro.clear_param_store()
                torch.manual_seed(r)
                vae = VAE(784, 50, (400,), name="bench_vae").to(dev)
                fn(vae, x, batch, min(args.steps, 10))  # warm-up
                pyro.clear_param_store()
                times[key].append(fn(vae, x, batch, args.steps) * 1e3)
        med = {key: f"{statistics.median(v):.2f}" for key, v in times.items()}
        ratios = []
        for key in ("fit", "jit", "svi"):  # paired within a round: the machine's speed drifts
            r = sorted(a / b for a, b in zip(times[key], times["hand"], strict=True))
            ratios.append(f"{statistics.median(r):.2f} [{r[0]:.2f}-{r[-1]:.2f}]")
        print(f"| {batch} | {med['hand']} | {med['fit']} | {med['jit']} | {med['svi']} | "
              + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
