"""Online calibration of a metric series' alarms: a threshold that follows drift (numpy only).

A conformal p-value promises a false-alarm rate of α on windows exchangeable with the calibration
windows, the last block of the training period. A monitored series drifts after it (a level that
moves, a load that grows): on NAB's 29 labelled series the fixed threshold flagged 26 times α of
the later normal points (benchmarks/README.md, "NAB: metric series").

The rule here, a robust location–scale recalibration on recent windows:

* it keeps the last N scores, N the number of calibration scores, starting from the calibration
  scores themselves (in a seeded order, so that the first to leave are a fair sample of them);
* after every K = max(1, N // 10) rows entered it recomputes their median m and interquartile range
  s (and the calibration scores' m₀ and s₀ once);
* a row's score x is read on the calibration scale, a = m₀ + (x − m)·s₀/s, and gets the conformal
  p-value of a against the calibration scores (Bates et al. 2023, eq. 2); it is flagged when
  a > t₀, the model's threshold, that is when x > m + (t₀ − m₀)·s/s₀;
* a flagged row enters the recent scores at that threshold, not at its score (winsorized), so an
  incident cannot raise the threshold by its size: it moves the median only once it fills half of
  the last N windows and the interquartile range once it fills a quarter. A level shift that lasts
  does: its windows enter at the threshold until they hold the median, and the threshold climbs
  with it until the new level is read as normal;
* rows scored on a padded window (:attr:`vae_anomaly.deploy.series.Windower.warmup`) and rows
  without a finite score do not enter.

What holds: when the recent normal windows' scores are a shifted and stretched copy of the
calibration scores (a + b·score, b > 0), the p-values are again conformal once N such windows have
entered. What does not: a drift that changes the shape of the upper tail alone is not followed, and
no long-run rate is guaranteed on an arbitrary sequence (as adaptive conformal inference would, at
the price of letting every incident raise the threshold: Gibbs & Candès, NeurIPS 2021).
"""

from __future__ import annotations

import numpy as np

from .calibration import conformal_p_values

_QUARTILES = (25.0, 50.0, 75.0)


def _median_iqr(scores: np.ndarray) -> tuple[float, float]:
    q1, q2, q3 = np.percentile(scores, _QUARTILES)
    return float(q2), float(q3 - q1)


class OnlineCalibration:
    """The online recalibration of one score kind's threshold over a series (see the module).

    Parameters
    ----------
    calibration_sorted : float (n,), the model's calibration scores, ascending.
    threshold : t₀, the model's threshold for this score (flag when greater; +inf flags nothing).
    state : :meth:`state` of an earlier run, to continue it; None starts from the calibration scores.

    Raises
    ------
    ValueError : a state that does not fit these calibration scores (its recent scores not N floats).
    """

    def __init__(self, calibration_sorted: np.ndarray, threshold: float, state: dict | None = None):
        self.cal = np.asarray(calibration_sorted, dtype=np.float64)
        self.t0 = float(threshold)
        self.n = self.cal.size
        self.k = max(1, self.n // 10)
        self.m0, self.s0 = _median_iqr(self.cal)
        if state is None:
            self.recent = self.cal[np.random.default_rng(0).permutation(self.n)]
            self.since, self.m, self.s = 0, self.m0, self.s0
        else:
            recent = np.array(state["recent"], dtype=np.float64)
            if recent.shape != (self.n,) or not np.isfinite(recent).all() or not 0 <= int(state["since"]) < self.k:
                raise ValueError(f"expected {self.n} recent finite scores")
            self.recent, self.since = recent, int(state["since"])
            self.m, self.s = float(state["median"]), float(state["iqr"])

    def _ratio(self) -> float:
        """s/s₀: how much wider the recent scores spread than the calibration scores (1 if either is 0)."""
        return self.s / self.s0 if self.s0 > 0 and self.s > 0 else 1.0

    @property
    def threshold(self) -> float:
        """The score threshold now, in the scores' units: m + (t₀ − m₀)·s/s₀."""
        return self.m + (self.t0 - self.m0) * self._ratio() if np.isfinite(self.t0) else self.t0

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p-values, flags and thresholds of consecutive rows' finite scores, entering them in turn.

        Parameters
        ----------
        scores : float (n,), finite, in series order (higher = more anomalous).

        Returns
        -------
        (p-values float64 (n,), flags bool (n,), the threshold each row was judged by float64 (n,)).
        """
        x = np.asarray(scores, dtype=np.float64)
        p, flags, thresholds = np.empty(x.size), np.zeros(x.size, bool), np.empty(x.size)
        start = 0
        while start < x.size:
            stop = min(x.size, start + self.k - self.since)
            seg, t = x[start:stop], self.threshold
            a = self.m0 + (seg - self.m) / self._ratio()
            p[start:stop] = conformal_p_values(a, self.cal)
            flags[start:stop] = a > self.t0
            thresholds[start:stop] = t
            entered = np.where(flags[start:stop] & np.isfinite(t), t, seg)  # winsorized at the threshold
            self.recent = np.concatenate([self.recent[entered.size:], entered])
            self.since += stop - start
            if self.since == self.k:
                self.m, self.s = _median_iqr(self.recent)
                self.since = 0
            start = stop
        return p, flags, thresholds

    def state(self) -> dict:
        """What the next run needs (plain JSON values; floats round-trip exactly)."""
        return {"recent": self.recent.tolist(), "since": self.since, "median": self.m, "iqr": self.s}
