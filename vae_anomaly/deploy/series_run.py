"""A scoring run over a metric series, and the state that lets the next run continue it (numpy only).

A monitoring job scores each new slice of a series (the last hour, yesterday) as it arrives. One
:class:`SeriesRun` is the one gate every path scores a window model's series through (the CLI and
:func:`~vae_anomaly.deploy.batch.score_file`, HTTP, Dask):

* **windows** (:class:`~vae_anomaly.deploy.series.Windower`), continued from the state of the run
  before (``score --state FILE``): the last W − 1 steps, the last timestamp, so a slice that
  continues the series gets the windows, and the scores, one long file would give;
* **warm-up**: a row with fewer than W − 1 steps of the series before it (the start of a series
  scored without a state) is scored on a window padded at the front; its score is written, but it
  gets no p-value (NaN: empty in CSV, null in JSON) and is never flagged, since a padded window's
  score is not comparable with the calibration windows';
* **online calibration** under ``threshold="auto"`` (:class:`~vae_anomaly.deploy.online.OnlineCalibration`):
  the threshold follows the series' drift, carried in the state from one run to the next.

The state file is JSON (never pickled), written atomically after the outputs, so it never records
rows whose output was not written. It names the model it belongs to (its ``model_id``); a slice
that does not begin after the state's last timestamp (it overlaps what was already scored) is
refused, under either ``time_order``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputValidationError
from . import series
from .events import EventLog, iso_time
from .io import atomic_write, check_output_folder
from .online import OnlineCalibration
from .policy import ScoreResult, auto_threshold

STATE_FORMAT = "vae-anomaly series state"
STATE_VERSION = 1


def read_state(path: str | os.PathLike, model_id: str) -> dict | None:
    """The state an earlier run wrote to ``path`` for the model ``model_id``; None when there is no
    such file (the first run).

    Raises
    ------
    InputValidationError : a file that is not such a state, or one written for another model.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(state, dict) and state.get("format") == STATE_FORMAT
    except (OSError, UnicodeDecodeError, ValueError) as e:
        ok, state = False, str(e)[:80]
    if not ok:
        raise InputValidationError(f"--state: {path} is not a series state written by vae-anomaly score; expected "
                                   "the file an earlier run wrote. Delete it (or name a new file) to start afresh.")
    if state.get("version") != STATE_VERSION:
        raise InputValidationError(f"--state: {path} has version {state.get('version')!r}; this vae-anomaly reads "
                                   f"version {STATE_VERSION}. Name a new file to start afresh.")
    if state.get("model_id") != model_id:
        raise InputValidationError(f"--state: {path} continues the series of model {state.get('model_id')}, not of "
                                   f"this model ({model_id}). Keep one state file per model and series; name a new "
                                   "file to start afresh with this model.")
    return state


class SeriesRun:
    """One run of a window model over a series, in order: windows, warm-up, online calibration.

    Parameters
    ----------
    scorer : a :class:`~vae_anomaly.deploy.scorer.Scorer` of a window model.
    name : the input's name, for messages.
    time_order : as in :class:`~vae_anomaly.deploy.series.Windower`.
    state : a state file to continue from (when it exists) and to write with :meth:`save`; None
        starts a series afresh and keeps nothing.
    saved : instead of a file, a state as :meth:`state` gives it, or a part of one (its ``series``
        or its ``calibration``), to continue from (Dask passes it from one partition to the next).
    score, threshold, alpha : as in :meth:`~vae_anomaly.deploy.scorer.Scorer.predict`; the online
        calibration runs under ``threshold="auto"`` with a finite conformal threshold only (a fixed
        score threshold, one ``calibrate --target`` chose on labels, or one too few calibration scores
        leave at +inf, stays fixed).
    events : group the flagged rows into events (:class:`~vae_anomaly.deploy.events.EventLog`;
        :meth:`decide` then needs the results' per-feature terms to name the metrics).

    Raises
    ------
    InputValidationError : a bad state file (:func:`read_state`), or one written with another score
        or threshold; alpha outside (0, 1).
    OutputWriteError : the state's folder does not exist.
    """

    def __init__(self, scorer, *, name: str = "X", time_order: str = "strict", state: str | os.PathLike | None = None,
                 saved: dict | None = None, score: str | None = None, threshold: str | float = "auto",
                 alpha: float | None = None, events: bool = False):
        self.spec, self.name, self.model_id = scorer.series, name, scorer.model_id
        self.state_path = None if state is None else Path(state)
        if self.state_path is not None:
            check_output_folder(self.state_path)
        if saved is None and self.state_path is not None:
            saved = read_state(self.state_path, scorer.model_id)
        saved = saved or {}
        self.windower = series.Windower.for_model(self.spec, name=name, time_order=time_order)
        self.rows_before = 0
        self.last_before = None
        if "series" in saved:
            try:
                self.windower.restore(saved["series"], len(self.spec["metrics"]))
                self.rows_before = int(saved.get("rows_scored", 0))
            except (KeyError, TypeError, ValueError) as e:
                raise InputValidationError(f"--state: {self.state_path} is damaged ({str(e)[:80]}); delete it (or "
                                           "name a new file) to start afresh.") from None
            self.last_before = self.windower.last_t
        self.online, self.score = None, scorer.resolve_score(score)
        t0, rate = None, None  # a fixed score threshold stays fixed
        if threshold == "auto":  # the rate comes back None for a threshold chosen on labels: it stays fixed too
            t0, rate = auto_threshold(scorer.calibration[self.score], score=self.score, alpha=alpha,
                                      model_alpha=scorer.alpha, rule=scorer.metadata.get("auto_threshold"))
        if rate is not None and np.isfinite(t0):  # an infinite threshold (too few calibration scores) never moves
            carried = saved.get("calibration")
            if carried is not None and (carried.get("score") != self.score or carried.get("threshold") != t0):
                raise InputValidationError(
                    f"--state: {self.state_path} calibrates the {carried.get('score')} score's threshold "
                    f"{carried.get('threshold')}; this run asks for the {self.score} score's {t0:.6g}. Score with the "
                    "same --score and --alpha as the runs before, or name a new state file.")
            try:
                self.online = OnlineCalibration(scorer.calibration[self.score], t0, rate, carried)
            except (KeyError, TypeError, ValueError) as e:
                raise InputValidationError(f"--state: {self.state_path} is damaged ({str(e)[:80]}); delete it (or "
                                           "name a new file) to start afresh.") from None
        self.events = None
        if events:
            try:
                self.events = EventLog(self.spec["metrics"], saved.get("open_event"))
            except (KeyError, TypeError, ValueError) as e:
                raise InputValidationError(f"--state: {self.state_path} is damaged ({str(e)[:80]}); delete it (or "
                                           "name a new file) to start afresh.") from None
        self.rows = 0
        self.warmup_rows = 0
        self._t = np.empty(0, np.int64)  # the timestamps of the last chunk

    def windows(self, table, *, first_row: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(window rows float64 (n, W·d), warm-up bool (n,), condition float32 (n, m) or None) of the
        next chunk of the series, a pyarrow Table of the model's time and metric columns; the
        condition is the seasons' (:func:`~vae_anomaly.deploy.series.window_condition`), None for a
        model without them.

        Raises
        ------
        InputValidationError : as :func:`~vae_anomaly.deploy.series.table_values` and
            :meth:`~vae_anomaly.deploy.series.Windower.add`; a first row that does not come after
            the state's last timestamp.
        """
        t, values = series.table_values(table, self.spec, name=self.name, first_row=first_row)
        if self.rows == 0 and self.last_before is not None and t.size and t[0] <= self.last_before:
            raise InputValidationError(
                f"{self.name}: data row 0 ({iso_time(int(t[0]))}) is not after the last timestamp already scored "
                f"({iso_time(self.last_before)}, recorded in {self.state_path}); expected a slice that continues the "
                "series. Score only the rows after it, or name a new state file to start afresh.")
        windows = self.windower.add(t, values)
        self.rows, self._t = self.rows + t.size, t
        return windows, self.windower.warmup.copy(), series.window_condition(self.spec, t)

    def prime(self, table) -> None:
        """Take a table of the rows just before the series' next chunk as its history (at most the
        last W − 1 are kept): their windows are not scored, their rows not counted."""
        t, values = series.table_values(table, self.spec, name=self.name)
        self.windower.add(t, values)
        self.windower.rows = 0

    def decide(self, result: ScoreResult, warmup: np.ndarray) -> ScoreResult:
        """The chunk's p-values and flags under the warm-up rule and the online calibration (see
        the module); rows without a finite score (p-value 0) stay flagged."""
        p, flags, threshold = result.p_values.copy(), result.is_anomaly.copy(), result.threshold
        bad = p == 0  # a p-value is at least 1/(n+1) except on those rows
        scored = ~bad & ~warmup
        if self.online is not None:
            p[scored], flags[scored] = self.online.decide(result.scores[scored])
            threshold = self.online.threshold
        p[warmup & ~bad], flags[warmup & ~bad] = np.nan, False
        self.warmup_rows += int((warmup & ~bad).sum())
        if self.events is not None:
            self.events.add(self._t, result.scores, flags, result.feature_terms)
        return dataclasses.replace(result, p_values=p, is_anomaly=flags, threshold=threshold)

    def state(self) -> dict:
        """The state the next run continues from (plain JSON values)."""
        w = self.windower.state()
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "model_id": self.model_id,
                "window": self.spec["window"], "metrics": self.spec["metrics"],
                "last_time": iso_time(w["last_t"]), "rows_scored": self.rows_before + self.rows, "series": w,
                "calibration": None if self.online is None else
                {"score": self.score, "threshold": self.online.t0, **self.online.state()},
                "open_event": None if self.events is None else self.events.state()}

    def save(self) -> None:
        """Write :meth:`state` to the state file atomically (nothing without one). Call it after the
        outputs are written, never before.

        Raises
        ------
        OutputWriteError : the file cannot be written (the previous state is left as it was).
        """
        if self.state_path is not None:
            with atomic_write(self.state_path, "w") as f:
                json.dump(self.state(), f)
