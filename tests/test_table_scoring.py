"""A model fitted on a mixed table, end to end: columns by name, categories, ID columns, missing values."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from vae_anomaly import Scorer, score_file
from vae_anomaly.errors import InputValidationError

pytest.importorskip("torch")

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]
N = 700


def _table(n: int, seed: int) -> pd.DataFrame:
    """Two correlated numbers, a protocol that follows the first's sign, integer codes, an ID, a
    timestamp and a label column that must never be a feature."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return pd.DataFrame({
        "ts": pd.date_range("2026-01-01", periods=n, freq="min").strftime("%Y-%m-%d %H:%M:%S"),
        "host": [f"web-{i % 13},eu" for i in range(n)],       # a comma inside: quoted in CSV output
        "bytes": x * 3 + 10,
        "latency": x + 0.1 * rng.standard_normal(n),
        "proto": np.where(x > 0, "tcp", np.where(rng.random(n) < 0.5, "udp", "icmp")),
        "code": rng.integers(1, 4, n),
        "label": 0,
    })


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with normal.csv (fitted: model.onnx) and new.csv (fresh rows of the same process)."""
    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import fit_file

    folder = tmp_path_factory.mktemp("tables")
    _table(N, 0).to_csv(folder / "normal.csv", index=False)
    _table(200, 1).to_csv(folder / "new.csv", index=False)
    fit_file(folder / "normal.csv", folder / "model.onnx", exclude="label", id_columns="ts,host",
             categorical="code", config=TrainConfig(epochs=15, hidden=(32, 32), seed=0, prior_max_rows=0))
    return folder


def run(work, *args):
    return subprocess.run(CLI + list(args), cwd=work, capture_output=True, text=True)


def run_all(work, *commands):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: run(work, *args), commands))


def test_the_model_remembers_the_schema(work):
    meta = Scorer(work / "model.onnx").metadata
    assert meta["feature_names"] == ["bytes", "latency", "proto", "code"]
    kinds = {f["name"]: (f["kind"], f.get("categories")) for f in meta["table"]["features"]}
    assert kinds["proto"] == ("categorical", ["icmp", "tcp", "udp"])
    assert kinds["code"] == ("categorical", ["1", "2", "3"])
    assert meta["table"]["id_columns"] == ["ts", "host"] and meta["table"]["exclude"] == ["label"]


def test_reordered_extra_and_parquet_columns_give_identical_scores(work):
    new = pd.read_csv(work / "new.csv")
    new[list(reversed(new.columns))].assign(extra="x").to_csv(work / "reordered.csv", index=False)
    new.to_parquet(work / "new.parquet")
    new.to_csv(work / "new_semicolon.csv", index=False, sep=";")
    outs = run_all(work, ("score", "new.csv", "-o", "a.csv"), ("score", "reordered.csv", "-o", "b.csv"),
                   ("score", "new.parquet", "-o", "c.csv"), ("score", "new_semicolon.csv", "-o", "d.csv"),
                   ("score", "new.csv", "-o", "e.csv", "--chunk-rows", "7"))
    assert all(r.returncode == 0 for r in outs), [r.stderr for r in outs]
    a = (work / "a.csv").read_text()
    assert a.count("\n") == 201
    for other in "bcde":
        assert (work / f"{other}.csv").read_text() == a, other


def test_scorer_takes_dataframes_and_records_by_name(work):
    scorer = Scorer(work / "model.onnx")
    new = pd.read_csv(work / "new.csv")
    s = scorer.score_samples(new)
    np.testing.assert_array_equal(scorer.score_samples(new.iloc[:, ::-1]), s)
    records = new.drop(columns=["ts", "host", "label"]).to_dict("records")
    np.testing.assert_array_equal(scorer.score_samples(records), s)
    cli = pd.read_csv(work / "a.csv") if (work / "a.csv").exists() else None
    if cli is not None:
        np.testing.assert_array_equal(cli["score"].to_numpy(np.float32), s)


def test_a_missing_feature_column_is_named(work):
    pd.read_csv(work / "new.csv").drop(columns=["latency"]).to_csv(work / "short.csv", index=False)
    r = run(work, "score", "short.csv", "-o", "short_out.csv")
    assert r.returncode == 3 and "'latency'" in r.stderr and not (work / "short_out.csv").exists()
    with pytest.raises(InputValidationError, match="no column 'latency'"):
        Scorer(work / "model.onnx").score_samples(pd.read_csv(work / "short.csv"))


def test_text_in_a_numeric_column_names_column_and_row(work):
    new = pd.read_csv(work / "new.csv").astype({"bytes": object})
    new.loc[150, "bytes"] = "n/a?"
    new.to_csv(work / "text.csv", index=False)
    r = run(work, "score", "text.csv", "--chunk-rows", "64")
    assert r.returncode == 3 and "column 'bytes', data row 150" in r.stderr, r.stderr


def test_an_unseen_category_scores_higher_than_the_seen_one(work):
    scorer = Scorer(work / "model.onnx")
    rows = pd.read_csv(work / "new.csv").iloc[:50]
    for column, unseen in (("proto", "gre"), ("code", 9)):
        changed = rows.assign(**{column: unseen})
        for score in ("neg-elbo", "recon-prob"):
            assert (scorer.score_samples(changed, score=score) > scorer.score_samples(rows, score=score)).all()
        terms = scorer.feature_terms(changed)
        j = scorer.feature_names.index(column)
        assert (terms.argmax(axis=1) == j).all()  # the per-feature term names the column


def test_id_columns_lead_every_output_format(work):
    outs = run_all(work, *(("score", "new.csv", "-o", f"ids.{s}", "--features", "2") for s in ("csv", "jsonl", "parquet")))
    assert all(r.returncode == 0 for r in outs), [r.stderr for r in outs]
    new = pd.read_csv(work / "new.csv")
    csv = pd.read_csv(work / "ids.csv")
    assert list(csv.columns) == ["ts", "host", "row", "score", "p_value", "is_anomaly", "top_features"]
    assert csv["host"].tolist() == new["host"].tolist() and csv["ts"].tolist() == new["ts"].tolist()
    assert set(";".join(csv["top_features"]).split(";")) <= {"bytes", "latency", "proto", "code"}
    lines = [json.loads(line) for line in (work / "ids.jsonl").read_text().splitlines()]
    assert [d["host"] for d in lines] == new["host"].tolist() and list(lines[0])[:3] == ["ts", "host", "row"]
    pq = pd.read_parquet(work / "ids.parquet")
    assert pq["host"].tolist() == new["host"].tolist()
    np.testing.assert_array_equal(pq["score"].to_numpy(), csv["score"].to_numpy(np.float32))


def test_missing_values_raise_or_flag_and_stay_out_of_bh(work):
    new = pd.read_csv(work / "new.csv")
    new.loc[[3, 77], "proto"] = None
    new.loc[120, "latency"] = None
    new.to_csv(work / "holes.csv", index=False)
    raised, flagged, fdr = run_all(work, ("score", "holes.csv"), ("score", "holes.csv", "--nan-policy", "flag"),
                                   ("score", "holes.csv", "--nan-policy", "flag", "--fdr", "0.1"))
    assert raised.returncode == 3 and "column 'proto', data row 3, is empty" in raised.stderr
    assert flagged.returncode == 0 and fdr.returncode == 0
    out = pd.read_csv(__import__("io").StringIO(flagged.stdout))
    assert len(out) == 200 and out.loc[[3, 77, 120], "is_anomaly"].eq(1).all()
    assert np.isinf(out.loc[[3, 77, 120], "score"]).all()
    # BH over the 197 scored rows alone: the same flags as BH on the file without those rows
    from vae_anomaly.deploy.calibration import benjamini_hochberg

    bh = pd.read_csv(__import__("io").StringIO(fdr.stdout))
    rest = bh.drop(index=[3, 77, 120])
    np.testing.assert_array_equal(rest["is_anomaly"].to_numpy(bool), benjamini_hochberg(rest["p_value"].to_numpy(), 0.1))


def test_headerless_and_bom_files_give_one_row_per_row(work):
    new = pd.read_csv(work / "new.csv")
    new.to_csv(work / "bom.csv", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    (work / "plain").mkdir(exist_ok=True)
    out = run_all(work, ("score", "bom.csv", "-o", "bom_out.csv"), ("score", "new.csv", "-o", "plain_out.csv"))
    assert all(r.returncode == 0 for r in out), [r.stderr for r in out]
    assert (work / "bom_out.csv").read_text() == (work / "plain_out.csv").read_text()


def test_a_timestamp_column_left_as_a_feature_stops_fit(work):
    r = run(work, "fit", "normal.csv", "--exclude", "label", "-o", "bad.onnx", "--epochs", "1", "-q")
    assert r.returncode == 3 and "'ts' holds dates/times" in r.stderr and "--id-columns ts" in r.stderr
    assert not (work / "bad.onnx").exists()


def test_the_plain_onnxruntime_encoding_in_the_docs_gives_the_scorers_scores(work, monkeypatch):
    """docs/model-file.md shows how to encode a table for the graph with numpy and pandas alone."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "model-file.md").read_text()
    section = text[text.index("## A model fitted on a table"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 3)]
    monkeypatch.chdir(work)  # the snippet reads model.onnx and new.csv
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own documentation
    expected = Scorer(work / "model.onnx").score_samples(pd.read_csv(work / "new.csv"))
    np.testing.assert_array_equal(namespace["neg_elbo"], expected)


def test_a_matrix_for_a_table_model_is_told_the_columns_and_bad_values_are_named(work):
    """Names wherever a user reads a column (issue 33): a matrix as wide as the table (not its
    one-hot encoding) is told the table's columns; a bad value is named by its column."""
    scorer = Scorer(work / "model.onnx")
    with pytest.raises(InputValidationError, match=r"rows of 4 values; the model reads a table of 4 named columns "
                                                   r"\(bytes, latency, proto, code\).*Pass a table"):
        scorer.predict(np.zeros((2, 4)), name="request rows")
    frame = _table(5, 3).drop(columns=["label", "ts", "host"])
    frame.loc[2, "latency"] = 1e300                         # finite in float64, beyond float32
    with pytest.raises(InputValidationError, match=r"row 2, column 'latency'"):
        scorer.predict(frame)


def test_the_summary_names_the_columns_of_its_drift(work, tmp_path):
    frame = _table(50, 4)
    frame["latency"] += 20.0
    frame.to_csv(tmp_path / "shifted.csv", index=False)
    score_file(tmp_path / "shifted.csv", work / "model.onnx", tmp_path / "s.csv", summary_json=tmp_path / "s.json")
    drift = json.loads((tmp_path / "s.json").read_text())["drift"]
    assert drift["columns"] == Scorer(work / "model.onnx").input_names and "proto=tcp" in drift["columns"]
    assert drift["max_abs_column"] == "latency" == drift["columns"][drift["max_abs_feature"]]
