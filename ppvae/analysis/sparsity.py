"""How sparse a guide's codes are: activation rates, active units, dead units, L1, Hoyer.

For the code c(x) of a latent site (the point-mass code of a sparse autoencoder,
:class:`guides.SparseEncoder`, or a draw of any guide) over a data set of N datapoints and K code
units, :func:`code_sparsity` reports:

* per unit j: the activation rate, the fraction of datapoints with |c_j| > threshold, and the
  mean activation rho_hat_j = mean_n c_nj (the quantity the KL-to-target-rate penalty of Ng's
  sparse autoencoder notes drives to rho for sigmoid codes,
  :func:`ppvae.train.sparsity.sparsity_kl`); a unit active on no datapoint is *dead*;
* per datapoint: the number of active units, the L1 norm |c|_1, and the Hoyer (2004) sparsity
  (sqrt(K) - |c|_1 / |c|_2) / (sqrt(K) - 1), which is 1 for a code with one non-zero entry and 0
  for a code with all entries equal in size (and taken as 1 for the all-zero code).

The guide alone is run (its sites traced, modules in eval mode, no gradients), in row chunks of
``batch_size``; one value is drawn per datapoint, so for a stochastic guide the numbers are
those of one draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.modes import evaluation
from ..core.records import frame, record_repr
from ..core.trace import trace_fn

__all__ = ["SparsityReport", "code_sparsity", "hoyer_sparsity"]


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of the codes of one latent site over a data set (module docstring)."""

    site: str  # the latent site
    threshold: float  # a unit is active on a datapoint when |c| > threshold
    rate: torch.Tensor  # [K] fraction of datapoints on which each unit is active
    mean_activation: torch.Tensor  # [K] mean code value per unit (rho_hat for sigmoid codes)
    active: torch.Tensor  # [N] number of active units per datapoint
    l1: torch.Tensor  # [N] |c|_1 per datapoint
    hoyer: torch.Tensor  # [N] Hoyer sparsity per datapoint, in [0, 1]

    __repr__ = record_repr

    @property
    def code_dim(self) -> int:
        """K, the number of code units."""
        return self.rate.numel()

    @property
    def dead(self) -> torch.Tensor:
        """[K] bool: units active on no datapoint."""
        return self.rate == 0

    @property
    def dead_fraction(self) -> float:
        """The fraction of units that are dead."""
        return float(self.dead.double().mean())

    @property
    def mean_active(self) -> float:
        """The mean number of active units per datapoint."""
        return float(self.active.double().mean())

    @property
    def active_fraction(self) -> float:
        """The mean fraction of units active on a datapoint (``mean_active / K``)."""
        return self.mean_active / self.code_dim

    @property
    def mean_l1(self) -> float:
        """The mean L1 norm of a code."""
        return float(self.l1.double().mean())

    @property
    def mean_hoyer(self) -> float:
        """The mean Hoyer sparsity of a code."""
        return float(self.hoyer.double().mean())

    def summary(self) -> str:
        """One line: active units, dead units, mean activation, L1 and Hoyer sparsity."""
        return (f"{self.site}: {self.mean_active:.2f}/{self.code_dim} units active per "
                f"datapoint (|c| > {self.threshold:g}; {100 * self.active_fraction:.1f}%), "
                f"{int(self.dead.sum())} dead ({100 * self.dead_fraction:.1f}%), mean activation "
                f"{float(self.mean_activation.double().mean()):.4g}, mean L1 {self.mean_l1:.4g}, "
                f"Hoyer sparsity {self.mean_hoyer:.3f}")

    def to_dataframe(self, per: str = "unit"):
        """A pandas DataFrame, one row per code unit (``per="unit"``) or per datapoint.

        Args:
            per: ``"unit"`` (index ``unit``; columns ``rate``, ``mean_activation``, ``dead``) or
                ``"datapoint"`` (index ``datapoint``; columns ``active``, ``l1``, ``hoyer``).

        Returns:
            The DataFrame.
        """
        if per == "unit":
            return frame({"rate": self.rate, "mean_activation": self.mean_activation,
                          "dead": self.dead}, index_name="unit")
        if per == "datapoint":
            return frame({"active": self.active, "l1": self.l1, "hoyer": self.hoyer})
        raise ValueError(f"per must be 'unit' or 'datapoint', got {per!r}")


def hoyer_sparsity(code: torch.Tensor) -> torch.Tensor:
    """Hoyer's (2004) sparsity of each row of ``code`` ``[..., K]`` (K >= 2): ``[...]`` in [0, 1].

    ``(sqrt(K) - |c|_1 / |c|_2) / (sqrt(K) - 1)``; the all-zero row counts as 1 (maximally sparse).
    """
    k = code.shape[-1]
    if k < 2:
        raise ValueError(f"Hoyer sparsity needs at least 2 code units, got {k}")
    l1, l2 = code.abs().sum(-1), torch.linalg.vector_norm(code, dim=-1)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(torch.finfo(code.dtype).tiny), 1.0)
    return ((math.sqrt(k) - ratio) / (math.sqrt(k) - 1)).clamp(0.0, 1.0)


def _shape(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if hasattr(value, "shape") else type(value).__name__


def _codes(guide, data: torch.Tensor, site: str | None, kwargs: Mapping[str, Any],
           batch_size: int) -> tuple[str, torch.Tensor]:
    """The site's name and its values ``[N, K]`` over ``data``, in chunks of rows."""
    chunks: list[torch.Tensor] = []
    n = data.shape[0]
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        kw = {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
              for k, v in kwargs.items()}
        tr = trace_fn(guide, data[rows], kw)
        latent = [name for name, s in tr.nodes.items()
                  if s["type"] == "sample" and not s["is_observed"]]
        if site is None:
            if len(latent) != 1:
                raise ValueError(f"code_sparsity needs the code site, and the guide samples "
                                 f"{latent}: pass site=")
            site = latent[0]
        if site not in tr.nodes or site not in latent:
            raise ValueError(f"code_sparsity: the guide samples no latent site '{site}'; it "
                             f"samples {latent}")
        value, b = tr.nodes[site]["value"], rows.stop - rows.start
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] != b:
            raise ValueError(f"code_sparsity needs the code of site '{site}' as [N, K] (one "
                             f"event dimension); got {_shape(value)} for {b} rows")
        chunks.append(value)
    assert site is not None
    return site, torch.cat(chunks)


def code_sparsity(guide, data: torch.Tensor, *, site: str | None = None, threshold: float = 1e-2,
                  batch_size: int = 1024,
                  model_kwargs: Mapping[str, Any] | None = None) -> SparsityReport:
    """Sparsity of the guide's codes of ``site`` over ``data`` (see the module docstring).

    Args:
        guide: a guide keeping the ppvae contract (e.g. :class:`guides.SparseEncoder`).
        data: the datapoints ``[N, ...]``.
        site: the code's latent site (default: the guide's only latent site).
        threshold: a unit is active on a datapoint when |c| > threshold (0: non-zero).
        batch_size: rows per guide run.
        model_kwargs: keyword arguments of the guide; tensors with N rows are split with the data.

    Returns:
        A :class:`SparsityReport`.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if data.shape[0] < 1:
        raise ValueError("code_sparsity needs at least one datapoint")
    with torch.no_grad(), evaluation(guide):
        site, code = _codes(guide, data, site, dict(model_kwargs or {}), batch_size)  # [N, K]
        on = code.abs() > threshold  # [N, K]
        wide = code.double()  # [N, K]
        rate, mean, active = on.double().mean(0), wide.mean(0), on.sum(-1)  # [K], [K], [N]
        l1, hoyer = wide.abs().sum(-1), hoyer_sparsity(wide)  # [N] each
    return SparsityReport(site, float(threshold), rate.cpu(), mean.cpu(), active.cpu(), l1.cpu(),
                          hoyer.cpu())
