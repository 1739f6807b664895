"""AIS settings on a 2-D latent VAE against log p(x) by quadrature: how the defaults were chosen.

The model is the one of ``tests/infer/test_ais_defaults.py``: a VAE (64-128-2, Bernoulli pixels)
trained for 30 epochs on the binarized 8x8 digits, whose log p(x) per test digit is computed by
quadrature on a grid (to about 1e-3 nats). Every contender runs in this one process, one thread,
on the same digits; per contender the table gives the per-datapoint standard error (median, 90th
percentile, max over digits), the error of the mean against quadrature (mean of AIS - exact, with
its s.e.), the largest |AIS - exact| / s.e., the mean acceptance and the wall time.

    python benchmarks/ais_defaults.py [--num-data 50] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path

import pyro
import torch

from ppvae.infer.ais import ais

ROOT = Path(__file__).resolve().parents[1]
OLD = dict(num_steps=500, num_chains=16, num_leapfrog=10)  # the defaults before issue 16
CONTENDERS: list[tuple[dict, bool]] = [  # options (over the defaults), from the encoder
    (OLD, False),
    (dict(num_steps=500, num_chains=16, num_leapfrog=2), False),
    (dict(num_steps=1000, num_chains=16), False),
    (dict(num_steps=1000, num_chains=16, kind="linear"), False),
    (dict(num_steps=1000, num_chains=128), False),
    (dict(num_steps=2000, num_chains=128), False),
    (dict(num_steps=2000, num_chains=256), False),
    (dict(num_steps=4000, num_chains=128), False),
    (OLD, True),
    (dict(num_steps=300, num_chains=32), True),
    (dict(num_steps=2000, num_chains=128), True),
    ({}, True),
]
QUICK = (0, 2, 5, 6, 9, 11)


def describe(options: dict, from_guide: bool) -> str:
    """"steps x chains x leapfrog[, schedule]", marked when these are the defaults or the old."""
    defaults = {k: v.default for k, v in inspect.signature(ais).parameters.items()}
    full = {**defaults, **options}
    text = f"{full['num_steps']} x {full['num_chains']} x {full['num_leapfrog']}"
    if full["kind"] != "sigmoid":
        text += f", {full['kind']} schedule"
    if all(full[k] == defaults[k] for k in ("num_steps", "num_chains", "num_leapfrog", "kind")):
        text += " (defaults)"
    elif all(full[k] == v for k, v in OLD.items()):
        text += " (old defaults)"
    return text + (", from the encoder" if from_guide else "")


def reference():
    """``train_decoder_2d`` and ``quadrature_log_px`` from the test module (one definition)."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "infer")]
    mod = importlib.import_module("test_ais_defaults")
    return mod.train_decoder_2d, mod.quadrature_log_px


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-data", type=int, default=50, help="test digits")
    p.add_argument("--seed", type=int, default=1, help="seed of every AIS run")
    p.add_argument("--quick", action="store_true", help="only six of the contenders")
    args = p.parse_args()
    torch.set_num_threads(1)
    train_decoder_2d, quadrature_log_px = reference()
    t0 = time.perf_counter()
    model, guide, test = train_decoder_2d()
    x = test[: args.num_data]
    exact = quadrature_log_px(model, x)
    print(f"trained and integrated in {time.perf_counter() - t0:.1f} s; {x.shape[0]} test digits, "
          f"mean log p(x) by quadrature {float(exact.mean()):.4f}; one thread "
          f"({torch.get_num_threads()}), torch {torch.__version__}\n")
    print("| AIS settings (steps x chains x leapfrog) | s.e. median | p90 | max | "
          "mean error vs quadrature | max abs z | acceptance | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    chosen = [c for i, c in enumerate(CONTENDERS) if not args.quick or i in QUICK]
    for options, from_guide in chosen:
        pyro.set_rng_seed(args.seed)
        t = time.perf_counter()
        r = ais(model, x, guide=guide if from_guide else None, **options)
        wall = time.perf_counter() - t
        se = r.stderr.double()
        err = r.per_datapoint.double() - exact
        print(f"| {describe(options, from_guide)} | {float(se.median()):.4f} | "
              f"{float(se.quantile(0.9)):.4f} | "
              f"{float(se.max()):.4f} | {float(err.mean()):+.4f} ± {r.mean_stderr:.4f} | "
              f"{float((err / se).abs().max()):.2f} | {float(r.accept_rate.mean()):.2f} | "
              f"{wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
