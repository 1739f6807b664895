"""A gap study in a child process, for tests/analysis/test_gap_study.py.

Usage:
    python tests/gap_study_worker.py kill DIR     # dies by SIGKILL inside the q* stage
    torchrun --nproc_per_node 2 tests/gap_study_worker.py shard DIR   # two ranks, gloo, CPU

``kill``: the study runs until the q* stage has written its first block, then, while "writing"
the second (a partial temporary file next to it), the process kills itself with SIGKILL: what
a killed job leaves behind. ``shard``: every rank runs the same study into DIR (each computes
its blocks) and saves its report as ``rank{r}.json``.
"""

import os
import signal
import sys
import warnings
from pathlib import Path

import pyro
import torch

import ppvae.analysis.study as study_module
from ppvae import distributed as ddp
from ppvae.analysis.study import gap_study
from ppvae.core.diagnostic_warnings import DiagnosticWarning

N, BLOCK = 24, 8  # three blocks: under two ranks, rank 0 computes block 0 and rank 1 blocks 1-2


def problem():
    """A small VAE on the 8x8 digits (float64), its guide and 24 test rows: fixed by seed."""
    from ppvae.data import load_dataset
    from ppvae.models import VAE

    x = load_dataset("digits", binarize="static").test[:N].double()
    pyro.set_rng_seed(7)
    vae = VAE(64, 3, (16,), name="gap_study_vae").double()
    return vae, {"diag": vae.guide}, x


def options(**overrides) -> dict:
    """The study's options (small: the whole study takes seconds)."""
    opts = dict(block_size=BLOCK, seed=5, num_samples=20, local_steps=40,
                local_options={"num_particles": 4, "window": 10, "patience": 2},
                iwae_options={"k": 20}, ais_options={"num_steps": 8, "num_chains": 4},
                ais_init="diag", bdmc_data=5, progress=False)
    return {**opts, **overrides}


def run(directory):
    """The study of :func:`problem` with :func:`options` in ``directory``; its report."""
    vae, guides, x = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticWarning)  # short runs: not converged
        return gap_study(vae, guides, x, directory, **options())


def _die_in_qstar() -> None:
    """Make the second q* block write a partial temporary file, then SIGKILL this process."""
    write = study_module._write_block

    def dying(path: Path, payload: dict) -> None:
        if path.name.startswith("qstar.") and path.name.endswith(".00001.pt"):
            (path.parent / f".{path.name}.partial.tmp").write_bytes(b"half a block")
            os.kill(os.getpid(), signal.SIGKILL)
        write(path, payload)

    study_module._write_block = dying


def main() -> None:
    mode, directory = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    if mode == "kill":
        _die_in_qstar()
        run(directory)
        raise SystemExit("the study finished: it should have been killed in the q* stage")
    if mode != "shard":
        raise SystemExit(f"unknown mode {mode!r}; use kill or shard")
    if not ddp.init_from_env("gloo"):
        raise SystemExit("shard mode needs torchrun (RANK, WORLD_SIZE in the environment)")
    try:
        report = run(directory)
        (directory / f"rank{ddp.rank()}.json").write_text(report.to_json())
    finally:
        ddp.shutdown()


if __name__ == "__main__":
    main()
