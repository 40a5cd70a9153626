"""Metric series: windows, gaps, order, the calibration block (no training), then a window model end to end."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
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


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_as_read_takes_a_repeated_or_earlier_timestamp_as_the_next_step(chunk):
    t = np.array([0, 1, 2, 2, 2, 3, 1, 2, 9]) * STEP            # an hour repeated, a clock stepping back, a gap
    v = np.arange(9.0)[:, None]
    w = series.Windower(3, STEP, time_order="as-read")
    out = np.concatenate([w.add(t[i : i + chunk], v[i : i + chunk]) for i in range(0, len(t), chunk)])
    assert w.out_of_order == 3 and w.inserted == 6                # rows 3, 4, 6 taken as read; 9 − 2 − 1 missing
    np.testing.assert_array_equal(out[:8], np.lib.stride_tricks.sliding_window_view(np.r_[np.nan, np.nan, v[:8, 0]], 3))
    np.testing.assert_array_equal(out[8], [np.nan, np.nan, 8.0])  # the gap after the last step back is kept
    with pytest.raises(InputValidationError, match="--time-order"):
        series.Windower(3, STEP, time_order="sorted")


def test_the_time_column_is_found_and_other_text_is_refused():
    schema = pa.schema([("when", pa.timestamp("s")), ("cpu", pa.float64()), ("host", pa.string())])
    spec = series.series_spec(schema, window=8, id_columns="host")
    assert spec["time_column"] == "when" and spec["metrics"] == ["cpu"] and spec["id_columns"] == ["when", "host"]
    with pytest.raises(InputValidationError, match="'host' holds string.*--exclude host"):
        series.series_spec(schema, window=8)
    with pytest.raises(InputValidationError, match="--time-column"):
        series.series_spec(pa.schema([("a", pa.string()), ("cpu", pa.float64())]), window=8)


def test_window_auto_shortens_as_metrics_are_added():
    windows = [series.auto_window(d) for d in range(1, 60)]
    assert windows[0] == 64 and windows[18] == 16 and windows[37] == 16  # NAB's one metric; ASD's 19; SMD's 38
    assert all(a >= b for a, b in zip(windows, windows[1:]))
    lo, hi = series.AUTO_WINDOW_RANGE
    assert all(lo <= w <= hi and w & (w - 1) == 0 for w in windows)
    assert all(w * d <= series.AUTO_WINDOW_VALUES or w == lo for d, w in enumerate(windows, 1))
    # the spec of a file resolves "auto" by the metrics it finds, ID columns and excluded ones left out
    schema = pa.schema([("timestamp", pa.string()), ("host", pa.string())] + [(f"m{j}", pa.float64()) for j in range(19)])
    assert series.series_spec(schema, window="auto", id_columns="host")["window"] == 16
    assert series.series_spec(schema, window="auto", id_columns="host",
                              exclude=[f"m{j}" for j in range(1, 19)])["window"] == 64


def test_a_window_of_many_metrics_gets_the_narrower_default_width_and_budget(tmp_path):
    pytest.importorskip("torch")
    from vae_anomaly import Scorer
    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import WIDE_WINDOW, fit_file

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((240, 17)), columns=[f"m{j}" for j in range(17)])
    frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=240, freq="5min").astype(str))
    frame.to_csv(tmp_path / "s.csv", index=False)
    widths = {}
    for window, hidden in (("auto", None), (8, None), ("auto", (32, 32))):  # 16 x 17 = 272 values; 8 x 17 = 136
        fit_file(tmp_path / "s.csv", tmp_path / "m.onnx", window=window, config=TrainConfig(epochs=1, hidden=hidden))
        meta = Scorer(tmp_path / "m.onnx").metadata
        config = meta["training"]["config"]
        widths[window, hidden] = (meta["series"]["window"], tuple(meta["training"]["architecture"]["hidden"]),
                                  config["target_steps"], config["max_steps"])
    assert widths["auto", None] == (16, WIDE_WINDOW["hidden"], 0, WIDE_WINDOW["max_steps"])
    assert widths[8, None] == (8, (256, 256, 256), 8000, 20000)
    assert widths["auto", (32, 32)] == (16, (32, 32), 8000, 20000)


def test_the_calibration_block_is_the_end_of_the_series_and_shares_no_step():
    n, w = 400, 10
    table = pa.table({"timestamp": pa.array(np.arange(n) * STEP, pa.timestamp("ns")), "v": np.arange(n, dtype=float)})
    spec = series.series_spec(table.schema, window=w)
    train, val, spec, *_ = series.fit_windows(table, spec, val_fraction=0.2)
    assert spec["step_seconds"] == 300.0 and spec["inserted_steps"] == 0
    assert val[-1, -1] == n - 1                                  # the block ends with the series
    assert train[:, -1].max() < val[:, 0].min()                 # no time step in both blocks
    assert np.isfinite(train).all() and len(val) == int(np.ceil(0.2 * (n - w + 1)))


def test_a_series_that_leaves_fewer_training_windows_than_it_drops_warns():
    t = np.arange(140) * STEP
    table = pa.table({"timestamp": pa.array(t.astype("datetime64[ns]")), "value": np.sin(np.arange(140.0))})
    spec = series.series_spec(table.schema, window=48)
    with pytest.warns(UserWarning, match="93 full windows of 48 steps leave 27 to train on"):
        train, val, *_ = series.fit_windows(table, spec, val_fraction=0.2)
    assert (len(train), len(val)) == (27, 19)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        series.fit_windows(table, series.series_spec(table.schema, window=8), val_fraction=0.2)


def test_labelled_points_become_missing_values():
    n = 200
    table = pa.table({"timestamp": pa.array(np.arange(n) * STEP, pa.timestamp("ns")), "v": np.ones(n)})
    labels = np.zeros(n)
    labels[50] = 1
    train, *_ = series.fit_windows(table, series.series_spec(table.schema, window=8), val_fraction=0.2, labels=labels)
    assert np.isnan(train).sum() == 8                            # point 50 sits in 8 windows


@pytest.mark.parametrize("days, seasons, parts", [(1.9, "auto", []), (2.0, "auto", ["day"]), (13.9, "auto", ["day"]),
                                                  (14.0, "auto", ["day", "week"]), (30.0, "off", [])])
def test_the_seasons_are_those_the_training_period_spans_twice(days, seasons, parts):
    t = np.array([0, int(days * 86_400e9)], np.int64) + 1_767_225_600 * 10**9
    assert series.season_parts(t, seasons) == parts
    with pytest.raises(InputValidationError, match="--seasons"):
        series.season_parts(t, "weekly")


def test_the_season_condition_is_the_phase_of_the_day_and_of_the_monday_based_week():
    stamps = pd.to_datetime(["2026-01-05 00:00", "2026-01-05 12:00", "2026-01-07 06:00", "2026-01-11 18:00"])
    t = stamps.to_numpy("datetime64[ns]").astype(np.int64)               # 2026-01-05 is a Monday
    c = series.window_condition({"season": ["day", "week"]}, t)
    day, week = np.array([0.0, 0.5, 0.25, 0.75]), np.array([0.0, 0.5, 2.25, 6.75]) / 7
    want = np.column_stack([np.sin(2 * np.pi * day), np.cos(2 * np.pi * day),
                            np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)])
    assert c.dtype == np.float32 and c.shape == (4, 4)
    np.testing.assert_allclose(c, want, atol=1e-6)
    assert series.window_condition({"season": []}, t) is None and series.window_condition({}, t) is None
    np.testing.assert_array_equal(series.window_condition({"season": ["day"]}, t[2:]), c[2:, :2])  # row by row


# ---------------------------------------------------------------- a window model, end to end


def _frame(n: int, seed: int, spike: int | None = None) -> pd.DataFrame:
    """A daily-looking sine (48 steps a period) of 5-minute points with noise and a few gaps."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(np.where(rng.random(n) < 0.02, 3, 1))
    v = np.sin(2 * np.pi * t / 48) + 0.05 * rng.standard_normal(n)
    if spike is not None:
        v[spike] += 3.0
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(t * 5, unit="min")
    return pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": v, "host": "web-1"})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    pytest.importorskip("torch")
    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import fit_file

    folder = tmp_path_factory.mktemp("series")
    _frame(900, 0).to_csv(folder / "train.csv", index=False)
    _frame(600, 1, spike=400).to_csv(folder / "test.csv", index=False)
    fit_file(folder / "train.csv", folder / "model.onnx", window=12, id_columns="host", seasons="auto",
             config=TrainConfig(epochs=30, hidden=(32, 32), seed=0, prior_max_rows=0))
    return folder


def run(work, *args):
    return subprocess.run(CLI + list(args), cwd=work, capture_output=True, text=True)


def test_one_row_per_timestamp_carried_and_the_same_for_any_chunks(work):
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda a: run(work, *a), [
            ("score", "test.csv", "--features", "2"), ("score", "test.csv", "--features", "2", "--chunk-rows", "7"),
            ("score", "test.csv", "--features", "2", "--chunk-rows", "100")]))
    assert all(r.returncode == 0 for r in outs), [r.stderr for r in outs]
    assert outs[0].stdout == outs[1].stdout == outs[2].stdout
    assert "missing time steps (gaps) were inserted" in outs[0].stderr
    out = pd.read_csv(io.StringIO(outs[0].stdout))
    test = pd.read_csv(work / "test.csv")
    assert list(out.columns[:3]) == ["timestamp", "host", "row"] and len(out) == len(test)
    assert out["timestamp"].tolist() == test["timestamp"].tolist() and np.isfinite(out["score"]).all()
    # one metric: it holds the whole score of every row whose terms are not all <= 0
    assert set(out["top_metrics"].fillna("value:1.0000")) == {"value:1.0000"}
    # the spike at row 400 sits in the 12 windows ending at rows 400..411: the highest score is one of them
    assert 400 <= out["score"].idxmax() < 412


def test_unsorted_and_repeated_timestamps_exit_3(work):
    test = pd.read_csv(work / "test.csv")
    test.iloc[[0, 1, 3, 2, 4]].to_csv(work / "unsorted.csv", index=False)
    r = run(work, "score", "unsorted.csv", "-o", "u.csv")
    assert r.returncode == 3 and "data row 3, is earlier" in r.stderr and not (work / "u.csv").exists()


def test_a_clock_stepping_back_scores_as_read_like_the_corrected_series(work):
    test = pd.read_csv(work / "test.csv")
    stamps = pd.to_datetime(test["timestamp"])
    back = stamps.copy()
    back.iloc[300:] -= pd.Timedelta(minutes=55)                   # row 300 is 11 steps earlier than row 299
    stamps.iloc[300:] = stamps.iloc[300:] + (stamps.iloc[299] + pd.Timedelta(minutes=5) - stamps.iloc[300])
    test.assign(timestamp=back.dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(work / "back.csv", index=False)
    test.assign(timestamp=stamps.dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(work / "fixed.csv", index=False)
    refused = run(work, "score", "back.csv", "-o", "b.csv")
    assert refused.returncode == 3 and "data row 300" in refused.stderr and "--time-order as-read" in refused.stderr
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda a: run(work, *a), [
            ("score", "back.csv", "--time-order", "as-read"), ("score", "back.csv", "--time-order", "as-read",
                                                              "--chunk-rows", "7"), ("score", "fixed.csv")]))
    assert all(r.returncode == 0 for r in outs), [r.stderr for r in outs]
    assert outs[0].stdout == outs[1].stdout and "1 rows whose timestamp repeats or goes back" in outs[0].stderr
    got, want = (pd.read_csv(io.StringIO(r.stdout)) for r in (outs[0], outs[2]))
    assert got["timestamp"].tolist() == back.dt.strftime("%Y-%m-%d %H:%M:%S").tolist()   # carried as read
    from vae_anomaly import Scorer
    from vae_anomaly.deploy.series_run import SeriesRun
    from vae_anomaly.deploy.tables import read_table

    scorer = Scorer(work / "model.onnx")
    windows = [SeriesRun(scorer, time_order="as-read").windows(read_table(work / f)) for f in ("back.csv", "fixed.csv")]
    np.testing.assert_array_equal(windows[0][0], windows[1][0])  # the same steps in the same windows
    # the time of day a model with seasons is conditioned on is the clock as read: 55 minutes behind
    # the corrected one from row 300 on, the same before it
    assert scorer.series["season"] == ["day"]
    same = np.arange(len(got)) < 300
    np.testing.assert_array_equal(windows[0][2][same], windows[1][2][same])
    assert not np.allclose(windows[0][2][~same], windows[1][2][~same])
    np.testing.assert_array_equal(got["score"].to_numpy()[same], want["score"].to_numpy()[same])


def test_dask_scores_a_series_like_local_scoring(work):
    dd = pytest.importorskip("dask.dataframe")
    from vae_anomaly import Scorer
    from vae_anomaly.integrations.dask import score_dataframe

    test = pd.read_csv(work / "test.csv")
    local = pd.read_csv(io.StringIO(run(work, "score", "test.csv").stdout))
    out = score_dataframe(dd.from_pandas(test, npartitions=7), work / "model.onnx").compute(scheduler="synchronous")
    np.testing.assert_array_equal(out["score"].to_numpy(), local["score"].to_numpy(np.float32))
    assert out["timestamp"].tolist() == test["timestamp"].tolist()
    assert Scorer(work / "model.onnx").metadata["series"]["window"] == 12
    # a clock stepping back at row 300: refused, or taken as read with the same scores as local scoring
    back = test.assign(timestamp=pd.concat([test["timestamp"][:300], (pd.to_datetime(test["timestamp"][300:])
                                            - pd.Timedelta(minutes=55)).dt.strftime("%Y-%m-%d %H:%M:%S")]))
    back.to_csv(work / "dask_back.csv", index=False)
    local = pd.read_csv(io.StringIO(run(work, "score", "dask_back.csv", "--time-order", "as-read").stdout))
    ddf = dd.from_pandas(back, npartitions=7)
    out = score_dataframe(ddf, work / "model.onnx", time_order="as-read").compute(scheduler="synchronous")
    np.testing.assert_array_equal(out["score"].to_numpy(), local["score"].to_numpy(np.float32))
    with pytest.raises(InputValidationError, match="is earlier than the previous row"):
        score_dataframe(ddf, work / "model.onnx").compute(scheduler="synchronous")


def test_dask_decides_p_values_and_flags_as_local_scoring_and_continues_a_state(work, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    from vae_anomaly import score_file
    from vae_anomaly.integrations.dask import score_dataframe

    test = pd.read_csv(work / "test.csv")
    test.loc[450:470, "value"] += 2.0  # an incident: flags that move the online threshold
    test.to_csv(tmp_path / "t.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_file(tmp_path / "t.csv", work / "model.onnx", tmp_path / "local.csv")
    local = pd.DataFrame({"score": res.scores, "p_value": res.p_values, "is_anomaly": res.is_anomaly})
    out = score_dataframe(dd.from_pandas(test, npartitions=5), work / "model.onnx").compute(scheduler="synchronous")
    for column in ("p_value", "is_anomaly"):
        np.testing.assert_array_equal(out[column].to_numpy(np.float64), local[column].to_numpy(np.float64))
    assert local["is_anomaly"].sum() > 5 and np.isnan(out["p_value"][:11]).all()
    # two frames continuing each other through a state, as one
    state = tmp_path / "dask_state.json"
    first, save = score_dataframe(dd.from_pandas(test.iloc[:250], npartitions=3), work / "model.onnx", state=state)
    first = first.compute(scheduler="synchronous")
    assert not state.exists()
    save.compute(scheduler="synchronous")
    second, save = score_dataframe(dd.from_pandas(test.iloc[250:], npartitions=3), work / "model.onnx", state=state)
    second = second.compute(scheduler="synchronous")
    save.compute(scheduler="synchronous")
    both = pd.concat([first, second])
    for column in ("score", "p_value", "is_anomaly"):
        np.testing.assert_array_equal(both[column].to_numpy(np.float64), local[column].to_numpy(np.float64))
    assert json.loads(state.read_text())["rows_scored"] == len(test)


def test_the_summary_of_a_window_model_names_metric_slots(work, tmp_path):
    from vae_anomaly import score_file

    score_file(work / "test.csv", work / "model.onnx", tmp_path / "s.csv", summary_json=tmp_path / "s.json")
    drift = json.loads((tmp_path / "s.json").read_text())["drift"]
    assert drift["columns"] == [f"value@t-{11 - s}" for s in range(12)]
    assert drift["max_abs_column"] == drift["columns"][drift["max_abs_feature"]]


# ---------------------------------------------------------------- odd but ordinary series (issue 31)

SHARED_SMD = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "smd"


@pytest.mark.skipif(not (SHARED_SMD / "machine-2-2_train.csv").exists(), reason="../shared/datasets/smd is not here")
def test_a_window_fit_reads_types_from_every_row_of_a_real_server_file():
    from vae_anomaly.training.fit import _training_rows
    from vae_anomaly.deploy.tables import DEFAULT_CSV

    # metric 'so' is 0 for hours, then 0.25 after the first MiB
    X, X_val, _, spec, *_ = _training_rows(SHARED_SMD / "machine-2-2_train.csv", None, DEFAULT_CSV, val_fraction=0.2,
                                       exclude=None, id_columns=None, categorical=None, window=4, time_column=None,
                                       labels=None, time_order="strict", time_unit=None)
    assert len(spec["metrics"]) == 38 and X.shape[1] == 4 * 38 and np.isfinite(X_val).all()


def _zoned_csv(path, stamps, values):
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)


@pytest.mark.parametrize("stamps, unit", [
    (["2026-01-01T00:00:00Z", "2026-01-01T01:05:00+01:00", "2026-01-01T00:10:00Z"], None),
    ([1767225600, 1767225900, 1767226200], "s"),
    ([1767225600000, 1767225900000, 1767226200000], "ms"),
])
def test_the_time_column_is_read_alike_at_fit_and_at_score(tmp_path, stamps, unit):
    from vae_anomaly.deploy import tables

    _zoned_csv(tmp_path / "s.csv", stamps, [1.0, 2.0, 3.0])
    spec = series.series_spec(tables.file_schema(tmp_path / "s.csv"), window=2, time_unit=unit)
    typed = tables.read_table(tmp_path / "s.csv")                                  # as inferred
    text = tables.read_table(tmp_path / "s.csv", column_types=series.read_types(spec))  # as scoring reads it
    t_typed, _ = series.table_values(typed, spec)
    t_text, _ = series.table_values(text, spec)
    expected = np.datetime64("2026-01-01T00:00:00", "ns").astype(np.int64) + np.arange(3) * STEP
    np.testing.assert_array_equal(t_typed, expected)
    np.testing.assert_array_equal(t_text, expected)


def test_epoch_numbers_without_a_unit_are_refused():
    with pytest.raises(InputValidationError, match="holds numbers; if they are epoch time.*--time-unit s"):
        series.timestamps_ns(pa.chunked_array([pa.array([1767225600, 1767225900])]), "X", "timestamp")


def test_a_mistyped_year_inserts_at_most_w_steps_and_gives_the_windows_of_a_long_gap():
    v = np.arange(6.0)[:, None]
    year = 365 * 24 * 3600 * 10**9
    t_typo = np.array([0, 1, 2, 3, 4, 5]) * STEP + np.array([0, 0, 0, 200 * year, 200 * year, 200 * year])
    t_gap = np.array([0, 1, 2, 3 + 4, 4 + 4, 5 + 4]) * STEP  # a gap of 4 steps, more than W − 1 = 3
    w = series.Windower(4, STEP)
    np.testing.assert_array_equal(w.add(t_typo, v), series.Windower(4, STEP).add(t_gap, v))
    assert w.inserted == 200 * year // STEP  # counted in full, allocated W − 1 at most
    with pytest.raises(InputValidationError, match="data row 1 lies more than 292 years from the row before it"):
        series.Windower(4, STEP).add(np.array([-(2**62), 2**62]), np.zeros((2, 1)))


def test_an_oversized_window_is_refused_before_anything_is_allocated():
    t = pa.array(pd.date_range("2026-01-01", periods=20, freq="5min").strftime("%Y-%m-%d %H:%M:%S"))
    table = pa.table({"timestamp": t, "value": np.arange(20.0)})
    spec = series.series_spec(table.schema, window=10**12)
    with pytest.raises(InputValidationError, match="20 rows; a window of 1000000000000 steps needs"):
        series.fit_windows(table, spec, val_fraction=0.2)


def test_a_series_with_another_step_warns(work, tmp_path):
    from vae_anomaly import score_file

    frame = _frame(80, 3)
    frame["timestamp"] = (pd.Timestamp("2026-02-01") + pd.to_timedelta(np.arange(80), unit="min")).strftime(
        "%Y-%m-%d %H:%M:%S")  # 1-minute steps; the model's are 5 minutes
    frame.to_csv(tmp_path / "minutes.csv", index=False)
    with pytest.warns(UserWarning, match="steps by 60 s.*fitted on steps of 300 s"):
        score_file(tmp_path / "minutes.csv", work / "model.onnx", output=tmp_path / "s.csv")


def test_calibrate_reads_a_window_models_series_by_name(work, tmp_path):
    import shutil

    shutil.copy(work / "model.onnx", tmp_path / "a.onnx")
    shutil.copy(work / "model.onnx", tmp_path / "b.onnx")
    frame = pd.read_csv(work / "test.csv")
    frame[["value", "host", "timestamp"]].to_csv(tmp_path / "reordered.csv", index=False)
    runs = [run(work, "calibrate", str(tmp_path / m), str(f)) for m, f in
            (("a.onnx", work / "test.csv"), ("b.onnx", tmp_path / "reordered.csv"))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    from vae_anomaly import Scorer

    a, b = Scorer(tmp_path / "a.onnx"), Scorer(tmp_path / "b.onnx")
    np.testing.assert_array_equal(a.calibration["neg-elbo"], b.calibration["neg-elbo"])
    assert a.metadata["n_calibration"] == 600 - 11  # the full windows only


def test_a_step_a_model_file_could_not_hold_is_refused_at_fit():
    t = pa.array(np.arange(40, dtype=np.int64) * 1000, pa.timestamp("ns"))  # one row a microsecond
    table = pa.table({"timestamp": t, "value": np.arange(40.0)})
    with pytest.raises(InputValidationError, match=r"steps by 1e-06 s.*expected a step from 0.001 to 1e\+09 s"):
        series.fit_windows(table, series.series_spec(table.schema, window=4), val_fraction=0.2)


def test_epoch_text_with_spaces_or_an_exponent_and_an_empty_column_are_read():
    column = pa.chunked_array([pa.array([" 1767225600 ", "1.7672259e9", "1767226200"])])
    np.testing.assert_array_equal(series.timestamps_ns(column, "X", "timestamp", unit="s"),
                                  np.array([1767225600, 1767225900, 1767226200]) * 10**9)
    empty = pa.chunked_array([pa.array([], pa.string())])
    assert series.timestamps_ns(empty, "X", "timestamp", unit="s").shape == (0,)


def test_report_reads_a_window_models_series_by_name(work, tmp_path):
    pytest.importorskip("matplotlib")
    frame = pd.read_csv(work / "test.csv")
    frame[["value", "host", "timestamp"]].to_csv(tmp_path / "reordered.csv", index=False)
    r = run(work, "report", str(tmp_path / "reordered.csv"), "-m", "model.onnx", "-o", str(tmp_path / "r.png"))
    assert r.returncode == 0 and (tmp_path / "r.png").stat().st_size > 0, r.stderr


# ---------------------------------------------------------------- runs that continue each other (--state)


def _slices(frame: pd.DataFrame, cuts, folder, model, state, **kw):
    """Score ``frame`` cut at ``cuts``, one file a slice, each run continuing the state; the results."""
    from vae_anomaly import score_file

    bounds = [0, *cuts, len(frame)]
    results = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        frame.iloc[a:b].to_csv(folder / f"slice{i}.csv", index=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(score_file(folder / f"slice{i}.csv", model, folder / f"out{i}.csv", state=state, **kw))
    return results


@pytest.mark.parametrize("cuts", [[1, 599], [11, 12], [5, 6, 7, 300], list(range(37, 600, 37))])
def test_slices_scored_with_a_state_equal_one_file(work, tmp_path, cuts):
    from vae_anomaly import score_file

    frame = pd.read_csv(work / "test.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = score_file(work / "test.csv", work / "model.onnx", tmp_path / "whole.csv")
    parts = _slices(frame, cuts, tmp_path, work / "model.onnx", tmp_path / "state.json")
    for field in ("scores", "p_values", "is_anomaly"):
        got = np.concatenate([getattr(r, field) for r in parts])
        assert got.tobytes() == getattr(whole, field).tobytes(), field
    # the written outputs too, but for the row numbers, which count each file's rows
    written = pd.concat([pd.read_csv(tmp_path / f"out{i}.csv") for i in range(len(parts))], ignore_index=True)
    pd.testing.assert_frame_equal(written.drop(columns="row"), pd.read_csv(tmp_path / "whole.csv").drop(columns="row"))
    assert json.loads((tmp_path / "state.json").read_text())["rows_scored"] == len(frame)


def test_without_a_state_the_padded_first_rows_get_no_p_value_and_no_flag(work, tmp_path):
    frame = pd.read_csv(work / "test.csv")
    frame.loc[3, "value"] += 30.0  # a spike inside the first W − 1 rows
    frame.to_csv(tmp_path / "spiky.csv", index=False)
    r = run(work, "score", str(tmp_path / "spiky.csv"), "-o", str(tmp_path / "o.jsonl"))
    assert r.returncode == 0 and "first 11 rows have fewer than 11 steps before them" in r.stderr, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert all(x["p_value"] is None and x["is_anomaly"] == 0 for x in rows[:11])
    assert all(x["p_value"] is not None for x in rows[11:]) and rows[3]["score"] is not None


def test_a_continued_spike_is_flagged_where_a_fresh_run_would_not(work, tmp_path):
    import shutil

    frame = pd.read_csv(work / "test.csv")
    frame.loc[203, "value"] += 30.0  # 3 rows into the second slice
    parts = _slices(frame, [200], tmp_path, work / "model.onnx", tmp_path / "st.json")
    assert parts[1].is_anomaly[3] and parts[1].p_values[3] < 0.01
    shutil.copy(tmp_path / "slice1.csv", tmp_path / "fresh.csv")
    r = run(work, "score", str(tmp_path / "fresh.csv"), "-o", str(tmp_path / "f.csv"))
    fresh = pd.read_csv(tmp_path / "f.csv")
    assert fresh["is_anomaly"][3] == 0 and np.isnan(fresh["p_value"][3]), r.stderr


def test_a_state_refuses_an_overlap_another_model_or_a_damaged_file_and_waits_for_the_outputs(work, tmp_path):
    import shutil

    frame = pd.read_csv(work / "test.csv")
    _slices(frame, [300], tmp_path, work / "model.onnx", tmp_path / "st.json")
    before = (tmp_path / "st.json").read_bytes()
    frame.iloc[[599]].assign(timestamp="2026-03-01 00:00:00").to_csv(tmp_path / "later.csv", index=False)
    (tmp_path / "bad.json").write_text('{"format": "vae-anomaly series state", "version": 1, "model_id": "'
                                       + json.loads(before)["model_id"] + '", "series": {"tail": 3}}')
    shutil.copy(work / "model.onnx", tmp_path / "other.onnx")
    state, later = str(tmp_path / "st.json"), str(tmp_path / "later.csv")
    runs = {  # independent runs, two at a time; none may write the state
        "overlap": ("score", str(tmp_path / "slice1.csv"), "--state", state, "-o", str(tmp_path / "x.csv")),
        "gone": ("score", later, "--state", state, "-o", str(tmp_path / "missing" / "x.csv")),
        "damaged": ("score", later, "--state", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.csv")),
        "not a state": ("score", later, "--state", str(work / "test.csv"), "-o", str(tmp_path / "x.csv")),
        "alpha": ("score", later, "--state", state, "--alpha", "0.05", "-o", str(tmp_path / "x.csv")),
        "fixed": ("score", "test.csv", "--state", str(tmp_path / "s.json"), "--threshold", "9", "-o",
                  str(tmp_path / "f.csv")),
        # another model file (the same weights, recalibrated) has another id
        "calibrate": ("calibrate", str(tmp_path / "other.onnx"), "test.csv")}
    with ThreadPoolExecutor(2) as pool:
        out = dict(zip(runs, pool.map(lambda a: run(work, *a), runs.values())))
    other = run(work, "score", later, "-m", str(tmp_path / "other.onnx"), "--state", state, "-o", str(tmp_path / "x.csv"))
    for name, code, words in (("overlap", 3, "is not after the last timestamp already scored"),
                              ("damaged", 3, "is damaged"), ("not a state", 3, "is not a series state"),
                              ("alpha", 3, "same --score and --alpha"), ("gone", 5, "")):
        assert out[name].returncode == code and words in out[name].stderr, (name, out[name].stderr)
    assert out["calibrate"].returncode == 0 and other.returncode == 3 and "not of this model" in other.stderr
    assert (tmp_path / "st.json").read_bytes() == before  # refusals and a failed output leave it as it was
    assert out["fixed"].returncode == 0  # a fixed threshold: the state carries the windows alone
    assert json.loads((tmp_path / "s.json").read_text())["calibration"] is None


# ---------------------------------------------------------------- incidents: flagged timestamps grouped into events


@pytest.fixture(scope="module")
def two_metrics(tmp_path_factory):
    """A window model of two metrics (cpu and mem, 5-minute steps, W = 8) and a test series whose mem
    jumps for 20 steps at row 300."""
    pytest.importorskip("torch")
    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import fit_file

    folder = tmp_path_factory.mktemp("two")
    for name, n, seed in (("train", 800, 0), ("test", 500, 1)):
        f = _frame(n, seed).rename(columns={"value": "cpu"})
        f["mem"] = np.cos(2 * np.pi * np.arange(n) / 48) + 0.05 * np.random.default_rng(seed + 7).standard_normal(n)
        if name == "test":
            f.loc[300:319, "mem"] += 4.0
        f.to_csv(folder / f"{name}.csv", index=False)
    fit_file(folder / "train.csv", folder / "model.onnx", window=8, id_columns="host",
             config=TrainConfig(epochs=30, hidden=(32, 32), seed=0, prior_max_rows=0))
    return folder


def test_events_name_the_metric_to_blame_and_continue_across_runs(two_metrics, tmp_path):
    from vae_anomaly import score_file

    folder = two_metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_file(folder / "test.csv", folder / "model.onnx", tmp_path / "o.csv",
                         summary_json=tmp_path / "s.json", events=tmp_path / "e.jsonl")
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "s.json").read_text())["events"] == events
    assert sum(e["rows"] for e in events) == int(res.is_anomaly.sum())
    frame = pd.read_csv(folder / "test.csv")
    big = max(events, key=lambda e: e["peak_score"])
    assert pd.Timestamp(big["start"]) <= pd.Timestamp(frame["timestamp"][300] + "Z") <= pd.Timestamp(big["end"])
    assert big["top_metrics"][0]["metric"] == "mem" and big["top_metrics"][0]["share"] > 0.5
    assert all(abs(sum(m["share"] for m in e["top_metrics"]) - 1) < 1e-9 for e in events if len(e["top_metrics"]) == 2)
    # cut inside the incident: the first run reports it ongoing, the next continues it from its start
    flagged = np.flatnonzero(res.is_anomaly[300:330]) + 300
    cut = int(flagged[len(flagged) // 2])
    parts = []
    for i, (a, b) in enumerate(((0, cut), (cut, len(frame)))):
        frame.iloc[a:b].to_csv(tmp_path / f"slice{i}.csv", index=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score_file(tmp_path / f"slice{i}.csv", folder / "model.onnx", tmp_path / f"x{i}.csv",
                       state=tmp_path / "st.json", events=tmp_path / f"e{i}.jsonl")
        parts.append([json.loads(line) for line in (tmp_path / f"e{i}.jsonl").read_text().splitlines()])
    ongoing, continued = parts[0][-1], next(e for e in parts[1] if e["continued"])
    assert ongoing["ongoing"] and continued["start"] == ongoing["start"] == big["start"]
    assert continued["end"] == big["end"] and continued["rows"] == big["rows"]
    assert continued["peak_score"] == big["peak_score"]


def test_each_row_names_its_metrics_with_shares_of_its_score_alike_in_every_format(two_metrics, tmp_path):
    from vae_anomaly import Scorer, score_file
    from vae_anomaly.deploy.series import read_windows

    folder = two_metrics
    outs = {}
    for suffix in ("csv", "jsonl", "parquet"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score_file(folder / "test.csv", folder / "model.onnx", tmp_path / f"o.{suffix}", features=2)
    csv_shares = [dict((m, float(v)) for m, v in (x.split(":") for x in t.split(";"))) if isinstance(t, str) else {}
                  for t in pd.read_csv(tmp_path / "o.csv")["top_metrics"]]
    jsonl = [{m["metric"]: m["share"] for m in json.loads(line)["top_metrics"]}
             for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    parquet = [{m["metric"]: m["share"] for m in t} for t in pd.read_parquet(tmp_path / "o.parquet")["top_metrics"]]
    assert len(jsonl) == len(parquet) == len(csv_shares) == 500 and jsonl == parquet
    for a, b in zip(csv_shares, jsonl):
        assert a.keys() == b.keys() and all(abs(a[m] - b[m]) <= 5e-5 for m in a)
    # the shares are the positive parts of each metric's window slots' terms, found here by slot name
    scorer = Scorer(folder / "model.onnx")
    x, _, season = read_windows(folder / "test.csv", scorer.series)  # the full windows: rows W − 1 on (no gaps here)
    terms = scorer.predict(x, feature_terms=True, condition=season).feature_terms
    names = np.array([n.split("@")[0] for n in scorer.input_names])
    positive = np.clip(terms, 0, None)
    mem = positive[:, names == "mem"].sum(axis=1) / positive.sum(axis=1)
    np.testing.assert_allclose([r.get("mem", 0.0) for r in jsonl[len(jsonl) - len(x):]], mem, rtol=1e-5)
    assert all(abs(sum(r.values()) - 1) < 1e-9 for r in jsonl if len(r) == 2)
    # mem's jump at rows 300..319 is blamed on mem
    assert all(next(iter(jsonl[i])) == "mem" for i in range(305, 320))


def test_a_model_with_seasons_scores_the_same_values_by_their_time_of_day(work, tmp_path):
    from vae_anomaly import score_file

    test = pd.read_csv(work / "test.csv")
    later = pd.to_datetime(test["timestamp"]) + pd.Timedelta(hours=12)          # the same steps, half a day on
    test.assign(timestamp=later.dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(tmp_path / "later.csv", index=False)
    day = pd.to_datetime(test["timestamp"]) + pd.Timedelta(days=7)              # the same time of day, a week on
    test.assign(timestamp=day.dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(tmp_path / "week.csv", index=False)
    base, shifted, same = (score_file(f, work / "model.onnx", tmp_path / f"{i}.csv").scores
                           for i, f in enumerate([work / "test.csv", tmp_path / "later.csv", tmp_path / "week.csv"]))
    np.testing.assert_array_equal(same, base)                    # only the time of day enters (no week season)
    assert np.mean(np.abs(shifted - base) > 1e-3) > 0.9          # at another time of day the same values score otherwise


def test_a_window_model_takes_no_condition_from_its_caller(work, tmp_path):
    from vae_anomaly import Scorer, score_file
    from vae_anomaly.training.fit import fit_file

    assert Scorer(work / "model.onnx").series["season"] == ["day"]   # --seasons auto, 900 five-minute steps: 3 days
    np.save(tmp_path / "c.npy", np.zeros((600, 2)))
    with pytest.raises(InputValidationError, match="takes no condition"):
        score_file(work / "test.csv", work / "model.onnx", tmp_path / "o.csv", condition=tmp_path / "c.npy")
    with pytest.raises(InputValidationError, match="takes no condition"):
        fit_file(work / "train.csv", tmp_path / "m.onnx", window=12, condition=tmp_path / "c.npy")
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "m.onnx").exists()


def test_events_need_a_series_model_and_a_known_format(work, tmp_path):
    r = run(work, "score", "test.csv", "--events", str(tmp_path / "e.txt"))
    assert r.returncode == 3 and "--events" in r.stderr and ".jsonl" in r.stderr


def test_a_threshold_too_few_calibration_windows_leave_at_infinity_continues_across_runs(work, tmp_path):
    from vae_anomaly import score_file

    frame = pd.read_csv(work / "test.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = score_file(work / "test.csv", work / "model.onnx", tmp_path / "whole.csv", alpha=1e-4)
    parts = _slices(frame, [100, 400], tmp_path, work / "model.onnx", tmp_path / "state.json", alpha=1e-4)
    assert not whole.is_anomaly.any() and whole.threshold == np.inf
    assert np.concatenate([r.p_values for r in parts]).tobytes() == whole.p_values.tobytes()
    assert json.loads((tmp_path / "state.json").read_text())["calibration"] is None
