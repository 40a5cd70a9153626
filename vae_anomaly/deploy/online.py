"""Online calibration of a metric series' alarms: a threshold that holds its rate under drift (numpy only).

A conformal p-value promises a false-alarm rate of α on windows exchangeable with the calibration
windows, the last block of the training period. A monitored series drifts after it: on NAB's 29
labelled series the fixed threshold flagged 26 times α of the later normal points, mostly because
the later normal windows reach scores the short calibration block never did
(benchmarks/README.md, "NAB: metric series").

The rule here is **online quantile tracking** (the "P" part of conformal PID control: Angelopoulos,
Candès & Tibshirani, NeurIPS 2023, eq. 2; adaptive conformal inference, Gibbs & Candès, NeurIPS
2021, on the score scale), on a compressed scale of the score:

* u(x) = asinh((x − m₀)/s₀), with m₀ and s₀ the median and interquartile range of the model's
  calibration scores (s₀ = 1 if that is 0): about linear near the calibration scores, logarithmic
  far above them, so one step size suits a score of 10 nats and one of 10¹⁶;
* the threshold starts at q = u(t₀), t₀ the model's conformal threshold at α, and after each row
  moves by q ← q + η·(err − α), err = 1 when the row was flagged (u(x) > q), η = :data:`STEP`: a
  flag raises it by η(1 − α), each row not flagged lowers it by ηα, so over a long run the share of
  rows flagged tends to α whatever the sequence (Angelopoulos et al., Prop. 1: the gap is at most
  (B + η)/(ηT) after T rows, B the range of u);
* a row is read on the calibration scale, shifted on the u scale by what the threshold has moved,
  a = m₀ + s₀·sinh(u(x) − q + u(t₀)); it is flagged when a > t₀ (u(x) > q), and its p-value is the
  conformal p-value of a (Bates et al. 2023, eq. 2), so p ≤ α exactly when the row is flagged;
* rows scored on a padded window (warm-up) and rows without a finite score neither count nor move it.

What holds: the long-run share of flagged rows tends to α on any sequence. What does not: a rate
over a short stretch, and the conformal guarantee row by row; and an incident of L flagged rows
raises the threshold by L·η(1 − α), which wears off at ηα a row (99 rows per flagged row at
α = 0.01): a smaller incident within that time can be missed. On NAB this cost less than the
alternatives measured (counting only an incident's first R rows and every R-th after, its rise
deferred to its end, R = 4, 16 or 64), which detected fewer anomaly windows (benchmarks/README.md).

The threshold is kept as q = A − ηα·k (A the threshold just after the last flag, k the rows since),
so the same rows give the same thresholds, bit for bit, however the series is cut into chunks and
runs.
"""

from __future__ import annotations

import numpy as np

from .calibration import conformal_p_values

#: η, the step of the threshold on the asinh scale (benchmarks/README.md, "Alarms that hold their rate")
STEP = 0.4
_LOOKAHEAD = (64, 65536)  # rows searched at a time for the next flag: after a flag, and at most


class OnlineCalibration:
    """Online quantile tracking of one score kind's threshold over a series (see the module).

    Parameters
    ----------
    calibration_sorted : float (n,), the model's calibration scores, ascending.
    threshold : t₀, the model's conformal threshold for this score at ``alpha`` (flag when greater),
        finite.
    alpha : α, the false-alarm rate the threshold stands for.
    state : :meth:`state` of an earlier run, to continue it; None starts at t₀.

    Raises
    ------
    ValueError : an infinite threshold; a state that is not one of :meth:`state`'s.
    """

    def __init__(self, calibration_sorted: np.ndarray, threshold: float, alpha: float, state: dict | None = None):
        self.cal = np.asarray(calibration_sorted, dtype=np.float64)
        self.t0, self.alpha = float(threshold), float(alpha)
        if not np.isfinite(self.t0):
            raise ValueError(f"expected a finite threshold, got {self.t0}")
        q1, q2, q3 = np.percentile(self.cal, (25.0, 50.0, 75.0))
        self.m0, self.s0 = float(q2), float(q3 - q1) if q3 > q1 else 1.0
        self.u0 = float(self._u(np.float64(self.t0)))
        if state is None:
            self.anchor, self.lowered = self.u0, 0
        else:
            self.anchor, self.lowered = float(state["anchor"]), int(state["lowered"])
            if not np.isfinite(self.anchor) or self.lowered < 0:
                raise ValueError("expected a finite threshold and counts >= 0")

    def _u(self, x: np.ndarray) -> np.ndarray:
        return np.arcsinh((x - self.m0) / self.s0)

    def _q(self, lowered) -> np.ndarray:
        return self.anchor - (STEP * self.alpha) * lowered

    @property
    def threshold(self) -> float:
        """The score threshold for the next row, in the scores' units (nats)."""
        return float(self.m0 + self.s0 * np.sinh(self._q(self.lowered)))

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p-values and flags of consecutive rows' finite scores, moving the threshold in turn.

        Parameters
        ----------
        scores : float (n,), finite, in series order (higher = more anomalous).

        Returns
        -------
        (p-values float64 (n,), flags bool (n,)).
        """
        x = np.asarray(scores, dtype=np.float64)
        u = self._u(x)
        a = np.empty(x.size)  # the scores on the calibration scale: flagged when a > t₀, p-value from a
        flags = np.zeros(x.size, bool)
        i, look = 0, _LOOKAHEAD[0]
        while i < x.size:  # the threshold falls by ηα a row until the next flag, found a block at a time
            block = u[i : i + look]
            ahead = self.m0 + self.s0 * np.sinh(block - self._q(self.lowered + np.arange(block.size)) + self.u0)
            over = np.flatnonzero(ahead > self.t0)
            j = int(over[0]) if over.size else block.size
            a[i : i + j] = ahead[:j]
            self.lowered += j
            i += j
            if over.size:  # row i is flagged: the threshold rises by η(1 − α)
                a[i], flags[i] = ahead[j], True
                self.anchor, self.lowered = self._q(self.lowered) + STEP * (1.0 - self.alpha), 0
                i, look = i + 1, _LOOKAHEAD[0]
            else:
                look = min(4 * look, _LOOKAHEAD[1])
        return conformal_p_values(a, self.cal), flags

    def state(self) -> dict:
        """What the next run needs (plain JSON values; floats round-trip exactly)."""
        return {"anchor": self.anchor, "lowered": self.lowered}
