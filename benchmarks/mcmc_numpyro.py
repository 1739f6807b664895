"""NumPyro's NUTS on the posteriors of ``benchmarks/mcmc_mnist.py``'s VAE: a further baseline.

Not a ppvae dependency: run it with a Python that has ``numpyro`` and ``arviz`` (a separate
virtual environment), on the decoder weights and test images that ``mcmc_mnist.py
--export-npz PATH`` writes. The model is the VAE's, written in NumPyro: z_n ~ N(0, I), x_n ~
Bernoulli(logits = decoder(z_n)) with the same weights, for all N images in one plate, so NUTS
samples the joint N * K-dimensional posterior with one step size and diagonal mass matrix per
chain, as the joint Pyro NUTS run does. Chains: ``--chain-method vectorized`` (all chains in one
jitted program) or ``sequential``. XLA runs on one thread (``XLA_FLAGS`` set below, before jax
is imported). ESS and gradient counts as in ``mcmc_mnist.py``: ArviZ bulk (and tail) ESS, the
minimum over a datapoint's coordinates, summed over datapoints; leapfrog steps from NumPyro's
``num_steps`` field, warm-up included. The first run includes jit compilation; later rounds in
the same process reuse it (``--rounds``).

    XLA_FLAGS=... python benchmarks/mcmc_numpyro.py --npz mcmc_mnist.npz --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS


def model(params, x):
    """The VAE's model: z_n ~ N(0, I_K), x_n ~ Bernoulli(logits = decoder(z_n))."""
    w0, b0, w1, b1 = params
    n, k = x.shape[0], w0.shape[1]
    with numpyro.plate("data", n):
        z = numpyro.sample("z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))  # [N, K]
        logits = jax.nn.relu(z @ w0.T + b0) @ w1.T + b1  # [N, D]
        numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def run_once(args, params, x, seed: int):
    """One NUTS run; returns seconds, per-datapoint bulk and tail ESS, gradients, max R-hat."""
    kernel = NUTS(model, target_accept_prob=0.8, dense_mass=False)
    mcmc = MCMC(kernel, num_warmup=args.warmup, num_samples=args.samples,
                num_chains=args.chains, chain_method=args.chain_method, progress_bar=False)
    t = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(seed), params, x, extra_fields=("num_steps",),
                collect_warmup=True)
    warm_steps = np.asarray(mcmc.get_extra_fields()["num_steps"]).sum()
    mcmc.run(mcmc.post_warmup_state.rng_key, params, x, extra_fields=("num_steps",))
    z = np.asarray(mcmc.get_samples(group_by_chain=True)["z"])  # [C, S, N, K]
    z.sum()  # results are ready (jax is asynchronous)
    secs = time.perf_counter() - t
    steps = warm_steps + np.asarray(mcmc.get_extra_fields()["num_steps"]).sum()
    idata = az.from_dict(posterior={"z": z}, dims={"z": ["datapoint", "latent_dim"]})
    bulk = az.ess(idata, method="bulk")["z"].values.min(axis=1)  # [N]
    tail = az.ess(idata, method="tail")["z"].values.min(axis=1)
    rhat = float(az.rhat(idata)["z"].values.max())
    return secs, bulk, tail, float(steps), rhat


def main(argv=None) -> None:
    """Parse the arguments and run the rounds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", required=True, help="written by mcmc_mnist.py --export-npz")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--chain-method", default="vectorized",
                    choices=["vectorized", "sequential"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    d = np.load(args.npz)
    params = tuple(jnp.asarray(d[k]) for k in ("w0", "b0", "w1", "b1"))
    x = jnp.asarray(d["x"])
    print(f"numpyro {numpyro.__version__}, jax {jax.__version__}, {jax.devices()}, XLA_FLAGS "
          f"{os.environ['XLA_FLAGS']}; {args.chains} chains ({args.chain_method}) x "
          f"({args.warmup} warm-up + {args.samples} draws), {x.shape[0]} datapoints")
    rates, effs, tails = [], [], []
    for rnd in range(args.rounds):
        secs, bulk, tail, steps, rhat = run_once(args, params, x, args.seed + rnd)
        # steps are summed over chains: every step moves all datapoints of one chain
        rates.append(bulk.sum() / secs)
        effs.append(1000 * bulk.mean() / steps)
        tails.append(1000 * tail.mean() / steps)
        print(f"round {rnd + 1}{' (jit compile included)' if rnd == 0 else ''}: {secs:.1f} s, "
              f"ESS/s {rates[-1]:.1f}, ESS per 1000 grads {effs[-1]:.1f} (tail {tails[-1]:.1f}),"
              f" grads/datapoint {steps:.0f}, median ESS {np.median(bulk):.0f}, max R-hat "
              f"{rhat:.3f}", flush=True)
    later = rates[1:] or rates
    print(f"ESS/s after the first round: median {statistics.median(later):.1f} "
          f"[{min(later):.1f}-{max(later):.1f}]")


if __name__ == "__main__":
    main()
