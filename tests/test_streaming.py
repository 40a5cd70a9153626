"""Streaming scoring, output formats, Parquet input, and Dask parity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vae_anomaly import Scorer

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


@pytest.fixture
def work(tmp_path, model_path, cardio):
    shutil.copy(model_path, tmp_path / "model.onnx")
    np.save(tmp_path / "test.npy", cardio[1])
    return tmp_path


def run(work, *args):
    r = subprocess.run(CLI + list(args), cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def run_all(work, *commands):
    """``run`` of each command, two at a time (independent runs, each keeps one core busy): their stdout."""
    with ThreadPoolExecutor(2) as pool:
        return [r.stdout for r in pool.map(lambda args: run(work, *args), commands)]


def test_chunk_size_changes_memory_not_results(work, cardio):
    np.savetxt(work / "test.csv", cardio[1], delimiter=",", fmt="%.17g", comments="",
               header=",".join(f"c{j}" for j in range(cardio[1].shape[1])))
    np.save(work / "fortran.npy", np.asfortranarray(cardio[1]))
    whole, *chunked, fdr, fdr_chunked = run_all(
        work,
        ("score", "test.npy", "--features", "2"),
        ("score", "test.npy", "--features", "2", "--chunk-rows", "7"),
        ("score", "test.csv", "--features", "2", "--chunk-rows", "13"),
        ("score", "fortran.npy", "--features", "2", "--chunk-rows", "50"),
        ("score", "test.npy", "--fdr", "0.2"),
        ("score", "test.npy", "--fdr", "0.2", "--chunk-rows", "9"),
    )
    for out, what in zip(chunked, ("npy, 7 rows", "csv, 13 rows", "Fortran-order npy, 50 rows")):
        assert out == whole, what
    assert fdr_chunked == fdr


def test_errors_name_the_row_in_the_whole_file(work, cardio):
    X = cardio[1][:40].copy()
    X[33, 2] = np.nan
    np.save(work / "nan.npy", X)
    r = subprocess.run(CLI + ["score", "nan.npy", "--chunk-rows", "8"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 3 and "row 33, column 2" in r.stderr
    (work / "bad.csv").write_text("\n".join([",".join(f"c{j}" for j in range(21))] + ["1," * 20 + "1"] * 25
                                            + ["1," * 20 + "x"]))
    r = subprocess.run(CLI + ["score", "bad.csv", "--chunk-rows", "4"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 3 and "column 'c20', data row 25," in r.stderr


def test_output_formats_agree(work):
    pq = pytest.importorskip("pyarrow.parquet")
    whole, *_ = run_all(work, ("score", "test.npy"),
                        *(("score", "test.npy", "-o", f"out.{suffix}", "--chunk-rows", "100")
                          for suffix in ("csv", "jsonl", "npy", "parquet")))
    ref = np.array([line.split(",")[:4] for line in whole.splitlines()[1:]], float)
    np.testing.assert_array_equal(np.load(work / "out.npy"), ref[:, 1].astype(np.float32))
    rows = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    got = np.array([[r["row"], r["score"], r["p_value"], r["is_anomaly"]] for r in rows])
    np.testing.assert_array_equal(got[:, [0, 3]], ref[:, [0, 3]])
    np.testing.assert_array_equal(np.float32(got[:, 1]), np.float32(ref[:, 1]))
    np.testing.assert_allclose(got[:, 2], ref[:, 2], rtol=1e-8)
    table = pq.read_table(work / "out.parquet").to_pydict()
    np.testing.assert_array_equal(np.float32(table["score"]), np.float32(ref[:, 1]))
    np.testing.assert_array_equal(table["is_anomaly"], ref[:, 3])
    assert table["row"] == list(range(len(ref)))
    r = subprocess.run(CLI + ["score", "test.npy", "-o", "out.xlsx"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 5 and "unknown output type" in r.stderr and not (work / "out.xlsx").exists()


def test_parquet_input_scores_like_npy(work, cardio):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({f"f{j}": cardio[1][:, j] for j in range(cardio[1].shape[1])})
    pq.write_table(table, work / "test.parquet", row_group_size=100)
    parquet, npy = run_all(work, ("score", "test.parquet", "--chunk-rows", "64"), ("score", "test.npy"))
    assert parquet == npy
    pq.write_table(pa.table({"a": ["x", "y"]}), work / "text.parquet")
    r = subprocess.run(CLI + ["score", "text.parquet"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 3 and "column 'a', data row 0, holds 'x'; expected a number" in r.stderr


def test_dask_scores_equal_local_scoring_on_a_local_cluster(model_path, cardio):
    da = pytest.importorskip("dask.array")
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    import pandas as pd

    from vae_anomaly.integrations.dask import score_array, score_dataframe

    X = cardio[1].astype(np.float32)
    local = Scorer(model_path).predict(X)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        darr = da.from_array(X, chunks=(97, X.shape[1]))
        np.testing.assert_array_equal(score_array(darr, model_path).compute(), local.scores)
        df = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
        ddf = dd.from_pandas(df, npartitions=5)
        out = score_dataframe(ddf, model_path).compute()
        np.testing.assert_array_equal(out["score"].to_numpy(), local.scores)
        np.testing.assert_array_equal(out["p_value"].to_numpy(), local.p_values)
        np.testing.assert_array_equal(out["is_anomaly"].to_numpy(), local.is_anomaly)
        empty = score_dataframe(ddf[ddf["f0"] > 1e9], model_path).compute()
        assert len(empty) == 0 and list(empty.columns) == ["score", "p_value", "is_anomaly"]
