"""The demo library call (run_demo, demo_table) and the bundled datasets it runs on."""

from __future__ import annotations

import numpy as np
import pytest

from vae_anomaly.errors import InputValidationError
from vae_anomaly.evaluation.datasets import (
    BUNDLED,
    bundled_path,
    load_labelled,
    semi_supervised_split,
)
from vae_anomaly.evaluation.demo import TABLE_COLUMNS, demo_table, run_demo


def test_bundled_files_load_safely_and_stay_small():
    total = 0
    for name in BUNDLED:
        path = bundled_path(name)
        total += path.stat().st_size
        with np.load(path, allow_pickle=False) as d:
            assert sorted(d.keys()) == ["X", "y"]
            X, y = d["X"], d["y"]
        assert X.dtype.kind == "f" and y.dtype.kind == "i"
        assert X.ndim == 2 and len(X) == len(y) and np.isfinite(X).all()
        assert set(np.unique(y)) == {0, 1}
    assert total < 1_000_000


def test_run_demo_writes_the_split_and_returns_sane_numbers(tmp_path):
    said: list[str] = []
    rows = run_demo(["wine", "hepatitis"], tmp_path, epochs=2, quiet=True, say=said.append)
    assert [r["dataset"] for r in rows] == ["wine", "hepatitis"]
    for r in rows:
        X, y = load_labelled(bundled_path(r["dataset"]))
        train, test = semi_supervised_split(y, 0)
        folder = tmp_path / r["dataset"]
        normal = np.load(folder / "normal.npy", allow_pickle=False)
        np.testing.assert_array_equal(normal, X[train])
        np.testing.assert_array_equal(np.load(folder / "test.npy", allow_pickle=False), X[test])
        np.testing.assert_array_equal(np.load(folder / "test_labels.npy", allow_pickle=False), y[test])
        assert (folder / "model.onnx").is_file() and (folder / "scores.csv").is_file()
        assert (r["n_train"], r["n_test"], r["n_anomalies"]) == (len(train), len(test), int(y.sum()))
        for key in ("vae_roc_auc", "vae_average_precision", "iforest_roc_auc", "knn_roc_auc",
                    "false_alarm_rate", "recall"):
            assert 0.0 <= r[key] <= 1.0, key
    assert any(line.startswith("$ vae-anomaly fit ") for line in said)
    assert any(line.startswith("$ vae-anomaly score ") and "--threshold auto" in line for line in said)


def test_run_demo_unknown_name_names_the_choices(tmp_path):
    with pytest.raises(InputValidationError, match="cardio"):
        run_demo(["cardio", "no-such-set"], tmp_path, epochs=2, quiet=True, say=lambda s: None)
    assert not any(tmp_path.iterdir())  # checked before anything is written


def test_demo_table_mean_row_is_the_mean_of_the_rows():
    rng = np.random.default_rng(0)
    rows = [{"dataset": f"d{i}", **{key: float(rng.uniform()) for _, key in TABLE_COLUMNS[1:]}}
            for i in range(3)]
    table = demo_table(rows)
    assert [c.header for c in table.columns] == [title for title, _ in TABLE_COLUMNS]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == ["d0", "d1", "d2", "mean"]
    for (_, key), column in zip(TABLE_COLUMNS[1:], cells[1:]):
        assert column[:3] == [f"{r[key]:.4f}" for r in rows]
        assert column[3] == f"{np.mean([r[key] for r in rows]):.4f}"
    with pytest.raises(InputValidationError):
        demo_table([])
