"""scikit-learn estimator, recalibration, FDR control, monitoring outputs and reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def estimator_checks(part: int, parts: int) -> list[str]:
    """Run every ``parts``-th of scikit-learn's estimator checks on VAEAnomalyDetector, from the
    ``part``-th, as ``check_estimator`` runs them (a check in EXPECTED_FAILED_CHECKS may fail, one
    that raises SkipTest is skipped); return the unexpected failures with their tracebacks."""
    import traceback
    from unittest import SkipTest

    from sklearn.utils.estimator_checks import estimator_checks_generator

    from vae_anomaly.integrations.estimator import (
        EXPECTED_FAILED_CHECKS,
        VAEAnomalyDetector,
    )

    checks = estimator_checks_generator(VAEAnomalyDetector(epochs=2, hidden=(32, 32), device="cpu"),
                                        expected_failed_checks=EXPECTED_FAILED_CHECKS, mark=None)
    failures = []
    for i, (estimator, check) in enumerate(checks):
        if i % parts != part:
            continue
        name = getattr(check, "func", check).__name__
        try:
            check(estimator)
        except SkipTest:
            pass
        except Exception:  # noqa: BLE001 -- any failure counts, as in check_estimator
            if name not in EXPECTED_FAILED_CHECKS:
                failures.append(f"{name}: {traceback.format_exc()}")
    return failures


@pytest.mark.slow
def test_estimator_passes_scikit_learns_checks(tmp_path):
    """All of check_estimator's checks (about 40 fits), half of them in a second process at the same
    time: each fit is single-threaded Python (training and ONNX export), so two cores halve the wait."""
    from vae_anomaly.integrations.estimator import EXPECTED_FAILED_CHECKS

    assert len(EXPECTED_FAILED_CHECKS) <= 3 and all(EXPECTED_FAILED_CHECKS.values())
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from test_ecosystem import estimator_checks; "
            "open(sys.argv[2], 'w').write(json.dumps(estimator_checks(1, 2)))")
    with open(tmp_path / "other.log", "w+") as log:  # a file, not a pipe: its warnings never block it
        other = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "other.json")],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            failures = estimator_checks(0, 2)
        finally:
            other.wait(timeout=1200)
        log.seek(0)
        assert other.returncode == 0, log.read()[-4000:]
    failures += json.loads((tmp_path / "other.json").read_text())
    assert not failures, "\n\n".join(failures)


def test_estimator_in_pipeline_and_saved_as_onnx(tmp_path, cardio):
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    X_train, X_test, y_test = cardio
    pipe = make_pipeline(StandardScaler(), VAEAnomalyDetector(epochs=5, alpha=0.05)).fit(X_train)
    assert set(np.unique(pipe.predict(X_test))) <= {-1, 1}
    assert roc_auc_score(y_test, -pipe.decision_function(X_test)) > 0.6

    # the pipeline's fitted detector, on the rows it sees there (standardized), saved and reloaded
    est, X_test = pipe[-1], pipe[:-1].transform(X_test)
    est.save(tmp_path / "est.onnx")
    loaded = VAEAnomalyDetector.load(tmp_path / "est.onnx")
    np.testing.assert_array_equal(loaded.decision_function(X_test), est.decision_function(X_test))
    np.testing.assert_array_equal(Scorer(tmp_path / "est.onnx").score_samples(X_test), -est.score_samples(X_test))
    flagged = est.predict(X_test) == -1
    np.testing.assert_array_equal(flagged, Scorer(tmp_path / "est.onnx").predict(X_test).is_anomaly)


def test_estimator_fits_a_dataframe_with_categories_in_a_pipeline(tmp_path, mixed_frame):
    import pandas as pd
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    df = mixed_frame(240, 0)
    drop_ids = FunctionTransformer(lambda frame: frame.drop(columns="host"))  # a column-selection step
    pipe = make_pipeline(drop_ids, VAEAnomalyDetector(epochs=3, hidden=(16, 16), alpha=0.05)).fit(df)
    det = pipe[-1]
    assert det.n_features_in_ == 4 and det.feature_names_in_.tolist() == ["a", "b", "proto", "flag"]
    spec = det._scorer.table
    assert [(f["name"], f["kind"]) for f in spec["features"]] == [("a", "numeric"), ("b", "numeric"),
                                                                 ("proto", "categorical"), ("flag", "categorical")]
    assert spec["features"][2]["categories"] == ["icmp", "tcp", "udp"]

    new = mixed_frame(50, 1)
    reordered = new[["flag", "b", "host", "proto", "a"]]
    scores = pipe.score_samples(new)
    np.testing.assert_array_equal(pipe.score_samples(reordered), scores)  # matched by name
    np.testing.assert_array_equal(pipe.decision_function(reordered), scores - det.offset_)
    assert set(pipe.predict(reordered)) <= {-1, 1}
    # text where proto's categories were: an unseen category scores as more abnormal, not an error
    odd = new.assign(proto=pd.Categorical(["gre"] * len(new)))
    assert np.median(pipe.score_samples(odd)) < np.median(scores)
    # an array of the columns in the order of fit is taken by position, with scikit-learn's warning
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(det.score_samples(new.drop(columns="host").to_numpy()), scores)
    with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing:\n- b"):
        det.score_samples(new.drop(columns=["host", "b"]))

    # the saved model file stores the table: the Scorer, the CLI and a reloaded estimator match by name
    det.save(tmp_path / "mixed.onnx")
    np.testing.assert_array_equal(-Scorer(tmp_path / "mixed.onnx").score_samples(reordered), scores)
    loaded = VAEAnomalyDetector.load(tmp_path / "mixed.onnx")
    assert loaded.feature_names_in_.tolist() == ["a", "b", "proto", "flag"]
    np.testing.assert_array_equal(loaded.score_samples(reordered.drop(columns="host")), scores)


def test_dask_scores_a_mixed_dataframe_by_name_with_its_ids(tmp_path, mixed_frame):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    from vae_anomaly.deploy import schema, tables
    from vae_anomaly.integrations.dask import score_dataframe
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    table = tables.as_table(mixed_frame(240, 0))
    spec = schema.build_schema(table, schema.infer_roles(table.schema, id_columns=["host"]))
    result = train(schema.encode(table, spec), categories=schema.categories(spec),
                   config=TrainConfig(epochs=3, hidden=(16, 16), seed=0, device="cpu"))
    export_model(result, tmp_path / "mixed.onnx", alpha=0.05, table=spec)

    new = mixed_frame(90, 1).astype({"flag": "category"})[["flag", "b", "host", "proto", "a"]]
    new["note"] = "ignored"  # a column the model does not use
    local = Scorer(tmp_path / "mixed.onnx").predict(new)
    ddf = dd.from_pandas(new, npartitions=4)
    with dask.config.set(scheduler="synchronous"):
        out = score_dataframe(ddf, tmp_path / "mixed.onnx").compute()
        empty = score_dataframe(ddf[ddf["a"] > 1e9], tmp_path / "mixed.onnx").compute()
    assert list(out.columns) == ["host", "score", "p_value", "is_anomaly"]
    assert out["host"].tolist() == new["host"].tolist() and out.index.equals(new.index)
    np.testing.assert_array_equal(out["score"].to_numpy(), local.scores)
    np.testing.assert_array_equal(out["p_value"].to_numpy(), local.p_values)
    np.testing.assert_array_equal(out["is_anomaly"].to_numpy(), local.is_anomaly)
    assert len(empty) == 0 and list(empty.columns) == ["host", "score", "p_value", "is_anomaly"]
    with dask.config.set(scheduler="synchronous"), pytest.raises(ValueError, match="no column 'proto'"):
        score_dataframe(ddf.drop(columns="proto"), tmp_path / "mixed.onnx").compute()


@pytest.mark.slow
def test_estimator_in_grid_search(cardio):
    """Five fits: two parameter values on two folds, and the refit of the best."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    X_train, X_test, y_test = cardio
    X = np.vstack([X_train[:300], X_test[y_test == 1][:60]])
    inlier = np.r_[np.ones(300, int), np.zeros(60, int)]  # decision_function: higher = inlier
    folds = StratifiedKFold(2, shuffle=True, random_state=0)
    grid = GridSearchCV(VAEAnomalyDetector(epochs=3), {"latent_dim": [2, 4], "hidden": [(32, 32)]}, cv=folds,
                        scoring="roc_auc").fit(X, inlier)
    assert grid.best_params_["latent_dim"] in (2, 4) and np.isfinite(grid.cv_results_["mean_test_score"]).all()


def _fill(d, model_path, cardio):
    shutil.copy(model_path, d / "model.onnx")
    np.save(d / "test.npy", cardio[1])
    np.save(d / "labels.npy", cardio[2])
    return d


@pytest.fixture
def work(tmp_path, model_path, cardio):
    return _fill(tmp_path, model_path, cardio)


def run(work, *args):
    return subprocess.run(CLI + list(args), cwd=work, capture_output=True, text=True, timeout=300)


def run_all(work, *commands):
    """``run`` of each command, two at a time (independent runs, each keeps one core busy)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: run(work, *args), commands))


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
    shifted = np.load(work / "test.npy") + 3 * np.asarray(Scorer(work / "model.onnx").metadata["feature_std"])
    np.save(work / "shifted.npy", shifted)
    r, _ = run_all(work, ("score", "test.npy", "--features", "3", "--summary-json", "summary.json", "-o", "out.csv",
                          "--fail-on-anomaly"),
                   ("score", "shifted.npy", "--summary-json", "s2.json", "-o", "o2.csv"))
    summary = json.loads((work / "summary.json").read_text())
    assert r.returncode == (6 if summary["n_anomalies"] else 0), r.stderr
    lines = (work / "out.csv").read_text().splitlines()
    assert lines[0] == "row,score,p_value,is_anomaly,top_features"
    assert all(len(line.split(",")[4].split(";")) == 3 for line in lines[1:])
    assert summary["n_rows"] == len(lines) - 1
    assert summary["n_anomalies"] == sum(line.split(",")[3] == "1" for line in lines[1:])
    assert len(summary["drift"]["mean_shift_in_train_std"]) == 21 and summary["model_id"]
    drift = json.loads((work / "s2.json").read_text())["drift"]["mean_shift_in_train_std"]
    np.testing.assert_allclose(np.array(drift) - np.array(summary["drift"]["mean_shift_in_train_std"]), 3, atol=1e-3)


def test_score_fdr_flags_a_subset_controlled_by_q(work):
    qs = ("0.05", "0.3")
    runs = run_all(work, *(("score", "test.npy", "--fdr", q) for q in qs))
    out = {q: r.stdout.splitlines()[1:] for q, r in zip(qs, runs)}
    flags = {q: np.array([line.split(",")[3] == "1" for line in v]) for q, v in out.items()}
    assert flags["0.3"].sum() >= flags["0.05"].sum()
    assert not (flags["0.05"] & ~flags["0.3"]).any()  # BH rejections are nested in q


@pytest.fixture(scope="module")
def reports(request, tmp_path_factory, model_path, cardio):
    """The reports of the selected test_report cases, written by the CLI two at a time (independent runs,
    each keeps one core busy): (folder, suffix -> result)."""
    pytest.importorskip("matplotlib")
    suffixes = [item.callspec.params["suffix"] for item in request.session.items
                if item.module is request.module and item.originalname == "test_report"]
    d = _fill(tmp_path_factory.mktemp("report"), model_path, cardio)
    results = run_all(d, *(("report", "test.npy", "--labels", "labels.npy", "-o", f"report.{s}") for s in suffixes))
    return d, dict(zip(suffixes, results))


@pytest.mark.parametrize("suffix", ["png", "html"])
def test_report(reports, suffix):
    work, results = reports
    r = results[suffix]
    assert r.returncode == 0, r.stderr
    data = (work / f"report.{suffix}").read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"data:image/png;base64," in data
