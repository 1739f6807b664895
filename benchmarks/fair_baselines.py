"""ppvae's performance table: every row against its strongest fair alternative, in one run.

Each row times ppvae and the alternatives on the same network, data, optimizer and thread count
in this process, in rounds whose contender order rotates (the speed of a shared CPU drifts), and
prints the median time of each contender and its ratio to ppvae paired within each round
(median [min-max] over rounds). A ratio above 1 means the alternative took longer.

Rows (``--rows``, all by default):

* ``svi``: one training step of a 784-400-50 VAE at batch 16 / 128 / 1024: ``ppvae.fit`` eager
  and ``fit(jit=True)`` against a hand-written PyTorch loop (the floor: formulas, no Pyro, the
  same fused Adam) and Pyro's ``SVI`` with ``Trace_ELBO`` (:mod:`svi_overhead`).
* ``epoch``: one training epoch of the same VAE, batch 100: ``ppvae.fit`` against pythae's
  ``BaseTrainer`` (when pythae is installed) and the hand-written loop.
* ``iwae``: IWAE_k of test images from a trained VAE: ``ppvae.iwae`` at its default chunk
  against a hand-written streaming IWAE (encoder once, decoder per chunk of particles, running
  logsumexp) at the best of a few chunk sizes.
* ``nll``: log p(x) by importance sampling with k samples: ``ppvae.iwae`` against pythae's
  ``get_nll`` (one batch of k per datapoint, under ``no_grad``) on the same networks.
* ``local``: per-datapoint VI (q* of Cremer et al. 2018) for a frozen 784-500-500-50 decoder:
  ``ppvae.fit_local`` against one vectorized Pyro SVI with [N, K] parameters in the data plate
  (the strongest Pyro code), a hand-written vectorized torch loop (the floor), and a Python loop
  of per-datapoint Pyro SVI (the weak baseline, timed on a few datapoints, per datapoint)
  (:mod:`gaps_mnist`).
* ``mcmc``: batched HMC against one joint Pyro NUTS run and a loop of per-datapoint NUTS
  (``benchmarks/mcmc_mnist.py``'s rounds and table; about 5 minutes a round, most of it the
  joint NUTS run).

    python benchmarks/fair_baselines.py --data ../shared/data/binarized_mnist.npz

pythae is not a dependency of ppvae: install it next to ppvae (``pip install pythae``) for
its rows; without it they are skipped with a note.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

import ppvae
from ppvae.models import VAE

sys.path.insert(0, str(Path(__file__).parent))
import gaps_mnist  # the per-datapoint VI contenders
import svi_overhead  # the training-step contenders


def machine() -> str:
    """CPU model, cores, and library versions, for the table's caption."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, pyro {pyro.__version__}, "
            f"ppvae {ppvae.__version__}; {torch.get_num_threads()} thread(s)")


def images(path: str | None, split: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random rows of binarized MNIST split ``split`` (0 train, 2 test).

    Without the file: Bernoulli(0.13) pixels, MNIST's shape and density.
    """
    g = torch.Generator().manual_seed(seed)
    if path and Path(path).exists():
        from ppvae.data.binarized_mnist import read_npz

        rows = read_npz(path)[split]
        pick = torch.randperm(rows.shape[0], generator=g)[:n]
        return torch.as_tensor(rows[pick.numpy()], dtype=torch.float32)
    return torch.bernoulli(torch.full((n, 784), 0.13), generator=g)


def rounds(contenders: dict[str, Callable[[], float]], n: int) -> dict[str, list[float]]:
    """Seconds of each contender per round, the order rotating from round to round."""
    names, times = list(contenders), {k: [] for k in contenders}
    for r in range(n):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            pyro.clear_param_store()
            torch.manual_seed(r)
            times[name].append(contenders[name]())
    return times


def ratio(times: dict[str, list[float]], alt: str, base: str) -> str:
    """``alt / base`` paired within rounds: median [min-max]."""
    r = sorted(a / b for a, b in zip(times[alt], times[base], strict=True))
    return f"{statistics.median(r):.2f} [{r[0]:.2f}-{r[-1]:.2f}]"


def med(values: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    """The median of ``values`` times ``scale``, formatted."""
    return format(statistics.median(values) * scale, fmt)


class Table:
    """Markdown rows: work, contender, median time, ratio to ppvae (paired per round)."""

    def __init__(self):
        self.lines = ["| work | contender | median | alternative / ppvae |", "|---|---|---|---|"]
        self.notes: list[str] = []

    def add(self, work: str, times: dict[str, list[float]], base: str, unit: str,
            scale: float, labels: dict[str, str]) -> None:
        """One work's contenders, ppvae's (``base``) first."""
        for name in [base, *[k for k in times if k != base]]:
            r = "1 (reference)" if name == base else ratio(times, name, base)
            self.lines.append(f"| {work} | {labels[name]} | {med(times[name], scale)} {unit} "
                              f"| {r} |")
        print("\n".join(self.lines[-len(times):]), flush=True)

    def note(self, text: str) -> None:
        """A line under the table."""
        self.notes.append(text)
        print(text, flush=True)


def train_vae(x: torch.Tensor, hidden: tuple[int, ...], latent: int, epochs: int) -> VAE:
    """A VAE trained with ppvae.fit (a few epochs: realistic posteriors for the rows below)."""
    vae = VAE(784, latent, hidden, name=f"fair_vae_{'_'.join(map(str, hidden))}")
    ppvae.fit(vae, vae.guide, x, epochs=epochs, batch_size=100, lr=1e-3, quiet=True,
              device="cpu")
    return vae


def row_svi(args, table: Table, train: torch.Tensor) -> None:
    """Training step at three batch sizes (svi_overhead's contenders)."""
    for batch in args.batches:
        steps = max(10, min(args.svi_steps, train.shape[0] // batch))
        x = train[: batch * steps]

        def run(fn, batch=batch, steps=steps, x=x):
            vae = VAE(784, 50, (400,), name="bench_vae")
            fn(vae, x, batch, min(steps, 10))  # warm-up, as svi_overhead does
            pyro.clear_param_store()
            return fn(vae, x, batch, steps)

        times = rounds({"fit": lambda: run(svi_overhead.with_fit),
                        "jit": lambda: run(svi_overhead.with_fit_jit),
                        "hand": lambda: run(svi_overhead.hand_written),
                        "svi": lambda: run(svi_overhead.with_pyro_svi)}, args.rounds)
        table.add(f"SVI step, B = {batch}", times, "fit", "ms", 1e3, {
            "fit": "ppvae.fit (eager)", "jit": "ppvae.fit(jit=True)",
            "hand": "hand-written torch (fused Adam)", "svi": "Pyro SVI + Trace_ELBO"})


def _pythae_vae(vae: VAE):
    """A pythae VAE whose encoder and decoder are ``vae``'s networks (the same weights)."""
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net, self.min_scale = vae.guide.net, vae.guide.min_scale

        def forward(self, x):
            loc, raw = self.net(x.reshape(x.shape[0], -1)).chunk(2, -1)
            scale = F.softplus(raw) + self.min_scale
            return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = vae.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    config = VAEConfig(input_dim=(784,), latent_dim=vae.latent_dim, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder())


def _has_pythae() -> bool:
    try:
        import pythae  # noqa: F401
    except ImportError:
        return False
    return True


def row_epoch(args, table: Table, train: torch.Tensor) -> None:
    """One epoch at batch 100: ppvae.fit, pythae's trainer, the hand-written loop."""
    x = train[: args.epoch_rows]

    def ppvae_epoch():
        vae = VAE(784, 50, (400,), name="epoch_vae")
        seconds = []
        ppvae.fit(vae, vae.guide, x, epochs=1, batch_size=100, lr=1e-3, quiet=True,
                  device="cpu", on_epoch=lambda **e: seconds.append(e["seconds"]))
        return seconds[-1]

    def hand_epoch():
        vae = VAE(784, 50, (400,), name="epoch_vae")
        return svi_overhead.hand_written(vae, x, 100, x.shape[0] // 100) * (x.shape[0] // 100)

    contenders = {"fit": ppvae_epoch, "hand": hand_epoch}
    if _has_pythae():
        from pythae.data.datasets import BaseDataset
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        def pythae_epoch():
            model = _pythae_vae(VAE(784, 50, (400,), name="epoch_vae"))
            config = BaseTrainerConfig(output_dir=str(Path(args.scratch) / "pythae"),
                                       per_device_train_batch_size=100, num_epochs=1,
                                       learning_rate=1e-3, no_cuda=True)
            trainer = BaseTrainer(model, BaseDataset(x, torch.zeros(x.shape[0])),
                                  training_config=config)
            trainer.prepare_training()  # what BaseTrainer.train does before its epochs
            t = time.perf_counter()
            trainer.train_step(epoch=1)
            return time.perf_counter() - t

        contenders["pythae"] = pythae_epoch
    times = rounds(contenders, args.rounds)
    table.add(f"training epoch, {x.shape[0]} images, B = 100", times, "fit", "s", 1.0, {
        "fit": "ppvae.fit", "hand": "hand-written torch (fused Adam)",
        "pythae": "pythae BaseTrainer.train_step"})
    if not _has_pythae():
        table.note("pythae rows skipped: pythae is not installed (pip install pythae).")


@torch.no_grad()
def hand_iwae(vae: VAE, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """IWAE_k per datapoint written by hand: the encoder once, then chunks of particles."""
    loc, raw = vae.guide.net(x).chunk(2, -1)
    scale = F.softplus(raw) + vae.guide.min_scale
    total = None
    for start in range(0, k, chunk):
        eps = torch.randn(min(chunk, k - start), *loc.shape)
        z = loc + scale * eps  # [C, N, K]
        logits = vae.decoder(z)
        lw = (-F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
              .sum(-1) - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1)
              + scale.log().sum(-1))  # [C, N]; the 2 pi terms cancel
        part = torch.logsumexp(lw, 0)
        total = part if total is None else torch.logaddexp(total, part)
    return total - math.log(k)


def row_iwae(args, table: Table, vae: VAE, test: torch.Tensor) -> None:
    """IWAE_k: ppvae at its default chunk, the hand-written floor at the best of a few chunks."""
    x, k = test[: args.iwae_rows], args.k

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    contenders = {"ppvae": lambda: timed(lambda: ppvae.iwae(vae, vae.guide, x, k,
                                                            num_estimates=1))}
    for chunk in args.hand_chunks:
        contenders[f"hand{chunk}"] = lambda c=chunk: timed(lambda: hand_iwae(vae, x, k, c))
    times = rounds(contenders, args.rounds)
    best = min((n for n in times if n != "ppvae"), key=lambda n: statistics.median(times[n]))
    kept = {"ppvae": times["ppvae"], best: times[best]}
    table.add(f"IWAE_{k}, {x.shape[0]} test images", kept, "ppvae", "s", 1.0, {
        "ppvae": "ppvae.iwae (default chunk)",
        best: f"hand-written IWAE, best chunk ({best[4:]} particles; tried "
              f"{', '.join(map(str, args.hand_chunks))})"})


def row_nll(args, table: Table, vae: VAE, test: torch.Tensor) -> None:
    """log p(x) with k importance samples: ppvae.iwae against pythae's get_nll."""
    if not _has_pythae():
        table.note("log p(x) against pythae skipped: pythae is not installed.")
        return
    x, model = test[: args.nll_rows], _pythae_vae(vae)
    model.eval()
    values = {}
    for k in args.nll_k:
        def ours(k=k):
            t = time.perf_counter()
            values["ppvae", k] = float(ppvae.iwae(vae, vae.guide, x, k, num_estimates=1).mean)
            return time.perf_counter() - t

        def theirs(k=k):
            t = time.perf_counter()
            with torch.no_grad():
                values["pythae", k] = float(model.get_nll(x, n_samples=k, batch_size=k))
            return time.perf_counter() - t

        times = rounds({"ppvae": ours, "pythae": theirs}, args.rounds)
        table.add(f"log p(x), k = {k}, {x.shape[0]} images", times, "ppvae", "s", 1.0, {
            "ppvae": "ppvae.iwae", "pythae": "pythae get_nll (batch of k, no_grad)"})
        table.note(f"k = {k}: mean log p-hat(x) {values['ppvae', k]:.2f} (ppvae) and "
                   f"{-values['pythae', k]:.2f} (pythae, its NLL negated): the same networks.")


def row_local(args, table: Table, vae: VAE, test: torch.Tensor) -> None:
    """Per-datapoint VI: fit_local, vectorized Pyro SVI, the hand loop; the loop per datapoint."""
    x, steps, p = test[: args.local_rows], args.local_steps, args.particles
    m = args.loop_rows

    def fl(rows):
        t = time.perf_counter()
        ppvae.fit_local(vae, rows, "diag", vae.guide, num_steps=steps, num_particles=p,
                        window=10**9, gradient="reparam")
        return time.perf_counter() - t

    n = x.shape[0]
    with pyro.validation_enabled(False):
        times = rounds({"fit_local": lambda: fl(x),
                        "vec": lambda: gaps_mnist.vectorized_svi(vae, x, steps, p),
                        "hand": lambda: gaps_mnist.hand_vectorized(vae, x, steps, p),
                        # the weak baseline on m datapoints, scaled to all n (per datapoint)
                        "loop": lambda: gaps_mnist.loop_svi(vae, x[:m], steps, p) * n / m},
                       args.rounds)
    table.add(f"per-datapoint VI, {n} images, {steps} steps, {p} particles", times,
              "fit_local", "s", 1.0, {
                  "fit_local": "ppvae.fit_local",
                  "vec": "one vectorized Pyro SVI (params in the plate, decoder frozen)",
                  "hand": "hand-written vectorized torch",
                  "loop": f"Python loop of per-datapoint Pyro SVI (timed on {m}, times {n}/{m})"})


def row_mcmc(args, table: Table) -> None:
    """Batched HMC against one joint Pyro NUTS run and a NUTS loop: mcmc_mnist's own table."""
    import mcmc_mnist

    table.note("MCMC: the table of benchmarks/mcmc_mnist.py, printed above.")
    mcmc_mnist.main(["--data", args.data, "--rounds", str(args.rounds),
                     "--threads", str(args.threads)]
                    + (["--checkpoint", args.mcmc_checkpoint] if args.mcmc_checkpoint else []))


ROWS = ("svi", "epoch", "iwae", "nll", "local", "mcmc")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/binarized_mnist.npz")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 128, 1024])
    p.add_argument("--svi-steps", type=int, default=100)
    p.add_argument("--epoch-rows", type=int, default=10000)
    p.add_argument("--train-epochs", type=int, default=3, help="epochs of the evaluated VAEs")
    p.add_argument("--k", type=int, default=5000, help="IWAE samples of the iwae row")
    p.add_argument("--iwae-rows", type=int, default=100)
    p.add_argument("--hand-chunks", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument("--nll-k", type=int, nargs="+", default=[1000])
    p.add_argument("--nll-rows", type=int, default=100)
    p.add_argument("--local-rows", type=int, default=500)
    p.add_argument("--local-steps", type=int, default=100)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--loop-rows", type=int, default=5)
    p.add_argument("--mcmc-checkpoint", default=None,
                   help="the MCMC row's VAE state dict to load or write (mcmc_mnist)")
    p.add_argument("--scratch", default="fair_baselines_scratch", help="pythae's output_dir")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # as in production: every contender without Pyro's checks
    # short fits and small k on purpose: their convergence and k-hat warnings are expected
    warnings.filterwarnings("ignore", category=ppvae.ConvergenceWarning)
    warnings.filterwarnings("ignore", category=ppvae.ImportanceWeightWarning)
    print(f"# ppvae against its fair alternatives\n\n{machine()}; {args.rounds} rounds, the "
          "order rotating; median time; ratio paired within rounds: median [min-max]\n",
          flush=True)
    table = Table()
    train = images(args.data, 0, 50000)
    test = images(args.data, 2, max(args.iwae_rows, args.nll_rows, args.local_rows))
    t0 = time.perf_counter()
    if "svi" in args.rows:
        row_svi(args, table, train)
    if "epoch" in args.rows:
        row_epoch(args, table, train)
    if {"iwae", "nll"} & set(args.rows):
        vae = train_vae(train[:10000], (400,), 50, args.train_epochs)
        if "iwae" in args.rows:
            row_iwae(args, table, vae, test)
        if "nll" in args.rows:
            row_nll(args, table, vae, test)
    if "local" in args.rows:
        row_local(args, table, train_vae(train[:10000], (500, 500), 50, args.train_epochs),
                  test)
    if "mcmc" in args.rows:
        row_mcmc(args, table)
    table.note(f"Total {time.perf_counter() - t0:.0f} s.")
    text = (f"{machine()}; {args.rounds} rounds\n\n" + "\n".join(table.lines) + "\n\n"
            + "\n".join(f"- {n}" for n in table.notes) + "\n")
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
