"""Disentanglement metrics: how each known generative factor is carried by the latent codes.

For data with known discrete factors v_1..v_F (e.g. :mod:`ppvae.data.sprites`) and a trained
pair with a continuous latent site z of K dimensions:

* :func:`latent_codes`: the representation of each datapoint, the mean of q(z | x) (the
  distribution's ``mean`` where it has one: Gaussian, full-covariance Gaussian, point mass;
  otherwise, as for normalizing flows, the average of ``num_samples`` draws), with the networks
  in eval mode.
* :func:`mutual_information`: the matrix I(z_j; v_k) in nats, each code dimension discretized
  into ``bins`` equal-width bins over its range, the plug-in estimator of the disentanglement
  library of Locatello et al. (2019). Its bias is about (B_j - 1)(V_k - 1) / (2N) nats for B_j
  occupied bins and V_k factor values (Miller 1955; Paninski 2003), small for N in thousands.
* :func:`mig`: the mutual information gap of Chen et al. (2018), the mean over factors of
  (I(z_a; v_k) - I(z_b; v_k)) / H(v_k) for the two most informative dimensions a, b: 1 when
  each factor lives in one dimension alone, 0 when two dimensions carry it equally.
* :func:`factor_vae_score`: the score of Kim and Mnih (2018). Codes are divided by their
  standard deviation over the data and dimensions with variance at most ``threshold``
  (collapsed, as the active-unit criterion of Burda et al. 2016) are left out. Each vote fixes
  one factor k at a value, takes ``batch_size`` datapoints sharing that value and names the
  dimension of least variance; a majority-vote classifier from dimension to factor is fitted
  on ``num_train`` votes and its accuracy on ``num_eval`` further votes is the score. The
  batches are drawn (with replacement) from the rows of the given data that share the value,
  not rendered afresh, so any labelled data set works and no simulator is needed; the values
  are drawn as the data's own distribution of them.
* :func:`disentanglement`: all of these for a pair on data, as a :class:`DisentanglementReport`
  whose ``best_latent`` names the dimension most informative of each factor (the one to
  traverse in a figure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..core.contract import ContractError, check_pair, find_data_plate, guide_latent_names
from ..core.enum import is_discrete
from ..core.modes import evaluation
from ..core.records import frame, record_repr
from ..core.trace import particle_groups, trace_fn

__all__ = ["DisentanglementReport", "FactorVAEScore", "MIGScore", "disentanglement",
           "factor_vae_score", "latent_codes", "mig", "mutual_information"]


class MIGScore(NamedTuple):
    """The mutual information gap (Chen et al. 2018) and the quantities behind it."""

    score: float  # mean of per_factor over factors with positive entropy
    per_factor: torch.Tensor  # [F] (I_top1 - I_top2) / H(v_k); NaN for a constant factor
    mutual_information: torch.Tensor  # [K, F] I(z_j; v_k) in nats
    entropy: torch.Tensor  # [F] H(v_k) in nats
    bins: int  # equal-width bins per code dimension

    def __repr__(self) -> str:
        """One field per line, tensors summarized (:func:`ppvae.core.records.record_repr`)."""
        return record_repr(self)

    def to_dataframe(self):
        """One row per factor (pandas; index ``factor``): ``mig``, ``entropy``, ``mi[j]``."""
        return frame({"mig": self.per_factor, "entropy": self.entropy,
                      "mi": self.mutual_information.T}, index_name="factor")


class FactorVAEScore(NamedTuple):
    """The FactorVAE disentanglement score (Kim and Mnih 2018) and its votes."""

    score: float  # accuracy of the majority-vote classifier on the held-out votes
    train_accuracy: float  # its accuracy on the votes it was fitted to
    votes: torch.Tensor  # [K, F] int64: training votes (dimension of least variance, factor)
    active: torch.Tensor  # [K] bool: dimensions that could be voted for (variance > threshold)
    num_train: int
    num_eval: int
    batch_size: int

    def __repr__(self) -> str:
        """One field per line, tensors summarized (:func:`ppvae.core.records.record_repr`)."""
        return record_repr(self)

    def to_dataframe(self):
        """One row per latent dimension (pandas; index ``dim``): ``active`` and ``votes[k]``."""
        return frame({"active": self.active, "votes": self.votes}, index_name="dim")


def _as_tensor(a, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[0] < 2:
        raise ValueError(f"{name} must be [N, ...] with N >= 2 rows and one column per "
                         f"{'latent dimension' if name == 'codes' else 'factor'}; got shape "
                         f"{tuple(t.shape)}")
    return t


def _inputs(codes, factors) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Codes ``[N, K]`` float64; factors recoded to ``0 .. V_k - 1`` ``[N, F]``; the V_k."""
    c, f = _as_tensor(codes, "codes"), _as_tensor(factors, "factors")
    if f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
        raise ValueError(f"factors must be integer indices, got {f.dtype}")
    if c.shape[0] != f.shape[0]:
        raise ValueError(f"codes has {c.shape[0]} rows but factors has {f.shape[0]}")
    f = f.to(c.device)
    cols = [torch.unique(f[:, k], return_inverse=True) for k in range(f.shape[1])]
    recoded = torch.stack([inv for _, inv in cols], dim=1)  # [N, F]
    return c.double(), recoded, [len(vals) for vals, _ in cols]


def _discretize(c: torch.Tensor, bins: int) -> torch.Tensor:
    """``[N, K]`` bin indices of equal-width bins over each column's range (a constant: 0)."""
    lo, hi = c.min(0).values, c.max(0).values
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((c - lo) / width * bins).floor().clamp(0, bins - 1).long()


def _plogp(p: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(p, p)


def _entropies(f: torch.Tensor, nvals: list[int]) -> torch.Tensor:
    n = f.shape[0]
    return torch.stack([-_plogp(torch.bincount(f[:, k], minlength=v).double() / n).sum()
                        for k, v in enumerate(nvals)])


def mutual_information(codes, factors, bins: int = 20) -> torch.Tensor:
    """The plug-in mutual information I(z_j; v_k) of discretized codes and factors, in nats.

    Args:
        codes: ``[N, K]`` representations (tensor or array).
        factors: ``[N, F]`` (or ``[N]``) integer factor values.
        bins: equal-width bins per code dimension, over its range in the data.

    Returns:
        ``[K, F]`` float64 tensor.
    """
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins}")
    c, f, nvals = _inputs(codes, factors)
    b = _discretize(c, int(bins))  # [N, K]
    n, k_dim = b.shape
    out = []
    for k, v in enumerate(nvals):
        cell = b * v + f[:, k:k + 1] + torch.arange(k_dim, device=b.device) * (bins * v)
        p = torch.bincount(cell.reshape(-1), minlength=k_dim * bins * v).double()
        p = p.reshape(k_dim, bins, v) / n  # [K, bins, V] joint frequencies
        mi = (_plogp(p).sum((1, 2)) - _plogp(p.sum(2)).sum(1)
              - _plogp(p.sum(1)).sum(1))  # H(b) + H(v) - H(b, v)
        out.append(mi.clamp_min(0.0))
    return torch.stack(out, dim=1)


def mig(codes, factors, bins: int = 20) -> MIGScore:
    """The mutual information gap of Chen et al. (2018) (see the module docstring).

    Args:
        codes: ``[N, K]`` representations.
        factors: ``[N, F]`` integer factor values.
        bins: equal-width bins per code dimension (20, as Locatello et al. 2019).

    Returns:
        A :class:`MIGScore`; a factor with one value in the data (entropy 0) has NaN and is
        left out of the mean.
    """
    mi = mutual_information(codes, factors, bins)  # [K, F]
    _, f, nvals = _inputs(codes, factors)
    h = _entropies(f, nvals)  # [F]
    top = mi.sort(dim=0, descending=True).values  # [K, F]
    second = top[1] if top.shape[0] > 1 else torch.zeros_like(top[0])
    per = torch.where(h > 0, (top[0] - second) / h.clamp_min(1e-300),
                      torch.full_like(h, float("nan")))
    finite = per[~per.isnan()]
    score = float(finite.mean()) if finite.numel() else float("nan")
    return MIGScore(score, per, mi, h, int(bins))


def _vote_rows(f: torch.Tensor, nvals: list[int], factor: torch.Tensor, anchor: torch.Tensor,
               u: torch.Tensor) -> torch.Tensor:
    """``[M, B]`` rows sharing factor ``factor[m]``'s value at row ``anchor[m]``."""
    order = torch.argsort(f, dim=0, stable=True)  # [N, F] rows sorted by each factor
    counts = torch.zeros(f.shape[1], max(nvals), dtype=torch.long, device=f.device)
    for k, v in enumerate(nvals):
        counts[k, :v] = torch.bincount(f[:, k], minlength=v)
    starts = counts.cumsum(1) - counts  # [F, Vmax] first sorted position of each value
    value = f[anchor, factor]  # [M]
    cnt = counts[factor, value][:, None]  # [M, 1]
    pos = starts[factor, value][:, None] + torch.minimum((u * cnt).long(), cnt - 1)  # [M, B]
    return order[pos, factor[:, None]]


def factor_vae_score(codes, factors, *, batch_size: int = 64, num_train: int = 800,
                     num_eval: int = 800, threshold: float = 1e-2, seed: int = 0
                     ) -> FactorVAEScore:
    """The FactorVAE score of Kim and Mnih (2018) on the rows of the data (module docstring).

    Args:
        codes: ``[N, K]`` representations.
        factors: ``[N, F]`` integer factor values; factors with one value are not voted on.
        batch_size: datapoints per vote (L in the paper).
        num_train: votes the majority-vote classifier is fitted on.
        num_eval: held-out votes it is scored on.
        threshold: dimensions whose variance over the data is at most this are left out.
        seed: seeds the votes (a CPU generator: the same votes on every device).

    Returns:
        A :class:`FactorVAEScore`.
    """
    for name, val in (("batch_size", batch_size), ("num_train", num_train),
                      ("num_eval", num_eval)):
        if int(val) != val or val < (2 if name == "batch_size" else 1):
            raise ValueError(f"{name} must be a positive integer (batch_size >= 2), got {val}")
    c, f, nvals = _inputs(codes, factors)
    var = c.var(0)  # [K]
    active = var > threshold
    if not bool(active.any()):
        raise ValueError(f"no code dimension varies over the data (every variance <= threshold "
                         f"{threshold:g}): the representation has collapsed")
    varying = [k for k, v in enumerate(nvals) if v > 1]
    if not varying:
        raise ValueError("every factor takes a single value in the data: nothing to vote on")
    dims = torch.nonzero(active).reshape(-1)  # [A] the active dimensions
    z = c[:, dims] / var[dims].sqrt()  # [N, A] normalized by the std over the data
    g, m = torch.Generator().manual_seed(seed), int(num_train) + int(num_eval)
    factor = torch.tensor(varying)[torch.randint(len(varying), (m,), generator=g)]  # [M]
    anchor = torch.randint(c.shape[0], (m,), generator=g)  # [M] rows giving the fixed value
    u = torch.rand(m, int(batch_size), generator=g, dtype=torch.float64)  # [M, B]
    factor, anchor, u = factor.to(c.device), anchor.to(c.device), u.to(c.device)
    rows = _vote_rows(f, nvals, factor, anchor, u)  # [M, B]
    dim = dims[z[rows].var(1).argmin(-1)]  # [M] the dimension of least variance
    votes = torch.zeros(c.shape[1], f.shape[1], dtype=torch.long, device=c.device)
    votes.index_put_((dim[:num_train], factor[:num_train]),
                     torch.ones(num_train, dtype=torch.long, device=c.device), accumulate=True)
    majority = votes.argmax(1)  # [K] the classifier: the factor each dimension votes for most
    train_acc = votes.max(1).values.sum().double() / num_train
    eval_acc = (majority[dim[num_train:]] == factor[num_train:]).double().mean()
    return FactorVAEScore(float(eval_acc), float(train_acc), votes, active, int(num_train),
                          int(num_eval), int(batch_size))


class _Site(NamedTuple):
    name: str
    first: bool  # the guide's first latent: its q(z | x) depends on x alone
    vectorized: bool | None  # the guide broadcasts over the particle plate (None: unknown)
    particle_dim: int


def _take(kwargs: Mapping[str, Any], rows: slice, n: int) -> dict[str, Any]:
    """The keyword arguments of a row chunk: tensors with N leading rows are sliced."""
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
            for k, v in kwargs.items()}


def _pick(site: str | None, latent: Sequence[str], discrete: Sequence[str], who: str) -> str:
    """The site to read: ``site``, or the only continuous one of ``latent``."""
    listed = ", ".join(f"'{s}'" + (" (discrete)" if s in discrete else "") for s in latent)
    if site is None:
        continuous = [s for s in latent if s not in discrete]
        if len(continuous) == 1:
            return continuous[0]
        if not continuous and latent:
            raise ContractError(
                f"disentanglement metrics need a continuous latent site, but every latent site "
                f"of {who} in the data plate has discrete support ({listed}; e.g. VQ-VAE codes)")
        raise ContractError(f"{who} has {len(continuous)} continuous latent sites in the data "
                            f"plate ({listed or 'none'}); name one with site=...")
    if site not in latent:
        raise ContractError(f"no latent site '{site}' in the data plate; the latent sites of "
                            f"{who} there are {listed or 'none'}")
    if site in discrete:
        raise ContractError(f"latent site '{site}' has discrete support (e.g. VQ-VAE codes); "
                            "disentanglement metrics need a continuous latent")
    return site


def _resolve(guide, model, x: torch.Tensor, kwargs: dict, site: str | None) -> _Site:
    """Which site to read, and how the guide is traced (with the model: :func:`check_pair`)."""
    if model is not None:
        info = check_pair(model, guide, x, model_kwargs=kwargs)
        latent = [s for s in info.latent if s not in info.globals and s not in info.enumerated]
        name = _pick(site, latent, info.discrete, "the pair")
        return _Site(name, info.latent[0] == name, info.vectorized, info.particle_dim)
    tr = trace_fn(guide, x, kwargs)
    names = guide_latent_names(tr)
    if not names:
        raise ContractError("the guide samples no latent site")
    plate = find_data_plate([tr.nodes[s] for s in names], x.shape[0])
    latent = [s for s in names if any(f.name == plate for f in tr.nodes[s]["cond_indep_stack"])]
    discrete = [s for s in latent if is_discrete(tr.nodes[s]["fn"])]
    name = _pick(site, latent, discrete, "the guide")
    nesting = max((-int(f.dim) for s in names for f in tr.nodes[s]["cond_indep_stack"]
                   if f.vectorized and f.dim is not None), default=1)
    return _Site(name, names[0] == name, None, -(max(nesting, 1) + 1))


def _mean(fn) -> torch.Tensor | None:
    try:
        return fn.mean
    except NotImplementedError:  # no closed-form mean (transformed distributions, flows)
        return None


def _flat(t: torch.Tensor, fn, name: str, n: int) -> torch.Tensor:
    """A site's ``[..., N, *event]`` tensor as ``[S, N, prod(event)]``."""
    event = tuple(fn.event_shape)
    batch = t.shape[:t.dim() - len(event)]
    if not batch or batch[-1] != n:
        raise ContractError(
            f"latent site '{name}' has batch shape {tuple(fn.batch_shape)}: its rightmost batch "
            f"dimension must be the data plate of size N = {n} (plates nested inside the data "
            "plate are not supported by disentanglement metrics)")
    return t.reshape(-1, n, int(np.prod(event, dtype=np.int64)))


def _chunk_codes(guide, x: torch.Tensor, kwargs: dict, s: _Site, num_samples: int
                 ) -> torch.Tensor:
    """``[n, K]`` codes of one row chunk."""
    n = x.shape[0]
    if s.first:  # q(z | x) has no upstream latent: one trace gives its mean
        node = trace_fn(guide, x, kwargs).nodes[s.name]
        mean = _mean(node["fn"])
        if mean is not None:
            return _flat(mean, node["fn"], s.name, n).mean(0)
    total = None
    for group in particle_groups(num_samples, s.vectorized is not False):
        try:
            node = trace_fn(guide, x, kwargs, particles=group,
                            particle_dim=s.particle_dim).nodes[s.name]
        except Exception:
            if s.vectorized is not None or group is None:
                raise
            return _chunk_codes(guide, x, kwargs, s._replace(vectorized=False), num_samples)
        mean = _mean(node["fn"])  # averaged over the draws of the upstream latents
        value = node["value"] if mean is None else mean
        assert isinstance(value, torch.Tensor)
        part = _flat(value, node["fn"], s.name, n).sum(0)
        total = part if total is None else total + part
    assert total is not None  # num_samples >= 1
    return total / num_samples


def latent_codes(guide, x: torch.Tensor, *, model=None, site: str | None = None,
                 num_samples: int = 16, chunk_size: int = 1024,
                 model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The representation of each row of ``x``: the mean of q(z | x) for a latent site.

    The guide's distribution's ``mean`` where it has one (Gaussian, full-covariance Gaussian,
    point mass), else the average of ``num_samples`` draws (flows); for a site below another
    latent (a hierarchical guide's upper layer) the mean is averaged over ``num_samples`` draws
    of the latents above it. The networks run in eval mode without gradients, ``chunk_size``
    rows at a time (tensors in ``model_kwargs`` with N rows are chunked alongside).

    Args:
        guide: the guide (recognition network).
        x: ``[N, ...]`` data.
        model: the model; with it the pair is checked (:func:`ppvae.check_pair`) and a latent
            with discrete support in the model (VQ-VAE codes, a point mass in the guide) is
            refused by name. Without it the guide alone is traced.
        site: the latent site; None: the only continuous latent site in the data plate.
        num_samples: draws per datapoint where the mean is not in closed form.
        chunk_size: rows per evaluation.
        model_kwargs: keyword arguments of guide and model (e.g. labels ``y``).

    Returns:
        ``[N, K]`` codes (the event dimensions flattened), on ``x``'s device.
    """
    return _codes(guide, x, model, site, num_samples, chunk_size, dict(model_kwargs or {}))[1]


def _codes(guide, x: torch.Tensor, model, site: str | None, num_samples: int, chunk_size: int,
           kwargs: dict) -> tuple[str, torch.Tensor]:
    """(the site's name, its ``[N, K]`` codes): :func:`latent_codes`."""
    for name, val in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if isinstance(val, bool) or int(val) != val or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor [N, ...] with N >= 1 rows, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    n, num_samples, chunk_size = x.shape[0], int(num_samples), int(chunk_size)
    with evaluation(guide, model), torch.no_grad():
        first = slice(0, min(n, chunk_size))
        s = _resolve(guide, model, x[first], _take(kwargs, first, n), site)
        parts = [_chunk_codes(guide, x[i:i + chunk_size],
                              _take(kwargs, slice(i, i + chunk_size), n), s, num_samples)
                 for i in range(0, n, chunk_size)]
    return s.name, torch.cat(parts)


class DisentanglementReport(NamedTuple):
    """MIG and FactorVAE score of one latent site, with the mutual information behind them."""

    latent: str  # the site name
    factor_names: tuple[str, ...]  # [F]
    mig: float  # mean MIG over factors (Chen et al. 2018)
    mig_per_factor: torch.Tensor  # [F]
    factor_vae_score: float  # held-out accuracy of the majority vote (Kim and Mnih 2018)
    factor_vae_train_accuracy: float
    mutual_information: torch.Tensor  # [K, F] I(z_j; v_k), nats
    factor_entropy: torch.Tensor  # [F] H(v_k), nats
    best_latent: torch.Tensor  # [F] int64: argmax_j I(z_j; v_k), the dimension to traverse
    activity: torch.Tensor  # [K] variance over the data of the codes E_q[z_j | x]
    threshold: float  # a dimension is active when its activity exceeds this
    num_data: int

    def __repr__(self) -> str:
        """One field per line, tensors summarized (:func:`ppvae.core.records.record_repr`)."""
        return record_repr(self)

    @property
    def active(self) -> torch.Tensor:
        """[K] bool: active units (Burda et al. 2016)."""
        return self.activity > self.threshold

    @property
    def num_active(self) -> int:
        """The number of active units."""
        return int(self.active.sum())

    def to_dataframe(self):
        """One row per factor (pandas; index ``factor``).

        Columns ``mig``, ``entropy`` (nats), ``best_latent`` and ``mi[j]``, the mutual
        information with each latent dimension j (nats).
        """
        return frame({"mig": self.mig_per_factor, "entropy": self.factor_entropy,
                      "best_latent": self.best_latent, "mi": self.mutual_information.T},
                     index=list(self.factor_names), index_name="factor")

    def __str__(self) -> str:
        """A summary line and a table with one row per factor."""
        width = max(6, *(len(f) for f in self.factor_names))
        rows = [f"Disentanglement of '{self.latent}' on {self.num_data} datapoints "
                f"({self.num_active}/{self.activity.numel()} active units): MIG "
                f"{self.mig:.3f}, FactorVAE score {self.factor_vae_score:.3f}",
                f"{'factor':<{width}}  {'MIG':>6}  {'H (nats)':>8}  {'best z':>6}  "
                f"{'I(z; v)':>7}"]
        for k, name in enumerate(self.factor_names):
            j = int(self.best_latent[k])
            rows.append(f"{name:<{width}}  {float(self.mig_per_factor[k]):>6.3f}  "
                        f"{float(self.factor_entropy[k]):>8.3f}  {j:>6}  "
                        f"{float(self.mutual_information[j, k]):>7.3f}")
        return "\n".join(rows)


def disentanglement(model, guide, x: torch.Tensor, factors, factor_names=None, *,
                    site: str | None = None, bins: int = 20, num_samples: int = 16,
                    batch_size: int = 64, num_train: int = 800, num_eval: int = 800,
                    threshold: float = 1e-2, seed: int = 0, chunk_size: int = 1024,
                    model_kwargs: Mapping[str, Any] | None = None) -> DisentanglementReport:
    """MIG and FactorVAE score of a pair's latent codes on data with known factors.

    Args:
        model: the model (None: the guide alone is traced, see :func:`latent_codes`).
        guide: the guide.
        x: ``[N, ...]`` data.
        factors: ``[N, F]`` integer factor values of the rows of ``x`` (e.g.
            ``Dataset.factors[2]`` for the test split of ``load_dataset("sprites")``).
        factor_names: the F names (default ``v0``, ``v1``, ...).
        site: the latent site (None: the only continuous one).
        bins: bins per code dimension for the mutual information.
        num_samples: draws per datapoint where the mean of q is not in closed form.
        batch_size: datapoints per FactorVAE vote.
        num_train: FactorVAE votes the classifier is fitted on.
        num_eval: held-out FactorVAE votes.
        threshold: activity (variance of the codes) at or below which a dimension is
            inactive, for the active-unit count and the FactorVAE score.
        seed: seeds the FactorVAE votes.
        chunk_size: rows per evaluation of the guide.
        model_kwargs: keyword arguments of model and guide.

    Returns:
        A :class:`DisentanglementReport`.
    """
    f = _as_tensor(factors, "factors")
    if f.shape[0] != x.shape[0]:
        raise ValueError(f"factors has {f.shape[0]} rows but x has {x.shape[0]}")
    names = tuple(factor_names) if factor_names is not None else tuple(
        f"v{k}" for k in range(f.shape[1]))
    if len(names) != f.shape[1]:
        raise ValueError(f"{len(names)} factor names for {f.shape[1]} factors")
    latent, codes = _codes(guide, x, model, site, num_samples, chunk_size,
                           dict(model_kwargs or {}))  # [N, K]
    m = mig(codes, f, bins)
    fv = factor_vae_score(codes, f, batch_size=batch_size, num_train=num_train,
                          num_eval=num_eval, threshold=threshold, seed=seed)
    return DisentanglementReport(
        latent, names, m.score, m.per_factor, fv.score, fv.train_accuracy,
        m.mutual_information, m.entropy, m.mutual_information.argmax(0), codes.double().var(0),
        float(threshold), int(x.shape[0]))
