"""Statistics over the seeds of a sweep: a point's mean and spread, and paired differences.

Seeds are the unit of replication: seed ``k`` fixes a run's init stream and data order, so
the values of one point over its seeds are independent draws, and the same seed in two
points is a matched pair. Intervals are two-sided 95 % intervals of the mean from Student's
t distribution with ``n - 1`` degrees of freedom; with fewer than two values there is no
estimate of spread and every spread-derived number is ``nan``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Description:
    """A sample's size, mean, standard deviation and confidence interval of the mean.

    Attributes:
      n: how many values.
      mean: their mean (``nan`` when ``n == 0``).
      std: sample standard deviation, ``ddof=1`` (``nan`` when ``n < 2``).
      ci_low, ci_high: the 95 % t interval of the mean (``nan`` when ``n < 2``).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Two points compared over the seeds they share (differences taken as ``a - b``).

    Attributes:
      n: how many shared seeds (pairs).
      mean_difference: mean of ``a[seed] - b[seed]`` (``nan`` when ``n == 0``).
      ci_low, ci_high: the 95 % t interval of the mean difference (``nan`` when ``n < 2``;
        both equal ``mean_difference`` when every difference is the same).
      p_value: two-sided paired t-test of "mean difference = 0" (``nan`` when ``n < 2``;
        when every difference is the same, 1.0 if that difference is 0, else 0.0).
    """

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float


def describe(values: Sequence[float]) -> Description:
    """Size, mean, ``ddof=1`` standard deviation and 95 % t interval of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return Description(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Description(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = _half_width(std, n)
    return Description(n, mean, std, mean - half, mean + half)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> PairedComparison:
    """Paired comparison of ``a`` and ``b`` (``{seed: value}``) over their shared seeds.

    A paired t-test: the differences ``a[seed] - b[seed]`` are tested for mean zero, so the
    variation that seeds share between the two points (an easy init, a lucky data order)
    cancels out.
    """
    seeds = sorted(a.keys() & b.keys())
    d = describe([a[s] - b[s] for s in seeds])
    if d.n < 2:
        return PairedComparison(d.n, d.mean, math.nan, math.nan, math.nan)
    if d.std == 0:
        # The t statistic is 0/0 or ±inf: identical differences are either no effect at
        # all or an effect with no noise.
        return PairedComparison(d.n, d.mean, d.mean, d.mean, 1.0 if d.mean == 0 else 0.0)
    t = d.mean / (d.std / math.sqrt(d.n))
    p = 2 * float(scipy.stats.t.sf(abs(t), df=d.n - 1))
    return PairedComparison(d.n, d.mean, d.ci_low, d.ci_high, p)


def _half_width(std: float, n: int) -> float:
    """Half the width of the t interval of the mean of ``n`` values with sample ``std``."""
    quantile = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1))
    return quantile * std / math.sqrt(n)
