"""Odd but ordinary inputs (issue 31): each gives the right answer or a clear refusal, never a wrong
answer with exit 0. Huge finite values, categories written differently by different readers,
headers and names, series time columns."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from vae_anomaly import Scorer

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


# ---------------------------------------------------------------- one rule for non-finite scores

@pytest.mark.parametrize("value", [1e30, -3e38])
def test_a_huge_finite_value_is_flagged_with_p_value_0_in_every_path(model_path, cardio, value, tmp_path):
    scorer = Scorer(model_path)
    x = cardio[1][:6].astype(np.float32).copy()
    x[2, 3] = value
    with pytest.warns(UserWarning, match="non-finite"):
        res = scorer.predict(x)
    assert res.scores[2] == np.inf and res.p_values[2] == 0.0 and res.is_anomaly[2]
    assert np.isfinite(res.scores[[0, 1, 3, 4, 5]]).all()
    with pytest.warns(UserWarning, match="non-finite"):
        assert scorer.score_samples(x)[2] == np.inf
    with pytest.warns(UserWarning, match="non-finite"):  # BH: flagged, and not one of BH's hypotheses
        assert scorer.predict(x, fdr=0.1).is_anomaly[2]

    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "s.jsonl"
    run = subprocess.run([*CLI, "score", str(tmp_path / "x.npy"), "--model", str(model_path), "--output", str(out),
                          "--fail-on-anomaly"], capture_output=True, text=True)
    assert run.returncode == 6, run.stderr  # --fail-on-anomaly: the row is an anomaly
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[2]["score"] is None and rows[2]["p_value"] == 0.0 and rows[2]["is_anomaly"] == 1


def test_logsumexp_of_all_minus_inf_terms_is_minus_inf_not_nan():
    torch = pytest.importorskip("torch")
    from vae_anomaly.training.scores import row_logsumexp

    t = torch.tensor([[-np.inf, -np.inf], [0.0, np.inf], [0.0, 0.0]])
    out = row_logsumexp(t)
    assert out[0] == -np.inf and out[1] == np.inf and torch.isclose(out[2], torch.tensor(np.log(2.0), dtype=out.dtype))


# ---------------------------------------------------------------- one canonical form for categories

def _fit_csv(tmp_path, text: str, categorical: str | None = None):
    from vae_anomaly.deploy import io

    path = tmp_path / "fit.csv"
    path.write_text(text)
    return io.read_fit_table(path, categorical=categorical)


def _codes_csv(n: int = 40) -> str:
    codes, flags = ["01", "02", "10", "02"], ["false", "true"]
    return "x,code,flag\n" + "".join(f"{i}.5,{codes[i % 4]},{flags[i % 2]}\n" for i in range(n))


def test_categories_fitted_from_csv_text_match_parquet_pandas_and_records(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    import pyarrow.parquet as pq

    from vae_anomaly.deploy import io, schema
    from vae_anomaly.integrations.http_bodies import _records_table

    x_fit, spec = _fit_csv(tmp_path, _codes_csv(), categorical="code")
    kinds = {f["name"]: f.get("values") for f in spec["features"]}
    assert kinds == {"x": None, "code": "integer", "flag": "boolean"}
    frame = pd.DataFrame({"x": [i + 0.5 for i in range(8)], "code": [1, 2, 10, 2] * 2, "flag": [False, True] * 4})
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "new.parquet")
    frame.to_csv(tmp_path / "pandas.csv", index=False)  # pandas writes False/True
    expected = x_fit[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unseen categories" warning either
        np.testing.assert_array_equal(io.read_table_rows(tmp_path / "new.parquet", spec), expected)
        np.testing.assert_array_equal(io.read_table_rows(tmp_path / "pandas.csv", spec), expected)
        np.testing.assert_array_equal(schema.encode(pa.Table.from_pandas(frame), spec), expected)
        floats = frame.astype({"code": "float64"})  # pandas turns integers with a gap into floats
        np.testing.assert_array_equal(schema.encode(pa.Table.from_pandas(floats), spec), expected)
        for code in (1, "01", "1", 1.0, " 01"):  # over HTTP: {"code": 1} and {"code": "01"} alike
            records = [{"x": 0.5, "code": code, "flag": False}]
            np.testing.assert_array_equal(schema.encode(_records_table(records, spec, "body"), spec), expected[:1])


def test_a_text_category_stays_as_written_and_a_batch_of_unseen_ones_warns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import schema

    _, spec = _fit_csv(tmp_path, "x,host\n" + "".join(f"{i},{['a01', 'b7'][i % 2]}\n" for i in range(40)))
    assert spec["features"][1]["values"] == "text"
    t = pa.table({"x": np.arange(10.0), "host": ["A01"] * 9 + ["a01"]})
    with pytest.warns(UserWarning, match=r"column 'host': 9 of 10 values \(90%\) are categories never seen.*'A01'"):
        x = schema.encode(t, spec)
    assert x[:9, -1].all() and x[9, 1] == 1.0  # "A01" unseen (last slot), "a01" the first category


# ---------------------------------------------------------------- headers and names

def test_a_headerless_numeric_csv_scored_by_position_keeps_its_first_row(model_path, cardio, tmp_path):
    x = cardio[1][:5]
    np.savetxt(tmp_path / "new.csv", x, delimiter=",", fmt="%.17g")  # no header line
    out = tmp_path / "s.csv"
    run = subprocess.run([*CLI, "score", str(tmp_path / "new.csv"), "--model", str(model_path), "--output", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "read as a data row" in run.stderr, run.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 5 and lines[1].startswith("0,")
    expected = Scorer(model_path).score_samples(x)
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], expected, rtol=1e-6)


def test_a_repeated_column_is_refused_at_scoring_as_at_fit(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import io, schema
    from vae_anomaly.errors import InputValidationError

    _, spec = _fit_csv(tmp_path, _codes_csv(), categorical="code")
    (tmp_path / "new.csv").write_text("x,code,flag,x\n1.5,01,true,2.5\n")
    with pytest.raises(InputValidationError, match=r"new.csv: column 'x' appears 2 times"):
        io.read_table_rows(tmp_path / "new.csv", spec)
    t = pa.table([[1.5], ["01"], [True], [9.0]], names=["x", "code", "flag", "x"])
    with pytest.raises(InputValidationError, match=r"column 'x' appears 2 times"):
        schema.encode(t, spec)
    t = pa.table([[1.5], ["01"], [True], ["a"], ["b"]], names=["x", "code", "flag", "junk", "junk"])
    assert schema.encode(t, spec).shape == (1, 1 + 4 + 3)  # a repeated column the model does not read is no harm


@pytest.mark.parametrize("column", ["score", "row", "p_value", "is_anomaly"])
def test_an_id_column_named_as_an_output_column_is_refused(tmp_path, column):
    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import io, schema, series
    from vae_anomaly.errors import InputValidationError

    t = pa.table({column: ["a", "b"], "x": [1.0, 2.0]})
    with pytest.raises(InputValidationError, match=f"ID column '{column}' has the name of a score output column"):
        schema.infer_roles(t.schema, id_columns=column)
    with pytest.raises(InputValidationError, match=f"ID column '{column}'"):  # a model written before the check
        io.ScoreWriter(open(tmp_path / "s.csv", "wb"), "csv", id_schema=t.select([column]).schema)
    ts = pa.table({"time": pa.array([0, 60], pa.timestamp("s")), column: ["a", "b"], "x": [1.0, 2.0]})
    with pytest.raises(InputValidationError, match=f"ID column '{column}'"):
        series.series_spec(ts.schema, window=4, id_columns=column)


def test_column_names_match_after_unicode_nfc(tmp_path):
    import unicodedata

    from vae_anomaly.deploy import io

    nfc, nfd = "temp\u00e9", unicodedata.normalize("NFD", "temp\u00e9")
    assert nfc != nfd
    x_fit, spec = _fit_csv(tmp_path, f"{nfc},code\n" + "".join(f"{i}.5,{['a', 'b'][i % 2]}\n" for i in range(40)))
    (tmp_path / "new.csv").write_text(f"code,{nfd}\n" + "".join(f"{['a', 'b'][i % 2]},{i}.5\n" for i in range(4)))
    np.testing.assert_array_equal(io.read_table_rows(tmp_path / "new.csv", spec), x_fit[:4])


def test_a_header_longer_than_a_mebibyte_is_read(tmp_path):
    from vae_anomaly.deploy import tables

    long_name = "m" * (3 << 19)  # 1.5 MiB
    (tmp_path / "wide.csv").write_text(f"{long_name},x\n1,2\n3,4\n")
    t = tables.read_table(tmp_path / "wide.csv")
    assert t.column_names == [long_name, "x"] and t.column("x").to_pylist() == [2, 4]


# ---------------------------------------------------------------- property tests: right answer or clear refusal

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WRITINGS = {  # how a reader hands over the integer code k
    "int": lambda k: k, "float": lambda k: float(k), "text": str, "zero-padded": lambda k: f"{k:03d}",
    "spaced": lambda k: f" {k} ",
}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=30), st.sampled_from(sorted(_WRITINGS)),
       st.sampled_from(sorted(_WRITINGS)))
def test_an_integer_code_is_one_category_however_it_is_written(codes, fitted_as, scored_as):
    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import schema

    def table(writing):
        values = [_WRITINGS[writing](k) for k in codes]
        return pa.table({"code": pa.array(values), "x": np.zeros(len(codes))})

    from vae_anomaly.errors import InputValidationError

    fitted = table(fitted_as)
    if fitted_as == "float":  # a float column is numeric, never a category: refused as one
        with pytest.raises(InputValidationError, match="expected integer codes or text"):
            schema.infer_roles(fitted.schema, categorical="code")
        return
    try:
        spec = schema.build_schema(fitted, schema.infer_roles(fitted.schema, categorical="code"))
    except InputValidationError as e:  # or a clear refusal: too many distinct values to be a category
        assert "too many to be a category" in str(e)
        return
    assert spec["features"][1]["values"] == ("boolean" if set(codes) <= {0, 1} and fitted_as != "int" else "integer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(schema.encode(table(scored_as), spec), schema.encode(fitted, spec))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=20),
       st.sampled_from(["bool", "python-text", "lower", "upper", "digit"]))
def test_a_boolean_is_one_category_however_it_is_written(flags, scored_as):
    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import schema

    write = {"bool": lambda b: b, "python-text": str, "lower": lambda b: str(b).lower(),
             "upper": lambda b: str(b).upper(), "digit": lambda b: str(int(b))}[scored_as]
    fitted = pa.table({"ok": pa.array(flags), "x": np.zeros(len(flags))})
    spec = schema.build_schema(fitted, schema.infer_roles(fitted.schema))
    scored = pa.table({"ok": pa.array([write(b) for b in flags]), "x": np.zeros(len(flags))})
    np.testing.assert_array_equal(schema.encode(scored, spec), schema.encode(fitted, spec))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6), st.data())
def test_unicode_and_repeated_names_are_matched_after_nfc_or_refused(names, data):
    import unicodedata

    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import schema
    from vae_anomaly.errors import InputValidationError

    nfc = [unicodedata.normalize("NFC", n) for n in names]
    spec = schema.positional(list(dict.fromkeys(nfc)))
    written = [unicodedata.normalize(data.draw(st.sampled_from(["NFC", "NFD", "NFKC"])), n) for n in names]
    written = [w if unicodedata.normalize("NFC", w) == n else n for w, n in zip(written, nfc)]  # NFKC may change
    table = pa.table([np.full(1, float(i)) for i in range(len(names))], names=written)
    if len(set(nfc)) < len(nfc):  # some column appears twice, however written
        with pytest.raises(InputValidationError, match="appears 2 times|appears 3 times|appears [0-9]+ times"):
            schema.encode(table, spec)
    else:
        np.testing.assert_array_equal(schema.encode(table, spec), [list(range(len(names)))])


@settings(max_examples=30, deadline=None)
@given(st.integers(-12 * 60, 14 * 60), st.integers(0, 10**6))
def test_a_zoned_timestamp_is_its_utc_instant(offset_minutes, minutes):
    pa = pytest.importorskip("pyarrow")
    import datetime as dt

    from vae_anomaly.deploy import series

    utc = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=minutes)
    local = utc.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    text = pa.chunked_array([pa.array([local.isoformat()])])
    naive = pa.chunked_array([pa.array([utc.replace(tzinfo=None).isoformat(sep=" ")])])
    assert series.timestamps_ns(text, "X", "t")[0] == series.timestamps_ns(naive, "X", "t")[0] \
        == int(utc.timestamp()) * 10**9


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(-3.3999999521443642e38, 3.3999999521443642e38, allow_nan=False, allow_subnormal=False,
                          width=32), min_size=1, max_size=8), st.data())
def test_extreme_finite_values_score_finite_or_are_flagged_with_p_value_0(model_path, cardio, values, data):
    scorer = _scorer(model_path)
    x = cardio[1][: len(values)].astype(np.float32).copy()
    cols = data.draw(st.lists(st.integers(0, x.shape[1] - 1), min_size=len(values), max_size=len(values)))
    x[np.arange(len(values)), cols] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scorer.predict(x)
    assert not np.isnan(res.scores).any() and not np.isnan(res.p_values).any()
    inf = np.isinf(res.scores)
    assert (res.scores[inf] > 0).all() and (res.p_values[inf] == 0).all() and res.is_anomaly[inf].all()
    assert ((res.p_values[~inf] > 0) & (res.p_values[~inf] <= 1)).all()


_SCORERS: dict = {}


def _scorer(path):
    if path not in _SCORERS:
        _SCORERS[path] = Scorer(path)
    return _SCORERS[path]


def test_the_header_pandas_writes_for_unnamed_columns_stays_a_header(tmp_path):
    pd = pytest.importorskip("pandas")
    from vae_anomaly.deploy.io import read_matrix

    x = np.arange(12.0).reshape(4, 3) + 0.5
    pd.DataFrame(x).to_csv(tmp_path / "x.csv", index=False)        # header 0,1,2
    pd.Series([0, 1, 0, 1]).to_csv(tmp_path / "y.csv", index=False)  # header 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_matrix(tmp_path / "x.csv"), x)
        np.testing.assert_array_equal(read_matrix(tmp_path / "y.csv").ravel(), [0, 1, 0, 1])


def test_http_bodies_and_calibrate_read_a_table_with_the_models_names_and_types(tmp_path):
    import types
    import unicodedata

    pa = pytest.importorskip("pyarrow")
    from vae_anomaly.deploy import io, schema, tables
    from vae_anomaly.errors import InputValidationError
    from vae_anomaly.integrations.http_bodies import _ids, named_records

    nfc = "\u00e9tat"
    nfd = unicodedata.normalize("NFD", nfc)
    (tmp_path / "fit.csv").write_text(f"x,{nfc},host\n" + "".join(f"{i}.5,{['007', 'A'][i % 2]},h{i}\n" for i in range(40)))
    _, spec = io.read_fit_table(tmp_path / "fit.csv", id_columns="host")
    types_ = schema.read_types(spec)
    body = f"x,{nfd},host\n1.5,007,h1\n".encode()                      # the body spells the name in NFD
    t = tables.read_csv_bytes(body, "request body", column_types=types_)
    assert t.column(nfd).to_pylist() == ["007"]                        # read as text, as the model's type says
    assert schema.encode(t, spec)[0].tolist() == [1.5, 1.0, 0.0, 0.0]  # "007", the first category
    assert _ids(t, None, spec) == {"host": ["h1"]}
    twice = tables.read_csv_bytes(b"x,host,host\n1,a,b\n", "request body")
    with pytest.raises(InputValidationError, match="column 'host' appears 2 times"):
        _ids(twice, None, spec)                                        # was a KeyError, a 500
    model = types.SimpleNamespace(series=None, table=spec)
    assert named_records([{"x": 1.5, nfd: "007", "host": "h"}], model) == [{"x": 1.5, nfc: "007", "host": "h"}]
    with pytest.raises(InputValidationError, match="appears 2 times"):
        named_records([{"x": 1.5, nfd: "007", nfc: "A"}], model)
    (tmp_path / "val.csv").write_text(f"x,{nfc}\n" + "".join(f"{i}.5,007\n" for i in range(8)))
    rows = io.read_rows(tmp_path / "val.csv", table=spec)             # calibrate and report read so
    assert rows.column(nfc).to_pylist() == ["007"] * 8
