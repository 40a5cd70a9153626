"""scikit-learn estimator, recalibration, FDR control, monitoring outputs and reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vae_anomaly import Scorer
from vae_anomaly.deploy.calibration import benjamini_hochberg, conformal_p_values

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


def test_benjamini_hochberg_controls_the_false_discovery_rate_on_synthetic_batches():
    rng = np.random.default_rng(0)
    q, fdp, power = 0.1, [], []
    for _ in range(300):
        cal = np.sort(rng.standard_normal(2000))
        is_anomaly = np.r_[np.zeros(180, bool), np.ones(20, bool)]
        scores = rng.standard_normal(200) + 3.5 * is_anomaly
        flags = benjamini_hochberg(conformal_p_values(scores, cal), q)
        fdp.append((flags & ~is_anomaly).sum() / max(flags.sum(), 1))
        power.append((flags & is_anomaly).sum() / 20)
    # BH guarantees E[FDP] <= q * m0 / m = 0.09; 300 batches put the mean within ~0.01 of its expectation
    assert np.mean(fdp) <= q
    assert np.mean(power) > 0.5  # and it does find anomalies


def test_benjamini_hochberg_matches_the_step_up_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    # sorted: .002 (<=.02), .01 (<=.04), .03 (<=.06), .04 (<=.08), .5 (> .1): reject the 4 smallest
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.1), [True, True, True, False, True])
    assert not benjamini_hochberg(np.array([0.2, 0.3]), 0.1).any()


torch = pytest.importorskip("torch")


def test_estimator_passes_scikit_learns_checks():
    from sklearn.utils.estimator_checks import check_estimator

    from vae_anomaly.integrations.estimator import (
        EXPECTED_FAILED_CHECKS,
        VAEAnomalyDetector,
    )

    assert len(EXPECTED_FAILED_CHECKS) <= 3 and all(EXPECTED_FAILED_CHECKS.values())
    check_estimator(VAEAnomalyDetector(epochs=2, hidden=(32, 32), device="cpu"),
                    expected_failed_checks=EXPECTED_FAILED_CHECKS)


def test_estimator_in_pipeline_and_grid_search_and_saved_as_onnx(tmp_path, cardio):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    X_train, X_test, y_test = cardio
    pipe = make_pipeline(StandardScaler(), VAEAnomalyDetector(epochs=5)).fit(X_train)
    assert set(np.unique(pipe.predict(X_test))) <= {-1, 1}
    assert roc_auc_score(y_test, -pipe.decision_function(X_test)) > 0.6
    X = np.vstack([X_train[:300], X_test[y_test == 1][:60]])
    inlier = np.r_[np.ones(300, int), np.zeros(60, int)]  # decision_function: higher = inlier
    folds = StratifiedKFold(2, shuffle=True, random_state=0)
    grid = GridSearchCV(VAEAnomalyDetector(epochs=3), {"latent_dim": [2, 4], "hidden": [(32, 32)]}, cv=folds,
                        scoring="roc_auc").fit(X, inlier)
    assert grid.best_params_["latent_dim"] in (2, 4) and np.isfinite(grid.cv_results_["mean_test_score"]).all()

    est = VAEAnomalyDetector(epochs=5, alpha=0.05).fit(X_train)
    est.save(tmp_path / "est.onnx")
    loaded = VAEAnomalyDetector.load(tmp_path / "est.onnx")
    np.testing.assert_array_equal(loaded.decision_function(X_test), est.decision_function(X_test))
    np.testing.assert_array_equal(Scorer(tmp_path / "est.onnx").score_samples(X_test), -est.score_samples(X_test))
    flagged = est.predict(X_test) == -1
    np.testing.assert_array_equal(flagged, Scorer(tmp_path / "est.onnx").predict(X_test).is_anomaly)


@pytest.fixture
def work(tmp_path, model_path, cardio):
    shutil.copy(model_path, tmp_path / "model.onnx")
    np.save(tmp_path / "test.npy", cardio[1])
    np.save(tmp_path / "labels.npy", cardio[2])
    return tmp_path


def run(work, *args):
    return subprocess.run(CLI + list(args), cwd=work, capture_output=True, text=True, timeout=300)


def test_calibrate_without_labels_resets_the_conformal_threshold(work, cardio):
    normals = cardio[1][cardio[2] == 0]
    np.save(work / "val.npy", normals[:400])
    before = Scorer(work / "model.onnx")
    r = run(work, "calibrate", "model.onnx", "val.npy", "--alpha", "0.02")
    assert r.returncode == 0, r.stderr
    after = Scorer(work / "model.onnx")
    assert after.alpha == 0.02 and after.metadata["n_calibration"] == 400
    np.testing.assert_array_equal(after.score_samples(normals), before.score_samples(normals))  # same graph
    far = after.predict(normals[400:]).is_anomaly.mean()
    assert far <= 0.02 + 3 * np.sqrt(0.02 / len(normals[400:])) + 1 / 401


def test_calibrate_with_labels_for_f1_reports_the_achieved_metrics(work):
    r = run(work, "calibrate", "model.onnx", "test.npy", "--labels", "labels.npy", "--target", "f1")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {"precision", "recall", "f1", "false_alarm_rate", "threshold"} <= set(report)
    scorer = Scorer(work / "model.onnx")
    assert scorer.metadata["auto_threshold"]["rule"] == "f1"
    res = scorer.predict(np.load(work / "test.npy"))
    y = np.load(work / "labels.npy")
    assert res.is_anomaly[y == 1].mean() == pytest.approx(report["recall"])
    r = run(work, "calibrate", "model.onnx", "test.npy", "--target", "recall")
    assert r.returncode == 3 and "needs --labels" in r.stderr


def test_score_monitoring_outputs(work):
    r = run(work, "score", "test.npy", "--features", "3", "--summary-json", "summary.json", "-o", "out.csv",
            "--fail-on-anomaly")
    summary = json.loads((work / "summary.json").read_text())
    assert r.returncode == (6 if summary["n_anomalies"] else 0), r.stderr
    lines = (work / "out.csv").read_text().splitlines()
    assert lines[0] == "row,score,p_value,is_anomaly,top_features"
    assert all(len(line.split(",")[4].split(";")) == 3 for line in lines[1:])
    assert summary["n_rows"] == len(lines) - 1
    assert summary["n_anomalies"] == sum(line.split(",")[3] == "1" for line in lines[1:])
    assert len(summary["drift"]["mean_shift_in_train_std"]) == 21 and summary["model_id"]
    shifted = np.load(work / "test.npy") + 3 * np.asarray(Scorer(work / "model.onnx").metadata["feature_std"])
    np.save(work / "shifted.npy", shifted)
    run(work, "score", "shifted.npy", "--summary-json", "s2.json", "-o", "o2.csv")
    drift = json.loads((work / "s2.json").read_text())["drift"]["mean_shift_in_train_std"]
    np.testing.assert_allclose(np.array(drift) - np.array(summary["drift"]["mean_shift_in_train_std"]), 3, atol=1e-3)


def test_score_fdr_flags_a_subset_controlled_by_q(work):
    out = {q: run(work, "score", "test.npy", "--fdr", str(q)).stdout.splitlines()[1:] for q in ("0.05", "0.3")}
    flags = {q: np.array([line.split(",")[3] == "1" for line in v]) for q, v in out.items()}
    assert flags["0.3"].sum() >= flags["0.05"].sum()
    assert not (flags["0.05"] & ~flags["0.3"]).any()  # BH rejections are nested in q


@pytest.mark.parametrize("suffix", ["png", "html"])
def test_report(work, suffix):
    pytest.importorskip("matplotlib")
    r = run(work, "report", "test.npy", "--labels", "labels.npy", "-o", f"report.{suffix}")
    assert r.returncode == 0, r.stderr
    data = (work / f"report.{suffix}").read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"data:image/png;base64," in data
