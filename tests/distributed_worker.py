"""One rank of the distributed tests (tests/test_distributed.py launches it with torchrun).

Usage: torchrun --nproc_per_node 2 tests/distributed_worker.py OUT_DIR

Every rank builds its modules from a rank-dependent seed (so that equal results prove the
broadcast from rank 0), runs the scenarios of :func:`scenarios` on CPU with gloo, and saves
what it got to OUT_DIR/rank{r}.pt for the test to compare with single-process runs.
"""

import faulthandler
import os
import sys
from pathlib import Path

import pyro
import torch

import ppvae
from ppvae import distributed as ddp
from ppvae.distributed.gaps import sharded_gaps
from ppvae.distributed.sharded import sharded_ais, sharded_elbo, sharded_fit_local, sharded_iwae

N_TRAIN, BATCH, EPOCHS = 97, 8, 2  # 97 rows: the last minibatch of 16 has 1 row (one rank idle)
BLOCK = 10  # 24 PPCA rows in blocks of 10: rank 0 evaluates block 0, rank 1 blocks 1 and 2


def digits():
    data = ppvae.data.load_dataset("digits", binarize="static")
    return data.train[:N_TRAIN].double(), data.valid[:30].double()


def delta_pair(seed: int):
    """A VAE decoder with a point-mass encoder: a deterministic objective, so distributed
    and single-process training can agree to rounding."""
    from ppvae.guides import DeltaEncoder
    from ppvae.models import VAE

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 4, (16,), name="dvae"), DeltaEncoder(64, 4, (16,), name="denc")


def vae(seed: int):
    from ppvae.models import VAE

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 4, (16,), name="svae")


def ppca_problem():
    """Fixed PPCA (D=5, K=2), 24 rows, a deliberately biased mean-field amortized guide."""
    from ppvae.guides.linear import AmortizedLinearGaussian
    from ppvae.models import PPCA

    g = torch.Generator().manual_seed(11)
    W, b, s = torch.randn(5, 2, generator=g), torch.randn(5, generator=g), torch.tensor(0.5)
    x = torch.randn(24, 2, generator=g) @ W.T + b + s * torch.randn(24, 5, generator=g)
    model = PPCA(5, 2, W=W, b=b, sigma=s, fixed=True, name="dppca")
    guide = AmortizedLinearGaussian.from_ppca(W, b, s, "diag", name="dguide")
    with torch.no_grad():
        guide.bias.add_(0.3)  # amortization gap > 0
    return model, guide, x, ppvae.ppca_log_marginal(W, b, s, x)


def params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def scenarios(out: Path, rank: int) -> dict:
    x, valid = digits()
    res = {}
    model, enc = delta_pair(100 + rank)
    r = ppvae.fit(model, enc, x, valid=valid, epochs=EPOCHS, batch_size=BATCH, lr=1e-2,
                  seed=3, device="cpu", quiet=True)
    res["delta"] = (r.train_objective, r.valid_elbo, r.steps, params())

    kw = dict(batch_size=BATCH, lr=1e-2, seed=4, device="cpu", quiet=True)
    m = vae(200 + rank)
    full = ppvae.fit(m, m.guide, x, epochs=3, checkpoint=out / "full.pt", **kw)
    res["full"] = (full.train_objective, params())
    m = vae(200 + rank)
    ppvae.fit(m, m.guide, x, epochs=2, checkpoint=out / "part.pt", **kw)
    m = vae(400 + rank)  # other initial values: everything comes from the checkpoint
    rest = ppvae.fit(m, m.guide, x, epochs=3, checkpoint=out / "part.pt", resume=out / "part.pt",
                     **kw)
    res["resumed"] = (rest.train_objective, params())

    pyro.clear_param_store()
    model, guide, xp, exact = ppca_problem()
    torch.manual_seed(rank)  # the sharded functions must not depend on the caller's RNG
    res["elbo"] = sharded_elbo(model, guide, xp, 50, block_size=BLOCK)
    res["iwae"] = sharded_iwae(model, guide, xp, 20, block_size=BLOCK)
    res["ais"] = sharded_ais(model, xp, block_size=BLOCK, num_steps=10, num_chains=4)
    q = sharded_fit_local(model, xp, "full", guide, block_size=BLOCK, num_steps=60)
    res["local"] = ([p.detach() for p in q.parameters()], q.fit)
    res["gaps_exact"] = sharded_gaps(model, guide, xp, exact, block_size=BLOCK, local_steps=300,
                                     num_samples=400).to_json()
    res["gaps_iwae"] = sharded_gaps(model, guide, xp, "iwae", block_size=BLOCK, local_steps=300,
                                    num_samples=400, log_px_options={"k": 50}).to_json()
    return res


def main() -> None:
    out = Path(sys.argv[1])
    # this rank's stderr (Python tracebacks, native aborts, and with faulthandler the Python
    # stack of a native crash) goes to OUT_DIR/rank{r}.log for the test to report
    log = open(out / f"rank{os.environ.get('RANK', 0)}.log", "w")
    os.dup2(log.fileno(), 2)
    faulthandler.enable()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    if not ddp.init_from_env():
        raise SystemExit("run me with torchrun --nproc_per_node 2")
    res = scenarios(out, ddp.rank())
    res["world_size"] = ddp.world_size()
    torch.save(res, out / f"rank{ddp.rank()}.pt")
    ddp.shutdown()


if __name__ == "__main__":
    main()
