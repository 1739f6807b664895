"""The Wasserstein autoencoder with an MMD penalty (WAE-MMD) as a :func:`ppvae.fit` objective.

Tolstikhin, Bousquet, Gelly and Schölkopf (2018), "Wasserstein Auto-Encoders", algorithm 2:
for a minibatch x_1..x_B, codes z_n ~ q(z | x_n) and prior draws z'_1..z'_B ~ p(z),

    loss = (1/B) sum_n c(x_n, z_n)  +  lambda * MMD^2_u({z_n}, {z'_n}),

with the reconstruction cost c(x_n, z_n) = -log p(x_n | z_n): minus the model's observed-site log
densities at the guide's draws (no KL term, no guide entropy, no prior density). Each datapoint's
code is one sample of the aggregate posterior q(z) = E_x q(z | x), so the penalty matches q(z),
not each q(z | x_n), to the prior: a deterministic encoder (``guides.DeltaEncoder``) is allowed,
and so is a stochastic one (``guides.MLPEncoder``).

:func:`mmd` is the unbiased U-statistic estimator of the squared maximum mean discrepancy of
Gretton et al. (2012, lemma 6): off-diagonal means of k(z, z) and k(z', z') minus twice the mean
of k(z, z'). Kernels, for codes of d dimensions and a prior of variance sigma^2 (``scale``),
summed over the WAE paper's scales C = 2 d sigma^2 s, s in (0.1, 0.2, 0.5, 1, 2, 5, 10):

* ``"imq"``: the inverse multiquadratic C / (C + ||z - z'||^2), the paper's choice (its heavy
  tails keep gradients alive for codes far from the prior's mass). It *is* Pyro's
  ``pyro.contrib.gp.kernels.RationalQuadratic`` with ``scale_mixture=1`` and C = 2 l^2;
* ``"rbf"``: exp(-||z - z'||^2 / C), Pyro's ``RBF`` with C = 2 l^2.

The tests check both against Pyro's kernels. They are computed here rather than by calling
them, for three reasons: Pyro's kernels take 2-D inputs only (here one matrix per particle),
seven scales would compute the pairwise distances seven times (here once), and calling a kernel
``PyroModule`` registers its ``lengthscale``, ``variance`` and ``scale_mixture`` in the global
parameter store under those bare names, where a second kernel with another length scale then
reads the first one's value (and ``fit`` collects them among the pair's parameters;
``Trace_MMD`` freezes them).

Prior draws come from the *replayed model trace*: each latent site's distribution there, drawn
with ``rsample`` (``sample`` when it has none). That costs no second model run and gives a
learned prior's parameters reparameterized gradients. For a top-level latent it is p(z); for a
conditional prior (a hierarchical model's p(z1 | z2)) it is p(z1 | z2) at the *guide's* z2, so
the penalty compares q(z1) with E_q(z2)[p(z1 | z2)] rather than with the marginal p(z1). The
evaluation function :func:`latent_mmd` draws the prior ancestrally instead (the marginal p(z)
of every site).

What Pyro's ``pyro.infer.Trace_MMD`` (InfoVAE / MMD-VAE, Zhao et al. 2017), which ``fit`` also
accepts through :class:`ppvae.train.pyro_elbos.PyroObjective`, does not give for a WAE:

* its MMD samples are the *particles*: with ``num_particles`` > 1 (its default is 10) each
  particle's codes of the whole minibatch are flattened into one point of B * K values, so the
  MMD compares joint minibatch codes over ``num_particles`` samples, not the aggregate
  posterior over datapoints; and a ``pyro.contrib.gp`` kernel built with ``input_dim=K`` reads
  only the first K of those values (its ``active_dims``): the first datapoint's code. Only with
  one vectorized particle (no particle plate) does its reshaping make the B datapoints the
  samples, as a WAE needs; the tests pin both cases;
* its estimator is the biased V-statistic (means including the diagonal);
* one kernel per site: no multi-scale IMQ (and the parameter-store caveat above);
* its likelihood term is summed over the minibatch, so under ppvae's per-datapoint scale the
  loss is ``(1/B) * (sum of costs + penalty)``: the penalty's weight shrinks with the batch
  size, where the WAE's is lambda whatever B.

The objective here keeps the engine's scale contract (:mod:`ppvae.train.scaling`): the loss is
``data_scale * sum_n (c(x_n, z_n) + lambda * MMD^2_u)``, minus the mean per-datapoint objective
when ``data_scale = 1 / B``. It needs every latent inside the per-datapoint plate (no global
latents), continuous latents, reparameterized guide sites and a prior that can be sampled (not
``models.Autoencoder(prior="flat")``). A minibatch of one row has no U-statistic: its penalty
is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace

from ..core.contract import (
    PairInfo,
    check_pair,
    is_latent,
    is_observed,
    per_datapoint,
    site_log_density,
)
from ..core.modes import evaluation
from ..core.potential import prior_guide
from ..core.records import frame, record_repr
from ..core.trace import particle_groups, trace_pair
from .scaling import Factor, Objective

__all__ = ["KERNELS", "WAE", "WAE_SCALES", "LatentMMD", "latent_mmd", "mmd"]

KERNELS = ("imq", "rbf")
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # s in C = 2 d sigma^2 s (Tolstikhin et al.)


def _check_kernel(kernel: str, scale: float) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown MMD kernel {kernel!r}; choose one of {KERNELS}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale (the prior's variance sigma^2) must be a positive number, "
                         f"got {scale!r}")


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for ``a [..., n, d]`` and ``b [..., m, d]``: ``[..., n, m]``."""
    a2 = a.pow(2).sum(-1, keepdim=True)  # [..., n, 1]
    b2 = b.pow(2).sum(-1).unsqueeze(-2)  # [..., 1, m]
    return (a2 + b2 - 2 * a @ b.transpose(-1, -2)).clamp_min(0)


def _kernel(r2: torch.Tensor, kernel: str, dim: int, scale: float) -> torch.Tensor:
    """The multi-scale kernel at squared distances ``r2`` (module docstring)."""
    out = torch.zeros_like(r2)
    for s in WAE_SCALES:
        c = 2.0 * dim * scale * s
        out = out + (c / (c + r2) if kernel == "imq" else torch.exp(-r2 / c))
    return out


def _mean(k: torch.Tensor, off_diagonal: bool) -> torch.Tensor:
    """Mean of ``k [..., n, n]`` over all entries, or over its off-diagonal ones."""
    n = k.shape[-1]
    if not off_diagonal:
        return k.mean((-2, -1))
    diag = torch.diagonal(k, dim1=-2, dim2=-1).sum(-1)
    return (k.sum((-2, -1)) - diag) / (n * (n - 1))


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scale: float = 1.0,
        unbiased: bool = True) -> torch.Tensor:
    """Squared MMD between the samples ``x [..., n, d]`` and ``y [..., m, d]``.

    Args:
        x: samples of the first distribution, rows ``[..., n, d]`` (leading dims batch).
        y: samples of the second, ``[..., m, d]``.
        kernel: ``"imq"`` or ``"rbf"``, summed over the scales C = 2 d ``scale`` s, s in
            :data:`WAE_SCALES` (module docstring).
        scale: sigma^2, the prior's variance per dimension.
        unbiased: the U-statistic (off-diagonal means; needs n, m >= 2), else the biased
            V-statistic (all entries, as Pyro's ``Trace_MMD``).

    Returns:
        The estimate ``[...]`` (differentiable in ``x`` and ``y``).
    """
    _check_kernel(kernel, scale)
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"mmd needs samples as rows [..., n, d] with the same d, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if unbiased and min(x.shape[-2], y.shape[-2]) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side, got "
                         f"{x.shape[-2]} and {y.shape[-2]}")
    d = x.shape[-1]
    kxx = _kernel(_squared_distances(x, x), kernel, d, scale)  # [..., n, n]
    kyy = _kernel(_squared_distances(y, y), kernel, d, scale)  # [..., m, m]
    kxy = _kernel(_squared_distances(x, y), kernel, d, scale)  # [..., n, m]
    return _mean(kxx, unbiased) + _mean(kyy, unbiased) - 2 * kxy.mean((-2, -1))


def _data_axis(site: Mapping[str, Any], plate: str, name: str) -> int:
    """The data plate's dim (negative, among the batch dims) of a site."""
    for f in site["cond_indep_stack"]:
        if f.name == plate:
            return int(f.dim)
    raise ValueError(f"latent site '{name}' is outside the per-datapoint plate '{plate}': the "
                     "MMD treats each datapoint's code as one sample, so WAE and latent_mmd "
                     "need every latent inside that plate")


def _site_codes(value: torch.Tensor, site: Mapping[str, Any], info: PairInfo,
               name: str) -> torch.Tensor:
    """A latent site's ``value`` as one code per particle and datapoint: ``[S, N, F]``.

    Nested plates inside the data plate and the event dimensions are flattened into F; a value
    without the particle dimension gets S = 1.
    """
    nb = -info.particle_dim  # batch dims with the particle dim
    event = site["fn"].event_dim
    batch = value.dim() - event
    v = value.reshape((1,) * (nb - batch) + tuple(value.shape))  # [S?, ..., N, ..., *event]
    v = v.movedim(nb + _data_axis(site, info.data_plate, name), 1)  # [S, N, ...]
    return v.reshape(v.shape[0], v.shape[1], -1)


def _prior_draw(site: Mapping[str, Any], name: str) -> torch.Tensor:
    """One draw from a model site's distribution (reparameterized when it can be)."""
    fn = site["fn"]
    try:
        return fn.rsample() if fn.has_rsample else fn.sample()
    except NotImplementedError as e:
        raise ValueError(f"the prior of latent site '{name}' ({type(fn).__name__}) cannot be "
                         "sampled (an improper prior?); the WAE matches the codes to prior "
                         "draws: use a proper prior, e.g. models.Autoencoder(prior='normal')"
                         ) from e


@dataclass(frozen=True)
class WAE(Objective):
    """WAE-MMD: reconstruction cost plus ``mmd_weight`` times the codes' MMD^2 to the prior.

    Args:
        mmd_weight: lambda, the penalty's weight (10: the paper's MNIST value, there with a
            squared-error cost).
        kernel: ``"imq"`` (the paper's) or ``"rbf"`` (:func:`mmd`).
        scale: sigma^2, the prior's variance per dimension, which sets the kernel scales.
        num_particles: guide draws per datapoint; the loss averages over them (an MMD per
            particle).
    """

    mmd_weight: float = 10.0
    kernel: str = "imq"
    scale: float = 1.0
    num_particles: int = 1
    name = "wae"
    supports_latent_scale = False  # no latent log densities for beta to scale

    def __post_init__(self):
        _check_kernel(self.kernel, self.scale)
        if not (math.isfinite(self.mmd_weight) and self.mmd_weight >= 0):
            raise ValueError(f"mmd_weight must be a finite number >= 0, got {self.mmd_weight}")
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")

    def describe(self) -> str:
        """E.g. ``"wae(mmd_weight=10, kernel=imq, scale=1, num_particles=1)"``."""
        return (f"wae(mmd_weight={self.mmd_weight:g}, kernel={self.kernel}, "
                f"scale={self.scale:g}, num_particles={self.num_particles})")

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0):
        """``data_scale * sum_n (c(x_n, z_n) + mmd_weight * MMD^2_u)``, mean over particles."""
        self._refuse(info, latent_scale)
        b = x.shape[0]
        cost, penalty = None, None
        for group in particle_groups(self.num_particles, info.vectorized):
            guide_tr, model_tr = trace_pair(model, guide, x, kwargs or {}, particles=group,
                                            particle_dim=info.particle_dim)
            c, p = self.terms(guide_tr, model_tr, info, b)  # summed over particles
            cost = c if cost is None else cost + c
            penalty = p if penalty is None else penalty + p
        assert cost is not None and penalty is not None  # at least one particle group
        return data_scale * (cost + b * self.mmd_weight * penalty) / self.num_particles

    def terms(self, guide_tr: Trace, model_tr: Trace, info: PairInfo, b: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of one traced pair, each summed over particles.

        The reconstruction cost summed over datapoints, and MMD^2_u summed over latent sites.
        """
        cost = None
        for name, site in guide_tr.nodes.items():
            if site["type"] == "sample" and is_observed(site):
                raise ValueError(f"the guide has the observed (factor) site '{name}'; the WAE's "
                                 "cost counts the model's observed sites only: train this pair "
                                 "with the ELBO")
        for site in model_tr.nodes.values():
            if site["type"] == "sample" and is_observed(site):
                lp = site_log_density(site)  # [S?, ..., B] batch-shaped
                s = lp.shape[0] if lp.dim() == -info.particle_dim else 1
                total = per_datapoint(lp, info.particle_dim, torch.Size([s, b])).sum()
                cost = -total if cost is None else cost - total
        penalty = None
        for name, site in guide_tr.nodes.items():
            if site["type"] != "sample" or not is_latent(site):
                continue
            fn: Any = site["fn"]
            if not fn.has_rsample:
                raise ValueError(f"guide site '{name}' ({type(fn).__name__}) has no "
                                 "reparameterized sampler; the WAE needs one")
            if b < 2:  # no U-statistic from one row
                continue
            q = _site_codes(_value(site), site, info, name)  # [S, B, F]
            msite = model_tr.nodes[name]
            p = _site_codes(_prior_draw(msite, name), msite, info, name)  # [S', B, F]
            q, p = torch.broadcast_tensors(q, p)
            term = mmd(q, p, self.kernel, self.scale).sum()
            penalty = term if penalty is None else penalty + term
        if cost is None:
            raise ValueError("the model has no observed site: the WAE's cost is -log p(x | z)")
        return cost, penalty if penalty is not None else cost.new_zeros(())

    def _refuse(self, info: PairInfo, latent_scale: Factor) -> None:
        """Refuse pairs and options the WAE does not cover, saying why."""
        if info.globals:
            raise ValueError(f"the WAE's MMD treats each datapoint's code as one sample, but "
                             f"the pair has global latent site(s) {list(info.globals)}: train "
                             "it with the ELBO")
        if info.enumerated or info.discrete:
            raise ValueError(f"the WAE matches continuous codes to the prior; the model has "
                             f"discrete latent site(s) {list(info.enumerated or info.discrete)}")
        if not isinstance(latent_scale, torch.Tensor) and latent_scale != 1:
            raise ValueError("the WAE has no latent log densities to scale by beta; weight the "
                             "penalty with WAE(mmd_weight=...) instead")



@dataclass(frozen=True)
class LatentMMD:
    """MMD^2 between a guide's codes over the data and prior draws, per block of datapoints."""

    site: str  # the latent site
    mmd: float  # mean over blocks of MMD^2_u
    stderr: float  # its standard error: the blocks' standard deviation / sqrt(blocks)
    blocks: torch.Tensor  # [num_blocks] MMD^2_u of each block
    block_size: int  # codes per block (the same number of prior draws each)
    kernel: str  # "imq" or "rbf"
    scale: float  # sigma^2 of the kernel scales
    prior: str  # "model" (ancestral draws of the model's prior) or "given" (prior_codes)

    __repr__ = record_repr

    def to_dataframe(self):
        """One row per block (pandas; index ``block``): column ``mmd``."""
        return frame({"mmd": self.blocks}, index_name="block")


def _rows_of(kwargs: Mapping[str, Any], n: int, rows: slice) -> dict[str, Any]:
    """The keyword arguments of rows ``rows``: tensors with N leading rows sliced."""
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
            for k, v in kwargs.items()}


def _codes(model, guide, data: torch.Tensor, site: str, info: PairInfo, batch_size: int,
           kwargs: Mapping[str, Any], prior: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One guide code per datapoint ``[N, F]`` and, when ``prior``, one prior draw each."""
    n = data.shape[0]
    qs, ps = [], []
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        xb, kw = data[rows], _rows_of(kwargs, n, rows)
        guide_tr, _ = trace_pair(model, guide, xb, kw)
        node = guide_tr.nodes[site]
        qs.append(_site_codes(_value(node), node, info, site)[0])  # [B, F]
        if prior:
            try:
                tr = poutine.trace(prior_guide(model)).get_trace(xb, **kw)
            except NotImplementedError as e:
                raise ValueError(f"the model's prior of '{site}' cannot be sampled (an improper "
                                 "prior?): pass reference draws as prior_codes=") from e
            node = tr.nodes[site]
            ps.append(_site_codes(_value(node), node, info, site)[0])
    return torch.cat(qs), torch.cat(ps) if prior else None


def _value(node: Mapping[str, Any]) -> torch.Tensor:
    value = node["value"]
    assert isinstance(value, torch.Tensor)  # a traced sample site
    return value


def _blocks(codes: torch.Tensor, num_blocks: int, gen: torch.Generator) -> torch.Tensor:
    """``codes [M, F]`` in a seeded random order, cut into ``[num_blocks, M // num_blocks, F]``."""
    size = codes.shape[0] // num_blocks
    order = torch.randperm(codes.shape[0], generator=gen, device=gen.device)
    return codes[order.to(codes.device)][:num_blocks * size].reshape(num_blocks, size, -1)


def latent_mmd(model, guide, data: torch.Tensor, *, site: str | None = None,
               kernel: str = "imq", scale: float = 1.0, num_blocks: int = 10,
               batch_size: int = 1000, prior_codes: torch.Tensor | None = None, seed: int = 0,
               model_kwargs: Mapping[str, Any] | None = None) -> LatentMMD:
    """MMD^2_u between the guide's codes of ``data`` (one draw each) and draws of the prior.

    The codes are a sample of the aggregate posterior q(z) = E_x q(z | x); the prior draws are
    ancestral draws of the model's prior, one per datapoint (the marginal p(z), also for a
    conditional prior), or the rows of ``prior_codes``. Both are cut, in a seeded random order,
    into ``num_blocks`` disjoint blocks; each block's MMD^2_u is an independent unbiased
    estimate, so their mean has the standard error std / sqrt(num_blocks).

    Args:
        model: a model keeping the ppvae contract.
        guide: its guide.
        data: rows ``[N, ...]``.
        site: the latent site (default: the pair's only one).
        kernel: ``"imq"`` or ``"rbf"`` (:func:`mmd`).
        scale: sigma^2 of the kernel scales.
        num_blocks: blocks (>= 2), each of ``N // num_blocks`` codes (>= 2).
        batch_size: rows encoded per trace.
        prior_codes: reference draws ``[M, ...]`` (flattened per row) instead of the model's
            prior, e.g. N(0, I) codes for a model with an improper prior.
        seed: seeds the guide's and the prior's draws and the blocks (global RNG restored).
        model_kwargs: keyword arguments of model and guide (tensors with N rows are sliced).

    Returns:
        A :class:`LatentMMD` record.
    """
    _check_kernel(kernel, scale)
    kwargs = dict(model_kwargs or {})
    n = data.shape[0]
    if num_blocks < 2 or n // num_blocks < 2:
        raise ValueError(f"need num_blocks >= 2 blocks of >= 2 datapoints; got {num_blocks} "
                         f"blocks of {n} datapoints")
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), evaluation(model, guide), torch.no_grad():
        torch.manual_seed(seed)
        info = check_pair(model, guide, data[:batch_size], model_kwargs=_rows_of(
            kwargs, n, slice(0, batch_size)))
        if site is None:
            if len(info.latent) != 1:
                raise ValueError(f"the pair has latent sites {list(info.latent)}: choose one "
                                 "with site=")
            site = info.latent[0]
        elif site not in info.latent:
            raise ValueError(f"no latent site '{site}'; the pair's are {list(info.latent)}")
        q, p = _codes(model, guide, data, site, info, batch_size, kwargs, prior_codes is None)
        if prior_codes is not None:
            p = prior_codes.reshape(prior_codes.shape[0], -1).to(q)
        assert p is not None  # drawn or given
        if p.shape[-1] != q.shape[-1] or p.shape[0] // num_blocks < 2:
            raise ValueError(f"prior_codes need rows of {q.shape[-1]} values and >= "
                             f"{2 * num_blocks} rows, got shape {tuple(p.shape)}")
        gen = torch.Generator().manual_seed(seed)
        per_block = mmd(_blocks(q, num_blocks, gen), _blocks(p, num_blocks, gen), kernel, scale)
    return LatentMMD(site, float(per_block.mean()), float(per_block.std() / num_blocks**0.5),
                     per_block, n // num_blocks, kernel, float(scale),
                     "model" if prior_codes is None else "given")
