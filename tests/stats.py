"""Thresholds for the suite's statistical assertions, derived instead of chosen.

A check ``|estimate - truth| / s.e. < z`` over ``m`` independent comparisons raises a false alarm
with probability at most ``false_alarm`` when ``z`` is the two-sided normal quantile at
``false_alarm / m`` (Bonferroni). The suite's default, 1e-3 per test, keeps the chance that any of
its ~100 statistical checks fails on correct code at about 10% before seeds are fixed; with the
seeds fixed, each check is deterministic, and a failure after a change is a real signal.
"""

from statistics import NormalDist

__all__ = ["z_threshold"]


def z_threshold(comparisons: int = 1, false_alarm: float = 1e-3, *,
                two_sided: bool = True) -> float:
    """z such that ``comparisons`` standard-normal checks all pass with probability at least
    ``1 - false_alarm``: the ``1 - false_alarm / (sides * comparisons)`` normal quantile."""
    if comparisons < 1 or not 0 < false_alarm < 1:
        raise ValueError(f"need comparisons >= 1 and 0 < false_alarm < 1, got {comparisons}, "
                         f"{false_alarm}")
    sides = 2 if two_sided else 1
    return NormalDist().inv_cdf(1 - false_alarm / (sides * comparisons))
