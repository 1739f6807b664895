"""Amortization-gap decomposition on statically binarized MNIST (Cremer, Li and Duvenaud 2018).

Trains (or loads) a VAE with a diagonal-Gaussian encoder, then an IAF flow encoder on the same
(frozen) decoder, and prints the decomposition of ppvae.gaps for the test images: log p-hat(x)
by IWAE from the best local q*, ELBO[q*] by per-datapoint VI (fit_local), ELBO[q], and the
approximation / amortization gaps, with the time of every stage. Then, in the same process, it
times vectorized fit_local against a Python loop of per-datapoint Pyro SVI (same model, steps,
particles, optimizer and initialization) and prints the speed ratio per datapoint.

    python benchmarks/gaps_mnist.py --data ../shared/data/binarized_mnist.npz

Every size is an option; see --help. The defaults are the full configuration (1000 test
images); docs/performance.md records the reduced configuration that was run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch.distributions import constraints

import ppvae
import ppvae.core.device
from ppvae.guides import FlowEncoder
from ppvae.models import VAE


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/binarized_mnist.npz",
                   help="binarized MNIST .npz (arrays train/valid/test) or .amat folder")
    p.add_argument("--num-test", type=int, default=1000, help="test images (seeded subset)")
    p.add_argument("--train-size", type=int, default=50000, help="training images used")
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--epochs", type=int, default=50, help="VAE (diagonal encoder) epochs")
    p.add_argument("--flow-epochs", type=int, default=20, help="flow encoder epochs")
    p.add_argument("--num-flows", type=int, default=2)
    p.add_argument("--local-steps", type=int, default=1000)
    p.add_argument("--particles", type=int, default=8, help="fit_local particles per step")
    p.add_argument("--elbo-samples", type=int, default=1000)
    p.add_argument("--iwae-k", type=int, default=5000)
    p.add_argument("--loop-subset", type=int, default=20,
                   help="datapoints fitted one by one with Pyro SVI for the speed ratio")
    p.add_argument("--speed-steps", type=int, default=200, help="steps in the speed comparison")
    p.add_argument("--speed-particles", type=int, nargs="+", default=None,
                   help="particle counts for the speed comparison (default: --particles)")
    p.add_argument("--speed-only", action="store_true",
                   help="train (or load) the networks, then only the speed comparison")
    p.add_argument("--checkpoint", default=None, help="save/load trained networks here")
    p.add_argument("--out", default="gaps_mnist", help="prefix for .md, .json and .png")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def train(args, data, device):
    """The VAE and both encoders, trained here or loaded from --checkpoint."""
    d = data.data_dim
    vae = VAE(d, args.latent, hidden=tuple(args.hidden), name="vae").to(device)
    flow = FlowEncoder(d, args.latent, hidden=tuple(reversed(args.hidden)),
                       num_flows=args.num_flows, name="flow_encoder").to(device)
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=device)
        vae.load_state_dict(state["vae"])
        flow.load_state_dict(state["flow"])
        return vae, flow, [("load checkpoint", 0.0)]
    g = torch.Generator().manual_seed(args.seed)
    train_x = data.train[torch.randperm(len(data.train), generator=g)[: args.train_size]]
    times = []
    t = time.perf_counter()
    r = ppvae.fit(vae, vae.guide, train_x, valid=data.valid[:2000], epochs=args.epochs,
                  batch_size=128, lr=1e-3, seed=args.seed, device=device, quiet=True)
    times.append((f"train VAE + diagonal encoder ({r.epochs} epochs)", time.perf_counter() - t))
    print(f"VAE: valid ELBO {r.valid_elbo[-1]:.2f} after {r.epochs} epochs", flush=True)
    t = time.perf_counter()
    frozen = poutine.block(vae, hide_types=["param"])  # the flow encoder trains alone
    r = ppvae.fit(frozen, flow, train_x, valid=data.valid[:2000], epochs=args.flow_epochs,
                  batch_size=128, lr=1e-3, seed=args.seed, device=device, quiet=True)
    times.append((f"train flow encoder ({r.epochs} epochs)", time.perf_counter() - t))
    print(f"flow encoder: valid ELBO {r.valid_elbo[-1]:.2f}", flush=True)
    if ckpt is not None:
        torch.save({"vae": vae.state_dict(), "flow": flow.state_dict()}, ckpt)
    return vae, flow, times


@contextlib.contextmanager
def frozen_decoder(vae):
    """The VAE's parameters without gradients inside the block, as a competent user freezes them.

    Pyro's SVI calls ``loss.backward()``, which would otherwise also compute (and discard) the
    decoder's weight gradients: half again the backward pass's matrix products.
    """
    params = list(vae.parameters())
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def loop_svi(vae, x, steps: int, particles: int) -> float:
    """Seconds for per-datapoint Pyro SVI over the rows of x, one datapoint at a time."""
    with frozen_decoder(vae):
        return _loop_svi(vae, x, steps, particles)


def _loop_svi(vae, x, steps: int, particles: int) -> float:
    frozen = poutine.block(vae, hide_types=["param"])
    with torch.no_grad():
        q0 = vae.guide.distribution(x).base_dist
    start = time.perf_counter()
    for i in range(x.shape[0]):  # the baseline: a Python loop over datapoints
        def guide(xi, i=i):
            loc = pyro.param(f"loop_loc_{i}", q0.loc[i : i + 1].clone())
            scale = pyro.param(f"loop_scale_{i}", q0.scale[i : i + 1].clone(),
                               constraint=constraints.positive)
            with pyro.plate("data", 1):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

        optim = ClippedAdam({"lr": 0.1, "lrd": 1e-3 ** (1 / steps)})
        elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True,
                          max_plate_nesting=1)
        svi = SVI(frozen, guide, optim, elbo)
        for _ in range(steps):
            svi.step(x[i : i + 1])
    return time.perf_counter() - start


def vectorized_svi(vae, x, steps: int, particles: int) -> float:
    """Seconds for one Pyro SVI over all rows, per-datapoint parameters in the data plate.

    The strongest thing a Pyro user writes without ppvae: one guide whose loc and scale are
    [N, K] parameters inside ``pyro.plate("data", N)``, one vectorized ``Trace_ELBO``, the
    decoder's parameters frozen (no weight gradients).
    """
    with frozen_decoder(vae):
        return _vectorized_svi(vae, x, steps, particles)


def _vectorized_svi(vae, x, steps: int, particles: int) -> float:
    frozen = poutine.block(vae, hide_types=["param"])
    with torch.no_grad():
        q0 = vae.guide.distribution(x).base_dist
    pyro.get_param_store().clear()  # its params are fresh (the VAE's modules are not params here)

    def guide(x):
        loc = pyro.param("vec_loc", q0.loc.clone())
        scale = pyro.param("vec_scale", q0.scale.clone(), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    optim = ClippedAdam({"lr": 0.1, "lrd": 1e-3 ** (1 / steps)})
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(frozen, guide, optim, elbo)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(x)
    return time.perf_counter() - start


def hand_vectorized(vae, x, steps: int, particles: int) -> float:
    """Seconds for the same optimization written by hand in torch: the floor, no Pyro at all.

    [P, N, K] reparameterized draws, the decoder's Bernoulli log-likelihood, the standard
    normal prior and the Gaussian entropy term; torch Adam with the same decaying rate.
    """
    with torch.no_grad():
        q0 = vae.guide.distribution(x).base_dist
    loc = q0.loc.clone().requires_grad_()
    log_scale = q0.scale.log().clone().requires_grad_()
    opt = torch.optim.Adam([loc, log_scale], lr=0.1)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, 1e-3 ** (1 / steps))
    with frozen_decoder(vae):
        return _hand_loop(vae, x, loc, log_scale, opt, decay, steps, particles)


def _hand_loop(vae, x, loc, log_scale, opt, decay, steps: int, particles: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        eps = torch.randn(particles, *loc.shape)
        z = loc + log_scale.exp() * eps  # [P, N, K]
        logits = vae.decoder(z)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (z ** 2).sum(-1)
        log_q = -0.5 * (eps ** 2).sum(-1) - log_scale.sum(-1)
        loss = -(log_lik + log_prior - log_q).mean(0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return time.perf_counter() - start


def speed(args, vae, x, particles: int):
    m = min(args.loop_subset, x.shape[0])
    common = dict(num_steps=args.speed_steps, num_particles=particles, window=10**9,
                  gradient="reparam")
    with pyro.validation_enabled(False):
        t_loop = loop_svi(vae, x[:m], args.speed_steps, particles)
    t = time.perf_counter()
    ppvae.fit_local(vae, x[:m], "diag", vae.guide, **common)
    t_sub = time.perf_counter() - t
    t = time.perf_counter()
    ppvae.fit_local(vae, x, "diag", vae.guide, **common)
    t_all = time.perf_counter() - t
    n = x.shape[0]
    with pyro.validation_enabled(False):
        t_vec = vectorized_svi(vae, x, args.speed_steps, particles)
    t_hand = hand_vectorized(vae, x, args.speed_steps, particles)
    print(f"\nSpeed, {args.speed_steps} steps, {particles} particles, diagonal q*, "
          f"{torch.get_num_threads()} thread(s):")
    print(f"  Pyro SVI, Python loop over {m} datapoints: {t_loop:.1f} s "
          f"({1e3 * t_loop / m:.0f} ms per datapoint)")
    print(f"  fit_local on the same {m}: {t_sub:.2f} s -> {t_loop / t_sub:.1f}x")
    print(f"  fit_local on all {n}: {t_all:.1f} s ({1e3 * t_all / n:.1f} ms per datapoint) -> "
          f"{(t_loop / m) / (t_all / n):.0f}x per datapoint")
    print(f"  one vectorized Pyro SVI (params in the plate) on all {n}: {t_vec:.1f} s -> "
          f"fit_local is {t_vec / t_all:.2f}x faster")
    print(f"  hand-written vectorized torch on all {n}: {t_hand:.1f} s -> fit_local takes "
          f"{t_all / t_hand:.2f}x the floor")
    return t_loop / m, t_all / n


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ppvae.core.device.resolve_device()
    pyro.set_rng_seed(args.seed)
    data = ppvae.data.load_dataset("binarized-mnist", path=args.data, download=False,
                                   device=device)
    g = torch.Generator().manual_seed(args.seed)
    x = data.test[torch.randperm(len(data.test), generator=g)[: args.num_test]]  # [N, 784]
    print(f"{data}; {args.num_test} test images; device {device}", flush=True)
    vae, flow, times = train(args, data, device)
    if args.speed_only:
        for particles in args.speed_particles or [args.particles]:
            speed(args, vae, x, particles)
        return
    report = ppvae.gaps(vae, {"diagonal": vae.guide, "flow": flow}, x, log_px="iwae",
                        local_steps=args.local_steps, num_samples=args.elbo_samples,
                        local_options={"num_particles": args.particles},
                        log_px_options={"k": args.iwae_k})
    report = report._replace(timings=(*times, *report.timings))
    print("\n" + report.to_markdown())
    Path(f"{args.out}.md").write_text(report.to_markdown())
    Path(f"{args.out}.json").write_text(report.to_json())
    report.plot(f"{args.out}.png")
    for particles in args.speed_particles or [args.particles]:
        speed(args, vae, x, particles)


if __name__ == "__main__":
    main()
