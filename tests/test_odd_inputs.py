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
