"""The benchmark protocol and its report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vae_anomaly.errors import InputValidationError
from vae_anomaly.evaluation.benchmark import (
    find_datasets,
    mean_ranks,
    run_benchmark,
    split,
    to_markdown,
)
from vae_anomaly.evaluation.datasets import bundled_path, load_labelled

RECORD_KEYS = {"dataset", "method", "seed", "roc_auc", "average_precision", "fit_seconds", "score_seconds",
               "n_train", "n_test", "n_anomalies"}


def test_split_trains_on_a_random_half_of_the_normals_only():
    y = np.r_[np.zeros(300, int), np.ones(40, int), np.zeros(300, int)]  # grouped like some files
    for seed in range(3):
        tr, te = split(y, seed, max_rows=10_000)
        assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(y)
        assert np.all(y[tr] == 0) and len(tr) == 300
        assert set(np.flatnonzero(y == 1)) <= set(te)
        assert 100 < np.sum(tr < 300) < 200  # both normal groups feed training: not a file-order split
    a, b = split(y, 0, 10_000), split(y, 1, 10_000)
    assert not np.array_equal(a[0], b[0])
    tr, te = split(y, 0, max_rows=100)
    assert len(tr) + len(te) == 100


#: the runs of the two tests below: two datasets of different sizes, two seeds, the VAE (two scores
#: of one fit) and two baselines, two epochs
KW = dict(methods=["vae", "vae-iwae", "iforest", "knn"], seeds=2, epochs=2)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """breastw (683 rows) and "wbc": its first 200 rows, columns reversed."""
    path = tmp_path_factory.mktemp("bench") / "wbc.npz"
    X, y = load_labelled(bundled_path("breastw"))
    np.savez(path, X=X[:200, ::-1], y=y[:200])
    return [("breastw", bundled_path("breastw")), ("wbc", path)]


@pytest.fixture(scope="module")
def serial(datasets):
    """run_benchmark's report of KW in this process, on every core (the suite sets OMP_NUM_THREADS=1)."""
    pytest.importorskip("torch")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(os.cpu_count()):
        return run_benchmark(datasets, **KW)


def test_benchmark_records_follow_the_schema(serial):
    res = serial["results"]
    assert len(res) == 2 * 2 * 4
    for r in res:
        assert RECORD_KEYS <= set(r)
        assert 0 <= r["roc_auc"] <= 1 and r["n_train"] + r["n_test"] == {"breastw": 683, "wbc": 200}[r["dataset"]]
        assert ("fpr_at_threshold" in r) == r["method"].startswith("vae")
    assert serial["protocol"]["seeds"] == 2
    md = to_markdown(serial)
    assert "| breastw |" in md and "| wbc |" in md and "mean rank" in md
    json.dumps(serial)  # plain JSON


@pytest.mark.slow
def test_parallel_jobs_keep_the_serial_records(serial, datasets):
    """Two worker processes (one math thread each) give the serial run's records, in its order."""
    parallel = run_benchmark(datasets, jobs=2, **KW)["results"]
    serial = serial["results"]
    key = [(r["dataset"], r["seed"], r["method"]) for r in serial]
    assert key == [(r["dataset"], r["seed"], r["method"]) for r in parallel] and len(set(key)) == 2 * 2 * 4
    for a, b in zip(serial, parallel):
        assert (a["n_train"], a["n_test"]) == (b["n_train"], b["n_test"])
        if not a["method"].startswith("vae"):  # the baselines are single-threaded: identical
            assert a["roc_auc"] == b["roc_auc"]
    with pytest.raises(InputValidationError, match="jobs"):
        run_benchmark(datasets, jobs=0, **KW)


def test_mean_ranks_average_ties():
    np.testing.assert_allclose(mean_ranks(np.array([[0.9, 0.8, 0.8], [0.5, 0.7, 0.6]])), [2.0, 1.75, 2.25])


def test_bad_benchmark_arguments_are_refused(tmp_path):
    with pytest.raises(InputValidationError, match="unknown"):
        run_benchmark([], methods=["magic"])
    with pytest.raises(InputValidationError, match="not found"):
        find_datasets([tmp_path / "none"])
    with pytest.raises(InputValidationError, match="no .npz"):
        find_datasets([tmp_path])


@pytest.mark.slow
def test_benchmark_command_writes_json_markdown_and_png(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    np.savez(tmp_path / "bw.npz", **dict(np.load(bundled_path("breastw"))))
    r = subprocess.run([sys.executable, "-m", "vae_anomaly.cli.main", "benchmark", str(tmp_path / "bw.npz"),
                        "--methods", "vae,iforest", "--seeds", "1", "--epochs", "2", "--out-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert {r["method"] for r in report["results"]} == {"vae", "iforest"}
    assert (tmp_path / "out" / "benchmark.md").read_text().startswith("ROC-AUC")
    assert (tmp_path / "out" / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
