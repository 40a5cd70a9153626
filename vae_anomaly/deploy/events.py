"""Incidents, not only points: a series' consecutive flagged timestamps grouped into events.

An event is a run of consecutive flagged rows of a series (rows in series order; a warm-up row is
never flagged, so it ends a run). For each, an on-call engineer reads when it started and ended,
how many timestamps it holds, its peak score and when, and the metrics that contribute most.

A metric's share of an event is the sum, over the event's rows, of the metric's part of each row's
score (:func:`vae_anomaly.deploy.monitoring.metric_terms`: the positive part of its window slots'
per-feature terms, nats), divided by that sum over every metric, so the shares of an event sum to 1.

An event still open at the end of a run is reported with ``"ongoing": true``; with a state file
(:mod:`vae_anomaly.deploy.series_run`) it is carried into the next run, which reports it again with
its original start when it ends (``"continued": true``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np

from .monitoring import metric_terms

#: metrics named per event, most contributing first
TOP_METRICS = 3


def iso_time(t_ns: int | None) -> str | None:
    """An int64 nanosecond UTC timestamp as ISO 8601 text (``2026-01-01T00:05:00Z``), or None."""
    if t_ns is None:
        return None
    t_ns = int(t_ns)
    text = datetime.fromtimestamp(t_ns // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{t_ns % 10**9:09d}".rstrip("0") if t_ns % 10**9 else "") + "Z"


class EventLog:
    """Groups a series' flagged rows into events, chunk after chunk (and run after run).

    Parameters
    ----------
    metrics : the series' metric names, in the model's order.
    carried : :meth:`state` of an earlier run: an event still open there.
    """

    def __init__(self, metrics: list[str], carried: dict | None = None):
        self.metrics = list(metrics)
        self.closed: list[dict] = []
        self.open = None
        if carried is not None:
            self.open = {**carried, "shares": np.asarray(carried["shares"], np.float64), "continued": True,
                         "peak_score": -np.inf if carried["peak_score"] is None else float(carried["peak_score"])}
            if self.open["shares"].shape != (len(self.metrics),):
                raise ValueError(f"expected an open event's shares of {len(self.metrics)} metrics")

    def add(self, t: np.ndarray, scores: np.ndarray, flags: np.ndarray, terms: np.ndarray | None) -> None:
        """Take the next rows in series order: timestamps int64 ns (n,), scores float32 (n,),
        flags bool (n,), per-feature terms float32 (n, W·d) or None (no metrics named)."""
        flags = np.asarray(flags, bool)
        if not flags.size:
            return
        per_metric = None if terms is None else metric_terms(terms, len(self.metrics))
        edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2]):  # runs [a, b) of flagged rows
            if a > 0 and self.open is not None:
                self._close()
            if self.open is None:
                self.open = {"start": int(t[a]), "rows": 0, "peak_score": -np.inf, "peak_time": int(t[a]),
                             "shares": np.zeros(len(self.metrics)), "continued": False}
            e = self.open
            peak = a + int(np.argmax(scores[a:b]))
            if float(scores[peak]) > e["peak_score"]:
                e["peak_score"], e["peak_time"] = float(scores[peak]), int(t[peak])
            e["end"], e["rows"] = int(t[b - 1]), e["rows"] + int(b - a)
            if per_metric is not None:
                e["shares"] = e["shares"] + per_metric[a:b].sum(axis=0)
        if self.open is not None and not flags[-1]:
            self._close()

    def _close(self) -> None:
        self.closed.append(self._report(self.open, ongoing=False))
        self.open = None

    def _report(self, e: dict, *, ongoing: bool) -> dict:
        total = float(e["shares"].sum())
        order = np.argsort(-e["shares"], kind="stable")[:TOP_METRICS]
        top = [{"metric": self.metrics[j], "share": float(e["shares"][j] / total)} for j in order
               if total > 0 and e["shares"][j] > 0]
        return {"start": iso_time(e["start"]), "end": iso_time(e["end"]), "rows": e["rows"],
                "peak_score": None if not np.isfinite(e["peak_score"]) else e["peak_score"],
                "peak_time": iso_time(e["peak_time"]), "top_metrics": top, "ongoing": ongoing,
                "continued": bool(e["continued"])}

    def events(self) -> list[dict]:
        """The events of this run, in order: the closed ones, then the open one (``ongoing``)."""
        return self.closed + ([] if self.open is None else [self._report(self.open, ongoing=True)])

    def state(self) -> dict | None:
        """The open event, for the next run (plain JSON values), or None."""
        if self.open is None:
            return None
        e = self.open
        return {"start": e["start"], "end": e["end"], "rows": e["rows"], "peak_time": e["peak_time"],
                "peak_score": e["peak_score"] if np.isfinite(e["peak_score"]) else None,
                "shares": e["shares"].tolist()}

    @staticmethod
    def write(f, events: list[dict], fmt: str) -> None:
        """Write events to a text file: ``jsonl`` (one object a line) or ``csv`` (start, end, rows,
        peak_score, peak_time, top_metrics as ``metric:share;...``, ongoing, continued)."""
        if fmt == "jsonl":
            f.write("".join(json.dumps(e) + "\n" for e in events))
            return
        import csv

        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start", "end", "rows", "peak_score", "peak_time", "top_metrics", "ongoing", "continued"])
        for e in events:
            w.writerow([e["start"], e["end"], e["rows"], "" if e["peak_score"] is None else f"{e['peak_score']:.9g}",
                        e["peak_time"], ";".join(f"{m['metric']}:{m['share']:.3f}" for m in e["top_metrics"]),
                        int(e["ongoing"]), int(e["continued"])])
