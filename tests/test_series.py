"""Metric series: windows, gaps, order, the calibration block (no training), then a window model end to end."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vae_anomaly.deploy import series
from vae_anomaly.errors import InputValidationError

STEP = 300 * 10**9  # five minutes, in nanoseconds
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


def _series(n: int, seed: int = 0, gaps: float = 0.03):
    rng = np.random.default_rng(seed)
    t = np.cumsum(np.where(rng.random(n) < gaps, 4, 1)) * STEP
    return t, rng.standard_normal((n, 2))


@pytest.mark.parametrize("chunk", [1, 5, 64, 10_000])
def test_windows_do_not_depend_on_the_chunks(chunk):
    t, v = _series(700)
    whole = series.Windower(16, STEP).add(t, v)
    w = series.Windower(16, STEP)
    parts = np.concatenate([w.add(t[i : i + chunk], v[i : i + chunk]) for i in range(0, len(t), chunk)])
    np.testing.assert_array_equal(parts, whole)


def test_a_window_ends_at_its_row_and_gaps_are_missing_steps():
    t = np.array([0, 1, 2, 5, 6]) * STEP                      # steps 3 and 4 are missing
    v = np.arange(5.0)[:, None]
    w = series.Windower(4, STEP)
    out = w.add(t, v)
    assert w.inserted == 2
    np.testing.assert_array_equal(out[:, -1], v[:, 0])        # the last step is the row itself
    np.testing.assert_array_equal(out[3], [2.0, np.nan, np.nan, 3.0])
    np.testing.assert_array_equal(out[0], [np.nan, np.nan, np.nan, 0.0])  # the start is padded, not glued


@pytest.mark.parametrize("times, what", [([0, 1, 1, 2], "data row 2, repeats"), ([0, 2, 1, 3], "data row 2, is earlier")])
def test_unsorted_or_repeated_timestamps_are_refused(times, what):
    with pytest.raises(InputValidationError, match=what):
        series.Windower(3, STEP).add(np.array(times) * STEP, np.zeros((4, 1)))


def test_the_time_column_is_found_and_other_text_is_refused():
    schema = pa.schema([("when", pa.timestamp("s")), ("cpu", pa.float64()), ("host", pa.string())])
    spec = series.series_spec(schema, window=8, id_columns="host")
    assert spec["time_column"] == "when" and spec["metrics"] == ["cpu"] and spec["id_columns"] == ["when", "host"]
    with pytest.raises(InputValidationError, match="'host' holds string.*--exclude host"):
        series.series_spec(schema, window=8)
    with pytest.raises(InputValidationError, match="--time-column"):
        series.series_spec(pa.schema([("a", pa.string()), ("cpu", pa.float64())]), window=8)


def test_the_calibration_block_is_the_end_of_the_series_and_shares_no_step():
    n, w = 400, 10
    table = pa.table({"timestamp": pa.array(np.arange(n) * STEP, pa.timestamp("ns")), "v": np.arange(n, dtype=float)})
    spec = series.series_spec(table.schema, window=w)
    train, val, spec = series.fit_windows(table, spec, val_fraction=0.2)
    assert spec["step_seconds"] == 300.0 and spec["inserted_steps"] == 0
    assert val[-1, -1] == n - 1                                  # the block ends with the series
    assert train[:, -1].max() < val[:, 0].min()                 # no time step in both blocks
    assert np.isfinite(train).all() and len(val) == int(np.ceil(0.2 * (n - w + 1)))


def test_labelled_points_become_missing_values():
    n = 200
    table = pa.table({"timestamp": pa.array(np.arange(n) * STEP, pa.timestamp("ns")), "v": np.ones(n)})
    labels = np.zeros(n)
    labels[50] = 1
    train, _, _ = series.fit_windows(table, series.series_spec(table.schema, window=8), val_fraction=0.2, labels=labels)
    assert np.isnan(train).sum() == 8                            # point 50 sits in 8 windows
