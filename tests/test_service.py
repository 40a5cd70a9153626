"""The HTTP service, started for real on a loopback port in a subprocess."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, path, body=None, content_type="application/json", method=None):
    """(status, parsed JSON or text) of one request; never raises on 4xx/5xx."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"content-type": content_type} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _serve(model, folder):
    """(base URL, served model path, process) of `vae-anomaly serve` of a copy of ``model`` on a free port."""
    served = folder / "model.onnx"
    shutil.copy(model, served)
    port = _free_port()
    proc = subprocess.Popen(CLI + ["serve", "-m", str(served), "--port", str(port), "--max-rows", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if request(base, "/healthz")[0] == 200:
                break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    return base, served, proc


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """(base URL, served model path) of `vae-anomaly serve` on a free loopback port."""
    base, served, proc = _serve(model_path, tmp_path_factory.mktemp("serve"))
    yield base, served
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def table_server(tmp_path_factory, mixed_frame):
    """(base URL, served model path, its training frame) of a model fitted on a table with an ID column
    (host), numeric (a, b) and categorical (proto, flag) columns: a tiny fit, served on its own port."""
    pytest.importorskip("torch")
    from vae_anomaly.deploy import schema, tables
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    d = tmp_path_factory.mktemp("table_serve")
    df = mixed_frame(240, 0)
    table = tables.as_table(df)
    spec = schema.build_schema(table, schema.infer_roles(table.schema, id_columns=["host"]))
    result = train(schema.encode(table, spec), categories=schema.categories(spec),
                   config=TrainConfig(epochs=3, hidden=(16, 16), seed=0, device="cpu"))
    export_model(result, d / "fitted.onnx", alpha=0.05, table=spec)
    base, served, proc = _serve(d / "fitted.onnx", d)
    yield base, served, df
    proc.terminate()
    proc.wait(timeout=30)


def cli_scores(tmp_path, model, X):
    np.save(tmp_path / "rows.npy", X)
    out = subprocess.run(CLI + ["score", "rows.npy", "-m", str(model)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return np.array([line.split(",") for line in out.stdout.strip().splitlines()[1:]], dtype=float)


def test_scores_equal_the_cli_for_json_csv_and_npy_bodies(server, cardio, tmp_path):
    import io

    base, model = server
    X = cardio[1][:60]
    ref = cli_scores(tmp_path, model, X)
    status, js = request(base, "/score", {"rows": X.tolist()})
    assert status == 200, js
    header = ",".join(f"f{j}" for j in range(X.shape[1]))
    csv_body = "\n".join([header] + [",".join(map(repr, row)) for row in X.tolist()]).encode()
    buf = io.BytesIO()
    np.save(buf, X)
    for name, (st, out) in {"json": (status, js), "csv": request(base, "/score", csv_body, "text/csv"),
                            "npy": request(base, "/score", buf.getvalue(), "application/x-npy")}.items():
        assert st == 200, (name, out)
        np.testing.assert_array_equal(np.float32(out["scores"]), np.float32(ref[:, 1]), err_msg=name)
        np.testing.assert_allclose(out["p_values"], ref[:, 2], rtol=1e-8, err_msg=name)
        np.testing.assert_array_equal(np.array(out["is_anomaly"], dtype=float), ref[:, 3], err_msg=name)


@pytest.mark.parametrize("body, content_type, status, fragment", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    ({"values": [[1]]}, "application/json", 400, "expected a JSON object"),
    ({"rows": [["a"] * 21]}, "application/json", 400, "lists of numbers"),
    (b"a,b\n1,2\n3,4,5\n", "text/csv", 400, "has 3 cells; expected 2"),
    (",".join(f"f{j}" for j in range(21)).encode() + b"\n" + b"0," * 20 + b"0\n" + b"1,x" + b",0" * 19 + b"\n",
     "text/csv", 422, "column 'f1', data row 1, holds 'x'; expected a number"),
    ({"records": [{f"f{j}": 0.0 for j in range(21)}, {"f0": "text"}]}, "application/json", 422,
     "request records: column 'f0', data row 1, holds \"text\"; expected a number"),
    ({"rows": [[0.0] * 21], "records": []}, "application/json", 400, "one of the two"),
    ({"records": [[0.0] * 21]}, "application/json", 400, "records must be JSON objects"),
    ({"rows": [[0.0] * 21], "features": -1}, "application/json", 400, "features: got '-1'"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "not a valid .npy"),
    ({"rows": [[0.0] * 21] * 501}, "application/json", 413, "the limit is 500"),
    (b"<xml/>", "application/xml", 415, "content type"),
    ({"rows": [[0.0] * 5]}, "application/json", 422, "X has 5 features, but the model expects 21"),
    (b'{"rows": [[NaN' + b", 0" * 20 + b"]]}", "application/json", 422, "NaN"),
    ({"rows": [[0.0] * 21], "alpha": 3}, "application/json", 422, "alpha"),
])
def test_bad_requests_get_their_status_and_the_cli_wording(server, body, content_type, status, fragment):
    base, _ = server
    got, out = request(base, "/score", body, content_type)
    assert got == status and fragment in out["error"], out
    assert request(base, "/healthz")[0] == 200  # the server survives


def test_metrics_count_what_was_served(server, cardio):
    base, _ = server

    def value(text, name):
        line = [ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{")]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in line)

    before = request(base, "/metrics")[1]
    status, out = request(base, "/score", {"rows": cardio[1][:7].tolist()})
    request(base, "/score", b"x", "application/xml")
    after = request(base, "/metrics")[1]
    assert value(after, "vae_anomaly_rows_scored_total") - value(before, "vae_anomaly_rows_scored_total") == 7
    assert value(after, "vae_anomaly_anomalies_flagged_total") - value(before, "vae_anomaly_anomalies_flagged_total") \
        == sum(out["is_anomaly"])
    assert value(after, 'vae_anomaly_errors_total{kind="unsupported_media_type"}') >= 1
    assert "vae_anomaly_request_latency_seconds_bucket" in after


def test_model_metadata_and_openapi(server):
    base, _ = server
    status, meta = request(base, "/model")
    assert status == 200 and meta["metadata"]["n_features"] == 21
    status, spec = request(base, "/openapi.json")
    assert status == 200 and "/score" in spec["paths"]
    assert request(base, "/readyz")[1]["status"] == "ready"


def test_hot_reload_picks_up_a_new_model_and_refuses_a_broken_one(server, cardio, tmp_path):
    from vae_anomaly.deploy.io import atomic_write
    from vae_anomaly.deploy.recalibration import recalibrate

    base, served = server
    rows = {"rows": cardio[1][:5].tolist()}
    old_id = request(base, "/score", rows)[1]["model_id"]
    recalibrate(served, cardio[1][cardio[2] == 0][:300], alpha=0.2)  # atomic replace by another model (new alpha)
    new = request(base, "/score", rows)[1]
    assert new["model_id"] != old_id and new["alpha"] == 0.2
    with atomic_write(served) as f:
        f.write(b"\x08\x01 this is not a model")
    still = request(base, "/score", rows)
    assert still[0] == 200 and still[1]["model_id"] == new["model_id"]
    status, out = request(base, "/reload", b"", "application/json")
    assert status == 409 and "not a valid ONNX model" in out["error"]
    assert "reload" in request(base, "/metrics")[1]


def test_records_and_csv_bodies_are_matched_by_name_and_carry_the_ids(table_server, mixed_frame):
    from vae_anomaly import Scorer
    from vae_anomaly.deploy.monitoring import top_features

    base, model, _ = table_server
    scorer = Scorer(model)
    new = mixed_frame(40, 1)
    new.loc[3, "proto"] = np.nan  # a category never seen at fit: scored, not refused
    new["proto"] = new["proto"].cat.add_categories(["gre"]).fillna("gre")
    local = scorer.predict(new, feature_terms=True)
    top = top_features(local.feature_terms, 2)
    names = scorer.feature_names
    assert names == ["a", "b", "proto", "flag"]

    # records: keys in any order, an extra key ignored, the ID column carried back
    cols = ["flag", "host", "b", "extra", "proto", "a"]
    records = new.assign(extra=1).astype({"proto": str})[cols].to_dict("records")
    status, out = request(base, "/score", {"records": records, "features": 2})
    assert status == 200, out
    np.testing.assert_array_equal(np.float32(out["scores"]), local.scores)
    np.testing.assert_array_equal(out["p_values"], local.p_values)
    assert out["is_anomaly"] == local.is_anomaly.tolist()
    assert out["ids"] == {"host": new["host"].tolist()}
    assert out["top_features"] == [[names[j] for j in row] for row in top.tolist()]
    assert out["scores"][3] > np.median(out["scores"])  # the unseen category

    # a CSV body with a header row, columns in another order: the same answer
    csv_body = new.assign(extra="x")[["extra", "proto", "b", "host", "flag", "a"]].to_csv(index=False).encode()
    status, from_csv = request(base, "/score?features=2", csv_body, "text/csv")
    assert status == 200, from_csv
    assert from_csv["scores"] == out["scores"] and from_csv["ids"] == out["ids"]
    assert from_csv["top_features"] == out["top_features"]

    # without the ID column: scored, no ids
    status, bare = request(base, "/score", {"records": [{k: v for k, v in r.items() if k != "host"} for r in records]})
    assert status == 200 and "ids" not in bare and "top_features" not in bare and bare["scores"] == out["scores"]
    status, empty = request(base, "/score", {"records": []})
    assert status == 200 and empty["scores"] == []


@pytest.mark.parametrize("edit, fragment", [
    (lambda r: r.pop("b"), "request records: no column 'b'; the model was fitted on 'a', 'b', 'proto', 'flag'"),
    (lambda r: r.update(a="high"), "request records: column 'a', data row 1, holds \"high\"; expected a number"),
    (lambda r: r.update(a=None), "request records: column 'a', data row 1, is empty (a missing value)"),
    (lambda r: r.update(proto=["tcp"]), "request records: column 'proto', data row 1, holds a list"),
])
def test_a_bad_record_is_refused_with_one_line(table_server, edit, fragment):
    base, _, df = table_server
    records = df.astype({"proto": str}).head(3).to_dict("records")
    if "no column" in fragment:
        for r in records:
            edit(r)
    else:
        edit(records[1])
    status, out = request(base, "/score", {"records": records})
    assert status == 422 and out["kind"] == "invalid_rows" and fragment in out["error"], out
    assert "\n" not in out["error"]


@pytest.fixture(scope="module")
def series_server(tmp_path_factory):
    """(base URL, served model path, a series to score) of a window model (W = 8, a host ID column)."""
    pytest.importorskip("torch")
    import pandas as pd

    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import fit_file

    d = tmp_path_factory.mktemp("series_serve")
    rng = np.random.default_rng(0)
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(400) * 5, unit="min")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "host": "web-1",
                          "value": np.sin(np.arange(400) / 8) + 0.05 * rng.standard_normal(400)})
    frame.iloc[:300].to_csv(d / "train.csv", index=False)
    new = frame.iloc[300:].drop(index=[320, 321]).reset_index(drop=True)   # a gap of two steps
    new.loc[50, "value"] += 3.0
    fit_file(d / "train.csv", d / "fitted.onnx", window=8, id_columns="host",
             config=TrainConfig(epochs=5, hidden=(16, 16), seed=0, prior_max_rows=0))
    base, served, proc = _serve(d / "fitted.onnx", d)
    yield base, served, new
    proc.terminate()
    proc.wait(timeout=30)


def test_a_window_model_scores_records_and_csv_as_a_series_like_score_file(series_server, tmp_path):
    from vae_anomaly.deploy.batch import score_file

    base, model, new = series_server
    new.to_csv(tmp_path / "new.csv", index=False)
    local = score_file(tmp_path / "new.csv", model, tmp_path / "out.csv")
    records = new[["value", "timestamp", "host"]].to_dict("records")
    status, out = request(base, "/score", {"records": records, "features": 1})
    assert status == 200, out
    np.testing.assert_array_equal(np.float32(out["scores"]), local.scores)
    assert out["is_anomaly"] == local.is_anomaly.tolist()
    assert out["ids"] == {"timestamp": new["timestamp"].tolist(), "host": new["host"].tolist()}
    assert all(len(t) == 1 and t[0].startswith("value@t-") for t in out["top_features"])
    status, from_csv = request(base, "/score", new.to_csv(index=False).encode(), "text/csv")
    assert status == 200 and from_csv["scores"] == out["scores"] and from_csv["ids"] == out["ids"], from_csv

    repeated = [*records[:10], records[9], *records[10:]]              # an hour logged twice
    status, refused = request(base, "/score", {"records": repeated})
    assert status == 422 and "data row 10, repeats the previous timestamp" in refused["error"]
    status, as_read = request(base, "/score", {"records": repeated, "time_order": "as-read"})
    assert status == 200 and len(as_read["scores"]) == len(repeated)
    status, bad = request(base, "/score", {"records": records, "time_order": "sorted"})
    assert status == 400 and "time_order" in bad["error"]
