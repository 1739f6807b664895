"""Batched HMC against one joint Pyro NUTS run and a loop of NUTS runs, on a VAE's posteriors.

The same trained VAE (``--checkpoint``: train once) and the same ``--num-test`` seeded random
binarized-MNIST test images; every contender runs ``--chains`` chains of ``--warmup`` warm-up
and ``--samples`` kept iterations, on ``--threads`` threads (1 by default):

* ``ppvae.hmc``: all datapoints at once, ``u [chains, datapoints, latent]`` in one tensor,
  with its defaults (or ``--hmc-options``), and with its defaults before issue 21 (diagonal
  mass matrices, 1..10 leapfrog steps);
* joint NUTS: what a Pyro user writes, ``MCMC(NUTS(vae, adapt_mass_matrix=True,
  full_mass=False), num_chains=C).run(x)`` on all the images: one ``N * K``-dimensional
  posterior with one step size and diagonal mass matrix per chain (Pyro draws the chains one
  after another when it has fewer free CPUs than chains, as on this machine);
  ``--nuts-jit`` adds the same with ``jit_compile=True``;
* NUTS per datapoint: ``ppvae.nuts`` on ``--loop-datapoints`` images, one run each (the weak
  baseline), extrapolated per datapoint.

ESS is ArviZ's bulk ESS, the minimum over a datapoint's latent coordinates, summed over the
datapoints (for the joint run, the same per-datapoint ESS of its coordinates). Gradient
evaluations are counted where they happen (``Potential.target_and_grad`` for ``ppvae.hmc``,
``pyro.ops.integrator.potential_grad`` for Pyro, warm-up included) and reported per datapoint
and chain; "ESS per 1000 gradients" is a datapoint's ESS per 1000 gradient evaluations of its
posterior (summed over chains), a machine-independent efficiency; the same for the tail ESS
(quantiles: a sampler whose trajectories are antithetic gains bulk ESS, not tail ESS).
Contenders run in a shuffled
order each round; the ratios are paired per round; medians with the min-max spread.

    python benchmarks/mcmc_mnist.py --data binarized_mnist.npz --checkpoint vae.pt --rounds 3
"""

from __future__ import annotations

import argparse
import ast
import platform
import random
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.ops.integrator as integrator
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc import hmc as pyro_hmc
from pyro.infer.mcmc import nuts as pyro_nuts
from reference_mnist import train_vae

import ppvae
from ppvae.core.potential import Potential
from ppvae.data.binarized_mnist import read_npz

OLD = "ppvae.hmc, diagonal, 1..10 steps"  # hmc's defaults before issue 21
OLD_OPTIONS = {"dense_mass": False, "num_leapfrog": 10}


class _Counter:
    """Counts gradient evaluations (calls of the wrapped functions) while installed."""

    def __init__(self):
        self.calls, self.rows = 0, 0

    def install(self):
        counter, orig_pg, orig_tg = self, integrator.potential_grad, Potential.target_and_grad

        def potential_grad(fn, z):
            counter.calls += 1
            return orig_pg(fn, z)

        def target_and_grad(pot, u):
            counter.calls += 1
            counter.rows += u.shape[0]  # chains evaluated in this call
            return orig_tg(pot, u)

        for mod in (integrator, pyro_hmc, pyro_nuts):
            mod.potential_grad = potential_grad
        Potential.target_and_grad = target_and_grad  # type: ignore[method-assign]

        def restore():
            for mod in (integrator, pyro_hmc, pyro_nuts):
                mod.potential_grad = orig_pg
            Potential.target_and_grad = orig_tg  # type: ignore[method-assign]

        return restore


def _diag(z: torch.Tensor):
    """ArviZ diagnostics of draws ``z [C, S, N, K]``."""
    return ppvae.diagnostics(ppvae.to_inference_data({"z": z}))


def _run_hmc(args, vae, x, options=None):
    c = _Counter()
    restore = c.install()
    t = time.perf_counter()
    try:
        res = ppvae.hmc(vae, x, num_chains=args.chains, num_warmup=args.warmup,
                        num_samples=args.samples, diagnose=False, log_likelihood=False,
                        progress=False, **(args.hmc_options if options is None else options))
    finally:
        restore()
    secs = time.perf_counter() - t
    d = _diag(res.samples["z"])
    grads = c.rows * np.ones(x.shape[0])  # every call moves all chains of every datapoint
    return secs, d.ess_bulk.min(axis=1), d.ess_tail.min(axis=1), grads, float(d.rhat.max())


def _run_joint_nuts(args, vae, x, jit=False):
    c = _Counter()
    restore = c.install()
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():  # "num_chains=4 is more than available_cpu=1"
            warnings.simplefilter("ignore", UserWarning)
            kernel = NUTS(vae, adapt_mass_matrix=True, full_mass=False, target_accept_prob=0.8,
                          max_plate_nesting=1, jit_compile=jit, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=args.samples, warmup_steps=args.warmup,
                        num_chains=args.chains, disable_progbar=True)
            vae.eval()
            mcmc.run(x)
    finally:
        restore()
    secs = time.perf_counter() - t
    z = mcmc.get_samples(group_by_chain=True)["z"].detach()  # [C, S, N, K]
    if z.dim() == 3:  # one chain
        z = z.unsqueeze(0)
    d = _diag(z)
    return (secs, d.ess_bulk.min(axis=1), d.ess_tail.min(axis=1), c.calls * np.ones(x.shape[0]),
            float(d.rhat.max()))


def _run_loop(args, vae, x):
    n = min(args.loop_datapoints, x.shape[0])
    secs, ess, tail, grads, rhat = 0.0, [], [], [], 0.0
    for i in range(n):  # the unbatched way: one NUTS run per datapoint
        c = _Counter()
        restore = c.install()
        t = time.perf_counter()
        try:
            r = ppvae.nuts(vae, x[i : i + 1], num_chains=args.chains, num_warmup=args.warmup,
                           num_samples=args.samples, diagnose=False, log_likelihood=False,
                           progress=False)
        finally:
            restore()
        secs += time.perf_counter() - t
        d = _diag(r.samples["z"])
        ess.append(d.ess_bulk.min(axis=1))
        tail.append(d.ess_tail.min(axis=1))
        grads.append(c.calls)
        rhat = max(rhat, float(d.rhat.max()))
    return secs, np.concatenate(ess), np.concatenate(tail), np.array(grads, dtype=float), rhat


def _med(values) -> str:
    return (f"{statistics.median(values):.4g} [{min(values):.4g}-{max(values):.4g}]"
            if len(values) > 1 else f"{values[0]:.4g}")


def _report(args, rows: dict[str, list[dict]]) -> None:
    print(f"\n{args.rounds} rounds, {args.chains} chains x ({args.warmup} warm-up + "
          f"{args.samples} draws); torch threads {torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}, {_cpu_name()}; hmc options "
          f"{args.hmc_options or 'defaults'}; median [min-max] over rounds")
    print("| sampler | datapoints | seconds | ESS/datapoint (median) | ESS/s (per datapoint run) "
          "| grads/datapoint | ESS per 1000 grads | tail ESS per 1000 grads | max R-hat |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {rs[0]['n']} | {_med([r['secs'] for r in rs])} | "
              f"{_med([r['ess_med'] for r in rs])} | {_med([r['rate'] for r in rs])} | "
              f"{_med([r['grads'] for r in rs])} | {_med([r['eff'] for r in rs])} | "
              f"{_med([r['tail_eff'] for r in rs])} | "
              f"{_med([r['rhat'] for r in rs])} |")
    base = rows.get("ppvae.hmc")
    if base:
        for name, rs in rows.items():
            if name != "ppvae.hmc":
                ratio = [b["rate"] / r["rate"] for b, r in zip(base, rs, strict=True)]
                eff = [b["eff"] / r["eff"] for b, r in zip(base, rs, strict=True)]
                print(f"ppvae.hmc / {name}: ESS/s {_med(ratio)}x, ESS per gradient {_med(eff)}x "
                      "(paired per round)")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def run(args, vae, x) -> None:
    """The rounds of the comparison, printed as they finish and then summarized."""
    contenders = {"ppvae.hmc": _run_hmc, OLD: lambda a, v, xx: _run_hmc(a, v, xx, OLD_OPTIONS),
                  "joint NUTS": _run_joint_nuts, "NUTS per datapoint": _run_loop}
    if args.nuts_jit:
        contenders["joint NUTS (jit)"] = lambda a, v, xx: _run_joint_nuts(a, v, xx, jit=True)
    contenders = {k: v for k, v in contenders.items() if k in args.contenders}
    rows: dict[str, list[dict]] = {k: [] for k in contenders}
    order, failed = list(contenders), set[str]()
    for rnd in range(args.rounds):
        random.Random(args.seed + rnd).shuffle(order)
        for name in order:
            if name in failed:
                continue
            pyro.set_rng_seed(args.seed + rnd)
            try:
                secs, ess, tail, grads, rhat = contenders[name](args, vae, x)
            except RuntimeError as e:  # Pyro's jit_compile on this torch
                print(f"round {rnd + 1} {name}: failed, {type(e).__name__}: {e}", flush=True)
                failed.add(name)
                continue
            n = len(ess)
            r = {"n": n, "secs": secs, "ess_med": float(np.median(ess)),
                 "rate": float(ess.sum() / secs), "grads": float(np.mean(grads)),
                 "eff": float(1000 * np.mean(ess / grads)),
                 "tail_eff": float(1000 * np.mean(tail / grads)), "rhat": rhat}
            rows[name].append(r)
            print(f"round {rnd + 1} {name}: {n} datapoints in {secs:.1f} s, ESS/s "
                  f"{r['rate']:.1f}, ESS per 1000 grads {r['eff']:.1f} (tail "
                  f"{r['tail_eff']:.1f}), grads/datapoint "
                  f"{r['grads']:.0f}, median ESS {r['ess_med']:.0f}, max R-hat {rhat:.3f}",
                  flush=True)
    _report(args, {k: v for k, v in rows.items() if v})


def main(argv=None) -> None:
    """Parse the arguments, load or train the VAE, run the rounds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz")
    ap.add_argument("--checkpoint", default=None, help="VAE state dict to load or write")
    ap.add_argument("--train-size", type=int, default=50000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--hidden", type=int, nargs="+", default=[200])
    ap.add_argument("--num-test", type=int, default=100)
    ap.add_argument("--loop-datapoints", type=int, default=3)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--hmc-options", type=ast.literal_eval, default={},
                    help="ppvae.hmc options as a Python dict literal (default: its defaults), "
                    "e.g. \"{'dense_mass': False, 'num_leapfrog': 10}\"")
    ap.add_argument("--contenders", nargs="+",
                    default=["ppvae.hmc", OLD, "joint NUTS", "NUTS per datapoint",
                             "joint NUTS (jit)"],
                    help="a subset of the default names")
    ap.add_argument("--nuts-jit", action="store_true",
                    help="also joint NUTS with jit_compile=True (fails on torch 2.15 with pyro "
                    "1.9.2: 'Unsupported value kind: Tensor'; reported, then dropped)")
    ap.add_argument("--export-npz", default=None,
                    help="write the decoder weights and test images for mcmc_numpyro.py, exit")
    ap.add_argument("--rounds", type=int, default=3)
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
    if args.export_npz:
        sd = {k: v.numpy() for k, v in vae.decoder.state_dict().items()}
        np.savez(args.export_npz, w0=sd["0.weight"], b0=sd["0.bias"], w1=sd["2.weight"],
                 b1=sd["2.bias"], x=test.numpy())
        print(f"wrote {args.export_npz}")
        return
    run(args, vae, test)


if __name__ == "__main__":
    main()
