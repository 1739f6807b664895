"""What every per-datapoint estimate in ppvae shares: values ``[N]`` with standard errors ``[N]``.

Bounds (:class:`ppvae.Bound`), AIS results (:class:`ppvae.AISResult`) and log p(x) references
(:class:`ppvae.LogPx`) are each a record with ``per_datapoint`` and ``stderr`` fields. Their
averages over datapoints and the Monte Carlo standard error of that average are defined here
once; the records' ``mean`` and ``mean_stderr`` properties return them.
"""

from __future__ import annotations

import torch

__all__ = ["mean_stderr", "record_mean", "record_mean_stderr"]


def mean_stderr(stderr: torch.Tensor) -> float:
    """Monte Carlo s.e. of a mean over datapoints with independent errors ``stderr [N]``.

    It is ``sqrt(sum_n se_n^2) / N``.
    """
    return float(stderr.pow(2).sum().sqrt() / stderr.numel())


def record_mean(record) -> float:
    """Average of a record's ``per_datapoint`` over datapoints."""
    return float(record.per_datapoint.detach().mean())


def record_mean_stderr(record) -> float:
    """Monte Carlo standard error of :func:`record_mean` (independent errors across datapoints)."""
    return mean_stderr(record.stderr)
