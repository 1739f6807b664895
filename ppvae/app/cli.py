"""The ``ppvae`` command line: the parser, and :func:`main` dispatching to one module per command.

Subcommands (each a module of :mod:`ppvae.app` with ``add_arguments(parser)`` for its flags and
``main(args) -> exit code`` for what it does):

    train     train a model and guide into a run directory (config.toml, metrics.jsonl,
              checkpoint, report); --resume continues an interrupted run
    evaluate  log p-hat(x) by IWAE or AIS on a split, and a reconstructions figure
    gaps      the inference-gap report for a run and more guide families, optional MCMC
    sample    images from the prior (one row per label for a conditional model)
    demo      the main job: VAE on the bundled digits, gaps for diagonal and flow guides,
              MCMC comparison, report with figures
    ppca      the PPCA study on synthetic data or on a user's .npy/.csv file
    info      versions, the device ppvae would use, where data is looked for

Configuration comes from flags or a TOML file (``--config``; flags override it). Errors a user
can cause print one line naming the problem and exit with code 2 (``--debug`` shows the
traceback).

The diagnostic warnings a command raises (:class:`ppvae.DiagnosticWarning`: unconverged q*,
MCMC failing R-hat / ESS / divergence checks, heavy-tailed importance weights, AIS acceptance)
are collected (:func:`ppvae.core.diagnostic_warnings.collect`), written to the report's
"Warnings" section with the section that raised them, and printed on stderr at the end of the
command as a "warnings:" block, one line each.
"""

from __future__ import annotations

import argparse
import sys

from . import demo, evaluate, gaps, info, ppca, sample, train

__all__ = ["COMMANDS", "main"]

COMMANDS = {  # name: (module, help), in the order ``ppvae --help`` lists them
    "train": (train, "train a model and guide into a run directory"),
    "evaluate": (evaluate, "log p-hat(x) by IWAE or AIS, reconstructions"),
    "gaps": (gaps, "approximation / amortization gaps, optional MCMC comparison"),
    "sample": (sample, "images from the prior"),
    "demo": (demo, "the main job on the bundled digits (a few minutes on a CPU)"),
    "ppca": (ppca, "PPCA study: estimated vs exact bounds and gaps"),
    "info": (info, "versions, device, where data is looked for"),
}
_ONE_THREAD = ("demo",)  # commands whose tiny networks run best on one torch thread


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ppvae", description="Honest inference for deep latent-variable models: train, "
        "evaluate, inference-gap reports with MCMC references, samples. Each command works "
        "on a run directory; 'ppvae demo' runs the main job on the bundled digits.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: 1 for demo, torch's choice otherwise)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        cp = sub.add_parser(name, help=help_, description=help_)
        module.add_arguments(cp)
        cp.set_defaults(func=module.main)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..core.contract import ContractError
    from ..train.checkpoint import CheckpointError
    from ..train.speedup.capture import CaptureError
    from .inputs import UsageError
    from .runs import RunError
    from .zoo import BuildError

    return (UsageError, BuildError, RunError, CheckpointError, ContractError, CaptureError,
            ValueError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the command, return its exit code.

    The code is 2 with one line on stderr for an error the user can fix, 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    from ..core.diagnostic_warnings import collect
    from .runs import set_command

    set_command(sys.argv[1:] if argv is None else argv)  # the reports record the command line
    found: list[str] = []
    try:
        with collect() as found:
            return _run(args)
    finally:
        set_command(None)
        _print_warnings(found)


def _print_warnings(found: list[str]) -> None:
    """The collected diagnostic warnings on stderr, one line each."""
    from .runs import READ_THE_NUMBERS

    if found:
        print("warnings:\n" + "".join(f"  {w}\n" for w in found)
              + f"  (what they mean: {READ_THE_NUMBERS}; also in the report's Warnings "
              "section)", file=sys.stderr)


def _run(args) -> int:
    """Run the parsed command; a user's error is one line on stderr and exit code 2."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # figures go to files; no display needed
        threads = args.threads or (1 if args.command in _ONE_THREAD else None)
        if threads:  # the demo's networks are tiny: one thread beats OpenMP spinning
            import torch

            torch.set_num_threads(threads)
        return args.func(args)
    except _user_errors() as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split())  # one line
        if len(msg) > 500:
            msg = msg[:500] + " ... (--debug shows all)"
        print(f"ppvae: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
