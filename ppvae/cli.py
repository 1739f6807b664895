"""The ``ppvae`` command line.

Subcommands:
    demo   the main job on bundled data (today: the PPCA exact-reference study)
    ppca   the PPCA study on synthetic data or on a user's .npy/.csv file
    info   versions and the device ppvae would use

Errors a user can cause print one line naming the problem and exit with code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """A problem with the user's input, reported in one line with exit code 2."""


def _load_matrix(path: str):
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"data file not found: {p}")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        else:
            raise UsageError(f"{p}: unsupported data file type '{p.suffix}' (use .npy or .csv)")
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{p}: could not read a numeric matrix ({e})") from e
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise UsageError(f"{p}: expected a 2-D array [N, D] with N >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UsageError(f"{p}: the data contain non-finite values")
    return torch.as_tensor(arr, dtype=torch.float64)


def _cmd_ppca(args) -> int:
    from .ppca_study import run_ppca_study

    x = _load_matrix(args.data) if args.data else None
    if x is not None and not 0 < args.latent_dim < x.shape[1]:
        raise UsageError(
            f"--latent-dim must be between 1 and D - 1 = {x.shape[1] - 1}, got {args.latent_dim}"
        )
    study = run_ppca_study(
        x, latent_dim=args.latent_dim, num_data=args.num_data, data_dim=args.data_dim,
        steps=args.steps, num_samples=args.num_samples, iwae_k=args.iwae_k, seed=args.seed,
    )
    print(study.to_markdown())
    return 0


def _cmd_demo(args) -> int:
    from .ppca_study import run_ppca_study

    print("ppvae demo: PPCA exact-reference study (estimated vs closed-form bounds and gaps)\n")
    print(run_ppca_study(seed=args.seed).to_markdown())
    return 0


def _cmd_info(args) -> int:
    import arviz
    import pyro
    import torch

    from . import __version__
    from .device import resolve_device

    print(f"ppvae {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, arviz {arviz.__version__}")
    print(f"device: {resolve_device()} (CUDA available: {torch.cuda.is_available()})")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppvae", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on bundled data")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    ppca = sub.add_parser("ppca", help="PPCA study: estimated vs exact bounds and gaps")
    ppca.add_argument("--data", help=".npy or .csv matrix [N, D]; synthetic PPCA data if absent")
    ppca.add_argument("--latent-dim", type=int, default=4)
    ppca.add_argument("--num-data", type=int, default=500, help="synthetic data only")
    ppca.add_argument("--data-dim", type=int, default=20, help="synthetic data only")
    ppca.add_argument("--steps", type=int, default=3000, help="SVI steps per guide")
    ppca.add_argument("--num-samples", type=int, default=1000)
    ppca.add_argument("--iwae-k", type=int, default=100)
    ppca.add_argument("--seed", type=int, default=0)
    ppca.set_defaults(func=_cmd_ppca)

    info = sub.add_parser("info", help="versions and device")
    info.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"ppvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
