"""Arguments of the ``ppvae`` subcommands (argparse), kept apart from what they do (cli.py).

Training options default to None so that a ``--config`` TOML file (or, with ``--resume``, the
run's own config.toml) supplies them unless a flag is given: flags override the file, the file
overrides the built-in defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_commands"]


def _train(p: argparse.ArgumentParser) -> None:
    from .workflow import OBJECTIVES
    from .zoo import GUIDES, MODELS

    p.add_argument("--config", help="TOML file with the run's settings (flags override it)")
    p.add_argument("--out", help="run directory (default runs/<model>-<guide>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint")
    p.add_argument("--model", help=f"one of {', '.join(MODELS)} (default vae)")
    p.add_argument("--guide", help=f"one of {', '.join(GUIDES)} (default: the model's usual)")
    p.add_argument("--data", help="digits (bundled, default), binarized-mnist, mnist, "
                   "fashion-mnist, ppca, or a .npy/.csv file of rows")
    p.add_argument("--data-path", dest="data_path",
                   help="binarized-mnist: an .npz file or a folder of .amat files")
    p.add_argument("--binarize", choices=("static", "threshold", "dynamic"))
    p.add_argument("--latent-dim", dest="latent_dim", type=int)
    p.add_argument("--hidden", type=int, nargs="+", help="hidden layer sizes")
    p.add_argument("--top-latent-dim", dest="top_latent_dim", type=int,
                   help="hierarchical model: size of the top layer")
    p.add_argument("--num-flows", dest="num_flows", type=int, help="flow guide layers")
    p.add_argument("--channels", type=int, help="conv model/guide channels")
    p.add_argument("--objective", choices=OBJECTIVES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--particles", type=int, help="ELBO particles per datapoint")
    p.add_argument("--iwae-k", dest="iwae_k", type=int, help="objective iwae: k")
    p.add_argument("--beta", type=float, help="objective beta: the KL weight")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int,
                   help="objective kl-warmup: steps")
    p.add_argument("--patience", type=int, help="early stopping (epochs without improvement)")
    p.add_argument("--jit", action="store_true", default=None,
                   help="replay the training step from a captured graph (faster at small "
                   "batches; see ppvae.capture)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test")
    p.add_argument("--estimator", choices=("iwae", "ais", "both"), default="iwae")
    p.add_argument("--k", type=int, default=1000, help="IWAE samples per datapoint")
    p.add_argument("--ais-steps", type=int, default=200)
    p.add_argument("--num-data", type=int, help="first N rows of the split (default all)")


def _gaps(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--guides", nargs="*", default=["flow"],
                   help="guide families trained on the frozen model next to the run's own "
                   "guide (default: flow)")
    p.add_argument("--guide-epochs", type=int, default=20)
    p.add_argument("--num-data", type=int, default=300, help="first N test rows")
    p.add_argument("--local-steps", type=int, default=300, help="per-datapoint VI steps")
    p.add_argument("--samples", type=int, default=500, help="samples per ELBO")
    p.add_argument("--log-px", choices=("iwae", "ais"), default="iwae")
    p.add_argument("--k", type=int, default=1000, help="IWAE samples for log p(x)")
    p.add_argument("--ais-steps", type=int, default=200)
    p.add_argument("--mcmc", type=int, default=0,
                   help="compare with batched HMC on this many test rows (0: no MCMC)")
    p.add_argument("--mcmc-warmup", type=int, default=300)
    p.add_argument("--mcmc-samples", type=int, default=500)
    p.add_argument("--quiet", action="store_true")


def _sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--num", type=int, default=64, help="images (a conditional model shows "
                   "one row per label)")


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="run directory (default runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    p.add_argument("--epochs", type=int, default=100, help="VAE epochs")
    p.add_argument("--flow-epochs", type=int, default=50)
    p.add_argument("--num-data", type=int, default=300, help="test digits in the gap study")
    p.add_argument("--local-steps", type=int, default=1000)
    p.add_argument("--k", type=int, default=5000, help="IWAE samples for log p(x)")
    p.add_argument("--mcmc", type=int, default=8, help="test digits compared with HMC")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256, help="hidden units (one layer)")
    p.add_argument("--ais-steps", type=int, default=100, help="AIS steps in the evaluation")
    p.add_argument("--mcmc-warmup", type=int, default=500)
    p.add_argument("--mcmc-samples", type=int, default=1000)
    p.add_argument("--quiet", action="store_true")


def _ppca(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help=".npy or .csv matrix [N, D]; synthetic PPCA data if absent")
    p.add_argument("--latent-dim", type=int, default=4)
    p.add_argument("--num-data", type=int, default=500, help="synthetic data only")
    p.add_argument("--data-dim", type=int, default=20, help="synthetic data only")
    p.add_argument("--steps", type=int, default=3000, help="SVI steps per guide")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--iwae-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)


_COMMANDS = {
    "train": (_train, "train a model and guide into a run directory"),
    "evaluate": (_evaluate, "log p-hat(x) by IWAE or AIS, reconstructions"),
    "gaps": (_gaps, "approximation / amortization gaps, optional MCMC comparison"),
    "sample": (_sample, "images from the prior"),
    "demo": (_demo, "the main job on the bundled digits (a few minutes on a CPU)"),
    "ppca": (_ppca, "PPCA study: estimated vs exact bounds and gaps"),
    "info": (lambda p: None, "versions, device, where data is looked for"),
}


def add_commands(sub, handlers: dict[str, Callable]) -> None:
    """Add every subcommand to ``sub`` with its handler as ``func``."""
    for name, (add, help_) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(func=handlers[name])
