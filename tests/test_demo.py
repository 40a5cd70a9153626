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
from vae_anomaly.evaluation.demo import DEMO_DATASETS, TABLE_COLUMNS, demo_epochs, demo_table, run_demo


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
    assert any(line.startswith("$ vae-anomaly fit ") and line.endswith(" --epochs 2") for line in said)
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


def test_the_default_datasets_can_flag_at_the_demos_alpha_and_train_a_fifth_of_the_budget():
    """Every dataset the demo runs by default has at least 99 calibration rows, so neither of its
    rates is 0 by construction (issue 33); the demo's epochs are those of a fifth of fit's steps."""
    import math

    from vae_anomaly.training.config import TrainConfig, auto_epochs

    for name in DEMO_DATASETS:
        _, y = load_labelled(bundled_path(name))
        n_fit = len(semi_supervised_split(y, 0)[0])
        assert math.ceil(0.2 * n_fit) >= 99, name
        n_train = n_fit - math.ceil(0.2 * n_fit)
        assert demo_epochs(n_fit) == auto_epochs(n_train, TrainConfig(target_steps=TrainConfig.target_steps // 5)) \
            < auto_epochs(n_train, TrainConfig())


def test_a_dataset_that_cannot_flag_shows_no_rate_and_the_caption_ends_with_the_next_step():
    rows = [{"dataset": d, "vae_roc_auc": 0.9, "iforest_roc_auc": 0.8, "knn_roc_auc": 0.85,
             "vae_average_precision": 0.5, "false_alarm_rate": fa, "recall": 0.5, "n_calibration": n}
            for d, fa, n in (("big", 0.02, 300), ("small", 0.0, 40))]
    table = demo_table(rows)
    cells = {c.header: list(c.cells) for c in table.columns}
    assert cells["false-alarm\nrate"] == ["0.0200", "n/a", "0.0200"] and cells["recall"][1] == "n/a"
    assert "small: fewer than 99 calibration rows" in table.caption
    assert table.caption.rstrip().endswith("mean ROC-AUC was 0.900 against KNN's 0.850).")
    assert "2.0% of held-out normal rows were flagged" in table.caption
