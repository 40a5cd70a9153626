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
    from vae_anomaly.integrations.service import _records_table

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
