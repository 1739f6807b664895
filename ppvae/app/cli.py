"""The ``ppvae`` command line: the parser, and :func:`main` dispatching to one module per command.

Subcommands (each a module of :mod:`ppvae.app` with ``add_arguments(parser)`` for its flags and
``main(args) -> exit code`` for what it does):

    train     train a model and guide into a run directory (config.toml, metrics.jsonl,
              checkpoint, report); --resume continues an interrupted run. Data: a named data
              set, a folder of images or a .npy/.csv file (:func:`ppvae.app.inputs.
              build_data`); model and guide: the zoo's or your own module:function
              (:mod:`ppvae.app.zoo`)
    evaluate  log p-hat(x) by IWAE or AIS on a split, and a reconstructions figure
    gaps      the inference-gap report for a run and more guide families, optional MCMC
    sample    images from the prior (one row per label for a conditional model)
    demo      the main job: VAE on the bundled digits, gaps for diagonal and flow guides,
              MCMC comparison, report with figures
    ppca      the PPCA study on synthetic data or on a user's .npy/.csv file, written to a
              run directory (report, tables, figure)
    info      versions, the device ppvae would use, where data is looked for

Configuration comes from flags or a TOML file (``--config``; flags override it). Every
command's ``--help`` shows each option's default, and those defaults are the ones the Python API
uses (``ppvae train``: those of :func:`ppvae.fit`). Errors a user can cause print one line naming
the problem (and, where it suggests a fix, the flag to use) and exit with code 2 (``--debug``
shows the traceback).

Global options, before or after the command: ``--quiet`` (no progress bars: it sets
:func:`ppvae.core.progress.set_default` to False for the command), ``--debug``, ``--threads N``;
``ppvae --version`` prints the versions of ppvae, torch and Pyro without importing them.

The diagnostic warnings a command raises (:class:`ppvae.DiagnosticWarning`: unconverged q*,
MCMC failing R-hat / ESS / divergence checks, heavy-tailed importance weights, AIS acceptance)
are collected (:func:`ppvae.core.diagnostic_warnings.collect`), written to the report's
"Warnings" section with the section that raised them, and printed on stderr at the end of the
command as a "warnings:" block, one line each.
"""

from __future__ import annotations

import argparse
import difflib
import re
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any

__all__ = ["COMMANDS", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_NON_FINITE", "EXIT_USAGE",
           "main"]

EXIT_USAGE = 2  # an error the user can fix (one line on stderr)
EXIT_NON_FINITE = 3  # training stopped on non-finite values (the message says where)
EXIT_INTERNAL = 1  # a bug in ppvae (one line; --debug shows the traceback)
EXIT_INTERRUPTED = 130  # Ctrl-C

COMMANDS = {  # name: (module under ppvae.app, help), in the order ``ppvae --help`` lists them
    "train": ("train", "train a model and guide into a run directory"),
    "evaluate": ("evaluate", "log p-hat(x) by IWAE or AIS, reconstructions"),
    "gaps": ("gaps", "approximation / amortization gaps (resumable: rerun the same command "
             "to continue), optional MCMC comparison"),
    "sample": ("sample", "images from the prior"),
    "demo": ("demo", "the main job on the bundled digits (a few minutes on a CPU)"),
    "ppca": ("ppca", "PPCA study: estimated vs exact bounds and gaps"),
    "info": ("info", "versions, device, where data is looked for"),
}
_ONE_THREAD = ("demo",)  # commands whose tiny networks run best on one torch thread


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem, a close option name, where help is."""

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown options are reported by the command's own parser."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = next((a.choices.get(getattr(ns, "command", None)) for a in self._actions
                           if isinstance(a, argparse._SubParsersAction)), None)
            (chosen or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return ns

    def error(self, message: str):
        """Print one line and exit with code 2 (argparse prints the whole usage)."""
        hint = ""
        bad_choice = re.match(r"argument .*: invalid choice: '([^']*)' \(choose from (.*)\)",
                              message)
        if bad_choice:
            close = difflib.get_close_matches(
                bad_choice.group(1), re.findall(r"'([^']*)'", bad_choice.group(2)), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        if message.startswith("unrecognized arguments:"):
            options = [o for a in self._actions for o in a.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], options, n=1)
                if close and close[0] != word.split("=")[0]:
                    hint = f" (did you mean {close[0]}?)"
                    break
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{hint}; see '{self.prog} "
                  "--help'\n")


def _threads(text: str) -> int:
    from .inputs import positive_int

    return positive_int(text)


def version_text() -> str:
    """``ppvae <version>`` and, on a second line, the torch, Pyro and Python versions.

    ppvae's is :data:`ppvae.__version__` (``import ppvae`` is lazy), torch's and Pyro's are read
    from their installed metadata: neither is imported, so ``ppvae --version`` answers at once.
    """
    from importlib import metadata

    from .. import __version__

    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"ppvae {__version__}\ntorch {installed('torch')}, pyro {installed('pyro-ppl')}, "
            f"python {sys.version.split()[0]}")


class _Version(argparse.Action):
    """``--version``: print :func:`version_text` and exit 0."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(0, version_text() + "\n")


def _global_options(p: argparse.ArgumentParser, default) -> None:
    """``--debug`` and ``--threads``: before the command, or after it (``default`` SUPPRESS).

    ``--quiet`` is added by :func:`_add_quiet` (a command's parser may still define its own).
    """
    p.add_argument("--debug", action="store_true", default=default or False,
                   help="show tracebacks on errors")
    p.add_argument("--threads", type=_threads, default=default,
                   help="torch CPU threads (default: 1 for demo, torch's choice otherwise)")


_QUIET = "global_quiet"  # dest of the global --quiet (a command's own --quiet sets ``quiet``)


def _add_quiet(p: argparse.ArgumentParser, default) -> None:
    """The global ``--quiet``, unless ``p`` has a ``--quiet`` of its own already."""
    if "--quiet" not in p._option_string_actions:
        p.add_argument("--quiet", dest=_QUIET, action="store_true",
                       default=default if default is not None else False,
                       help="no progress bars (same as PPVAE_PROGRESS=0)")


def _default_text(value: object) -> str | None:
    """How ``--help`` shows a default; None: nothing to show (None, False, suppressed)."""
    if value is None or value is False or value is argparse.SUPPRESS:
        return None
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _show_defaults(p: argparse.ArgumentParser, shown: Mapping[str, object]) -> None:
    """Append ``(default: X)`` to the help of every option of ``p`` that has a default.

    ``shown``: the default to show for options whose parsed default is None because a lower
    layer supplies it (``ppvae train``'s flags default to None so that ``--config`` files can
    set them; their built-in values are shown). Help that names a default already is left
    alone.
    """
    for action in p._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction | _Version):
            continue
        value = action.default if action.default is not None else shown.get(action.dest)
        text = _default_text(value)
        if text is None or "default" in (action.help or "").lower():
            continue
        text = text.replace("%", "%%")  # argparse %-formats help strings
        action.help = f"{action.help} (default: {text})" if action.help else f"default: {text}"


def _wants_version(argv: Sequence[str]) -> bool:
    """``--version`` among the global options (before the command)."""
    for word in argv:
        if word == "--version":
            return True
        if not word.startswith("-"):  # the command (or --threads' value: harmless)
            if word in COMMANDS:
                return False
    return False


def _parser() -> argparse.ArgumentParser:
    from .inputs import train_defaults

    p = _Parser(
        prog="ppvae", description="Honest inference for deep latent-variable models: train, "
        "evaluate, inference-gap reports with MCMC references, samples. Each command works "
        "on a run directory; 'ppvae demo' runs the main job on the bundled digits.")
    p.add_argument("--version", action=_Version, help="print the versions and exit")
    _global_options(p, None)
    _add_quiet(p, None)
    common = _Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shown = {"train": train_defaults()}
    for name, (module_name, help_) in COMMANDS.items():
        module = import_module(f"{__package__}.{module_name}")
        cp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        module.add_arguments(cp)
        _add_quiet(cp, argparse.SUPPRESS)
        _show_defaults(cp, shown.get(name, {}))
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


class _StartupInterrupt:
    """Ctrl-C while the command line starts (imports, parsing) is noted, not raised.

    A ``KeyboardInterrupt`` inside an import leaves half-imported modules behind (later errors
    such as "too many values to unpack" or a recursion error); noting it and stopping cleanly
    once the imports are done avoids that.
    """

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> _StartupInterrupt:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.pressed = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the command, return its exit code.

    Exit codes: 0 done; 2 (:data:`EXIT_USAGE`) an error the user can fix, one line on stderr;
    3 (:data:`EXIT_NON_FINITE`) training stopped on non-finite values; 1
    (:data:`EXIT_INTERNAL`) an unexpected error, one line (``--debug``: the traceback); 130
    interrupted (Ctrl-C).
    """
    words = sys.argv[1:] if argv is None else list(argv)
    if _wants_version(words):  # before the parser, which imports torch
        print(version_text())
        return 0
    with _StartupInterrupt() as startup:
        parser = _parser()
        from ..core import progress
        from ..core.diagnostic_warnings import collect
        from .runs import set_command
    if startup.pressed:
        print("ppvae: interrupted before the command started; nothing was written",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    args = parser.parse_args(words)
    args.quiet = bool(getattr(args, _QUIET, False) or getattr(args, "quiet", False))
    set_command(words)  # the reports record the command line
    previous = progress._default
    if args.quiet:
        progress.set_default(False)
    found: list[str] = []
    try:
        with collect() as found:
            return _run(args)
    finally:
        progress.set_default(previous)
        set_command(None)
        _print_warnings(found)


def _print_warnings(found: list[str]) -> None:
    """The collected diagnostic warnings on stderr, one line each."""
    from .runs import READ_THE_NUMBERS

    if found:
        print("warnings:\n" + "".join(f"  {w}\n" for w in found)
              + f"  (what they mean: {READ_THE_NUMBERS}; also in the report's Warnings "
              "section)", file=sys.stderr)


def _one_line(text: str) -> str:
    msg = " ".join(text.split())
    return msg[:500] + " ... (--debug shows all)" if len(msg) > 500 else msg


def _os_error(e: OSError) -> str:
    """One line for an OSError: the file and the cause."""
    from .files import reason

    why = reason(e)
    if e.filename is not None:
        return f"{e.filename}: {why}"
    if e.strerror and e.errno is not None and str(e.strerror).startswith("cannot "):
        return str(e.strerror)  # a message that names the file already
    return why if e.strerror else str(e)


def _run(args) -> int:
    """Run the parsed command: the error boundary.

    A user's error (bad values, unreadable files, read-only or full disks) is one line on
    stderr and exit code 2; an unexpected one is one line and exit code 1; ``--debug`` raises
    instead.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # figures go to files; no display needed
        threads = args.threads or (1 if args.command in _ONE_THREAD else None)
        if threads:  # the demo's networks are tiny: one thread beats OpenMP spinning
            import torch

            torch.set_num_threads(threads)
        return args.func(args)
    except KeyboardInterrupt:
        print("ppvae: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, _user_errors()):
            msg, code = str(e), EXIT_USAGE
        elif isinstance(e, OSError):
            msg, code = _os_error(e), EXIT_USAGE
        elif isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            msg, code = (f"out of memory ({type(e).__name__}); use fewer rows, samples or "
                         "chains, or a smaller --batch-size", EXIT_USAGE)
        else:
            msg = (f"internal error: {type(e).__name__}: {e} (this is a bug in ppvae: "
                   "--debug shows the traceback; please report it)")
            code = EXIT_INTERNAL
        print(f"ppvae: error: {_one_line(msg)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
