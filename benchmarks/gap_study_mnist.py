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
    valid, times = data.valid[:2000], []
    info: dict = {"training": {"epochs": args.epochs, "patience": args.patience,
                               "flow_epochs": args.flow_epochs}}
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
    rows = test_rows(args, len(data.test))
    x = data.test[rows.to(data.test.device)]  # [N, 784]
    study_dir = args.study_dir or Path(f"{args.checkpoint or args.config}.study")
    print(f"{len(rows)} test images; study in {study_dir} (rerun the same command to resume)",
          flush=True)
    from ppvae.analysis.study import gap_study, read_gap_study

    t = time.perf_counter()
    gap_study(vae, {"diagonal": vae.guide, "flow": flow}, x, study_dir,
              families={"diagonal": "diag", "flow": "flow"},
              log_px=("iwae",) if args.no_ais else ("iwae", "ais"),
              block_size=args.block_size, seed=args.seed, num_samples=args.elbo_samples,
              local_steps=args.local_steps,
              local_options={"num_particles": args.particles, "window": args.window,
                             "patience": args.patience_checks, "tol": args.tol},
              iwae_options={"k": args.iwae_k},
              ais_options={"num_steps": args.ais_steps, "num_chains": args.ais_chains},
              ais_init="diagonal", bdmc_data=0 if args.no_ais else args.bdmc_data,
              rows=rows.tolist(), fingerprint=f"{args.config} {json.dumps(info)}",
              progress=False)
    study = read_gap_study(study_dir)
    text = render(args, study, info, times, time.perf_counter() - t)
    print("\n" + text)
    args.out.write_text(text)
    print(f"written: {args.out}")


def test_rows(args, n: int) -> torch.Tensor:
    """All test rows, or a seeded random subset (the test array is ordered by class)."""
    if args.num_test == "all":
        return torch.arange(n)
    try:
        m = int(args.num_test)
    except ValueError:
        raise SystemExit(f"--num-test must be a positive integer or 'all', got "
                         f"{args.num_test!r}") from None
    if not 0 < m <= n:
        raise SystemExit(f"--num-test must be between 1 and {n}, got {m}")
    g = torch.Generator().manual_seed(args.seed)
    return torch.randperm(n, generator=g)[:m]


def _cell(row, quantity: str) -> str:
    s = row.summary(quantity)
    return f"{s.mean:.2f} ± {s.mc_se:.3f} [{s.data_se:.2f}]"


def table(study) -> list[str]:
    """Cremer et al.'s Table 2 layout: one column per encoder, one row per quantity."""
    rep = study.report
    d, f = rep.row("diagonal"), rep.row("flow")
    lines = ["| | diagonal (FFG) encoder | flow (IAF) encoder |", "|---|---|---|",
             f"| log p̂(x) | {_cell(d, 'log_px')} | {_cell(f, 'log_px')} |",
             f"| L[q*_flow] | – | {_cell(f, 'elbo_local')} |",
             f"| L[q*_diag] | {_cell(d, 'elbo_local')} | – |",
             f"| L[q] | {_cell(d, 'elbo_amortized')} | {_cell(f, 'elbo_amortized')} |"]
    for q in ("approximation", "amortization", "inference"):
        lines.append(f"| {q} gap | {_cell(d, q)} | {_cell(f, q)} |")
    return lines


def departures(args, info) -> list[str]:
    """Every departure from Cremer et al.'s protocol, in words."""
    out = []
    if args.config != "cremer":
        out.append(f"networks: the '{args.config}' configuration, not Cremer et al.'s")
    t = info.get("training", {"epochs": args.epochs, "patience": args.patience,
                              "flow_epochs": args.flow_epochs})
    vae, flow = info.get("vae", {}), info.get("flow", {})
    out.append("training: batch 100, Adam 1e-3 halved after 3 epochs without a better "
               "validation ELBO (2000 validation images), KL warm-up over 10 epochs, at most "
               f"{t['epochs']} epochs with early stopping after {t['patience']} such epochs "
               f"(stopped after {vae.get('epochs', '?')}, best {vae.get('best_epoch', '?')}); "
               f"the flow encoder {t['flow_epochs']} epochs on the frozen decoder "
               f"(best {flow.get('best_epoch', '?')}) (Cremer et al.: trained to convergence)")
    out.append("q*_flow starts from a Gaussian moment-matched to the flow encoder's samples "
               "(fit_local's start for a non-Gaussian guide), with 2 IAF layers of its own")
    if args.particles != 100:
        out.append(f"q*: {args.particles} samples per step (Cremer et al.: 100)")
    if (args.window, args.patience_checks) != (100, 10):
        out.append(f"q* convergence: no improvement over {args.patience_checks} checks of "
                   f"{args.window} steps (Cremer et al.: 10 checks of 100 steps)")
    out.append(f"q*: at most {args.local_steps} steps; the datapoints that had not converged "
               "by then are counted below (their gaps are bounds)")
    out.append(f"every ELBO from {args.elbo_samples} samples per datapoint")
    if args.iwae_k != 5000:
        out.append(f"IWAE with k = {args.iwae_k} (Cremer et al.: 5000)")
    if args.no_ais:
        out.append("no AIS (Cremer et al.: AIS with 100 chains, 10,000 intermediate "
                   "distributions)")
    elif (args.ais_chains, args.ais_steps) != (100, 10000):
        out.append(f"AIS with {args.ais_chains} chains and {args.ais_steps} intermediate "
                   "distributions, started from the diagonal encoder (Cremer et al.: 100 "
                   "chains, 10,000, from the prior); certified by BDMC below")
    return out


def render(args, study, info, train_times, seconds: float) -> str:
    """The markdown: setting, table, convergence, estimators, BDMC, stage times, departures."""
    rep, n = study.report, study.report.num_data
    lines = [f"# Gap study, statically binarized MNIST, {n} test images "
             f"({'all' if args.num_test == 'all' else f'seeded random, seed {args.seed}'})", "",
             f"Networks: {args.config} configuration ({json.dumps(info)}); device "
             f"{ppvae.core.device.resolve_device()}, {torch.get_num_threads()} thread(s).", "",
             "Nats; mean ± Monte Carlo s.e. [s.e. across datapoints].", "", *table(study), ""]
    for g, conv in study.converged.items():
        steps = study.steps_used[g].double()
        lines.append(f"- q* of the {g} encoder: {int(conv.sum())}/{n} datapoints converged; "
                     f"steps used: median {float(steps.median()):.0f}, max "
                     f"{float(steps.max()):.0f}")
    for lp in study.log_px.values():
        lines.append(f"- log p̂(x) by {lp.estimator}: {lp.mean:.3f} ± {lp.mean_stderr:.3f}")
    if study.bdmc is not None:
        lines.append(f"- {study.bdmc} (AIS: {args.ais_steps} steps, {args.ais_chains} chains, "
                     "from the diagonal encoder; target < 0.5 nats)")
    lines += ["", "Estimators:"] + [f"- {r.guide}: log p̂(x): {r.estimators.log_px}; L[q*]: "
                                   f"{r.estimators.elbo_local}; L[q]: "
                                   f"{r.estimators.elbo_amortized}" for r in rep.rows]
    lines += ["", "Time per stage (s, summed over blocks and resumed runs):"]
    lines += [f"- {k}: {v:.0f}" for k, v in (*train_times, *rep.timings)]
    lines += [f"- this call (whole study, or what remained of it): {seconds:.0f}", "",
              "Departures from Cremer, Li and Duvenaud (2018):"]
    lines += [f"- {d}" for d in departures(args, info)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
