"""Usual mistakes that used to pass silently now warn, by name: a label (or any one-valued column)
left in the training file, and a fixed score threshold in the wrong units (issue 33)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from vae_anomaly import Scorer
from vae_anomaly.deploy import schema
from vae_anomaly.deploy.series import slot_metrics
from vae_anomaly.training.config import TrainConfig
from vae_anomaly.training.data import prepare


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def test_one_valued_columns_are_named_and_the_others_are_not(rng):
    x = rng.normal(size=(50, 5))
    x[:, 1] = 7.0                              # a constant numeric column
    x[:, 3:5] = [1.0, 0.0]                     # a category column with one category (its slot + unseen slot)
    spec = {"features": [{"name": "cpu", "kind": "numeric"}, {"name": "flat", "kind": "numeric"},
                         {"name": "mem", "kind": "numeric"}, {"name": "attack", "kind": "categorical",
                                                               "categories": ["normal"]}]}
    with pytest.warns(UserWarning, match=r"2 columns \('flat', 'attack'\).*--exclude flat,attack"):
        prepare(x, TrainConfig(), slot_columns=schema.slot_columns(spec), name="conn.csv")
    with pytest.warns(UserWarning, match=r"1 column \('column 1'\) holds.*drop them from the rows"):
        prepare(x[:, :3], TrainConfig(), name="x.npy")
    _no_warning(lambda: prepare(x[:, [0, 2]], TrainConfig(), name="x.npy"))


def test_a_metric_is_one_valued_only_if_every_window_slot_is(rng):
    window, metrics = 3, ["cpu", "zero"]
    x = rng.normal(size=(40, window * len(metrics)))
    names = slot_metrics(metrics, window)
    x[:, [i for i, m in enumerate(names) if m == "zero"]] = 0.0
    x[:2, :] = np.nan                          # the padded first windows: missing, ignored
    with pytest.warns(UserWarning, match=r"1 column \('zero'\)"):
        prepare(x, TrainConfig(), slot_columns=names, missing=True)


def test_fit_file_names_a_label_left_in_the_training_table(tmp_path, cardio):
    from vae_anomaly import fit_file

    frame = pd.DataFrame(cardio[0][:200, :4], columns=["a", "b", "c", "d"]).assign(attack="normal")
    frame.to_csv(tmp_path / "normal.csv", index=False)
    with pytest.warns(UserWarning, match=r"normal.csv: 1 column \('attack'\).*--exclude attack"):
        fit_file(tmp_path / "normal.csv", tmp_path / "m.onnx", config=TrainConfig(epochs=1))


def test_a_threshold_that_flags_most_calibration_rows_warns_with_the_range(model_path, cardio):
    scorer = Scorer(model_path)
    cal = scorer.calibration[scorer.default_score]
    rows = cardio[1][:20]
    with pytest.warns(UserWarning, match=r"threshold .* flags 100% of the model's \d+ calibration rows.*auto"):
        res = scorer.predict(rows, threshold=float(cal[0]) - 1.0)
    assert res.is_anomaly.all()  # the warning does not change the answer
    _no_warning(lambda: scorer.predict(rows, threshold=float(np.median(cal)) + 1e-3))
    _no_warning(lambda: scorer.predict(rows))
    _no_warning(lambda: scorer.predict(rows, threshold=float(cal[0]) - 1.0, fdr=0.1))  # the threshold is unused


def test_fit_file_shows_the_cli_bar_when_asked_and_stays_quiet_in_a_script(tmp_path, cardio, capfd):
    from vae_anomaly import fit_file

    np.save(tmp_path / "n.npy", cardio[0][:120])
    seen = []
    fit_file(tmp_path / "n.npy", tmp_path / "a.onnx", config=TrainConfig(epochs=3),
             progress=lambda *a: seen.append(a[:2]))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    capfd.readouterr()
    fit_file(tmp_path / "n.npy", tmp_path / "b.onnx", config=TrainConfig(epochs=3))  # a script: no bar
    assert "fit epoch" not in capfd.readouterr().err
    fit_file(tmp_path / "n.npy", tmp_path / "c.onnx", config=TrainConfig(epochs=3), progress=True)
    assert "fit epoch 3/3" in capfd.readouterr().err
