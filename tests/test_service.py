"""The HTTP service, started for real on a loopback port in a subprocess."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]
TOKEN = "test-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exchange(base, path, body=None, content_type="application/json", token=None):
    """(status, parsed JSON or text, headers) of one request (with ``Authorization: Bearer token``
    if given); never raises on 4xx/5xx."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"content-type": content_type} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text, got = r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        status, text, got = e.code, e.read().decode(), e.headers
    try:
        return status, json.loads(text), got
    except json.JSONDecodeError:
        return status, text, got


def request(base, path, body=None, content_type="application/json", token=None):
    """(status, parsed JSON or text) of one request; never raises on 4xx/5xx."""
    return exchange(base, path, body, content_type, token)[:2]


def _serve(model, folder, *options):
    """(base URL, served model path, process) of `vae-anomaly serve` of a copy of ``model`` on a free
    port, with ``options`` added."""
    served = folder / "model.onnx"
    shutil.copy(model, served)
    port = _free_port()
    proc = subprocess.Popen(CLI + ["serve", "-m", str(served), "--port", str(port), "--max-rows", "500", *options],
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
def guarded_server(model_path, tmp_path_factory):
    """Base URL of `vae-anomaly serve --token-file` (the token: TOKEN) with a 1 MiB body limit."""
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "token.txt").write_text(TOKEN + "\n")
    base, _, proc = _serve(model_path, folder, "--token-file", str(folder / "token.txt"), "--max-body-mb", "1")
    yield base
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


def test_model_answers_what_a_client_needs_and_the_rest_only_on_request(server, table_server):
    from pathlib import Path

    base, served = server
    status, meta = request(base, "/model")
    assert status == 200 and meta["n_features"] == 21 and meta["columns"] is None, meta
    assert {"model_id", "library_version", "default_score", "alpha", "thresholds", "n_calibration"} <= set(meta)
    assert {"path", "metadata", "calibration", "feature_mean", "training"}.isdisjoint(meta)
    status, full = request(base, "/model?detail=true")
    assert status == 200 and Path(full["path"]).resolve() == served.resolve()
    assert full["metadata"]["n_features"] == 21 and "calibration" in full["metadata"]
    status, bad = request(base, "/model?detail=maybe")
    assert status == 400 and bad["kind"] == "malformed" and "detail" in bad["error"], bad

    base, _, df = table_server
    meta = request(base, "/model")[1]
    assert meta["columns"] == [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
                               {"name": "proto", "kind": "categorical"}, {"name": "flag", "kind": "categorical"}]
    assert meta["id_columns"] == ["host"]
    text = json.dumps(meta)
    assert not [c for c in df["proto"].astype(str).unique() if f'"{c}"' in text]  # no training category

    status, spec = request(base, "/openapi.json")
    assert status == 200 and "/score" in spec["paths"]
    assert request(base, "/readyz")[1]["status"] == "ready"


def test_a_token_guards_every_route_but_healthz(guarded_server, cardio):
    base = guarded_server
    for path, body in [("/score", {"rows": cardio[1][:3].tolist()}), ("/reload", b""), ("/readyz", None),
                       ("/model?detail=true", None), ("/metrics", None)]:
        for token, challenge in [(None, "Bearer"), (TOKEN[:-1] + "x", 'Bearer error="invalid_token"')]:
            status, out, headers = exchange(base, path, body, token=token)
            assert status == 401 and out["kind"] == "unauthorized" and "\n" not in out["error"], (path, out)
            assert headers["WWW-Authenticate"] == challenge, path
        status, out, _ = exchange(base, path, body, token=TOKEN)
        assert status == 200, (path, out)
    assert request(base, "/healthz") == (200, {"status": "ok"})
    metrics = request(base, "/metrics", token=TOKEN)[1]
    assert 'vae_anomaly_errors_total{kind="unauthorized"}' in metrics


@pytest.mark.parametrize("options, env, code, fragment", [
    (["--host", "0.0.0.0"], {}, 3, "--host 0.0.0.0: beyond loopback without a token"),
    (["--host", "0.0.0.0", "--no-token"], {}, 4, "missing.onnx"),  # let through, to the model's own refusal
    (["--host", "0.0.0.0", "--token-file", "token.txt"], {}, 4, "missing.onnx"),
    (["--token-file", "token.txt", "--no-token"], {}, 3, "--no-token: a token is given too (--token-file)"),
    (["--token-file", "empty.txt"], {}, 3, "--token-file empty.txt: empty; expected 16 or more"),
    (["--token-file", "absent.txt"], {}, 3, "--token-file absent.txt: cannot be read"),
    ([], {"VAE_ANOMALY_TOKEN": "short"}, 3, "VAE_ANOMALY_TOKEN: not a usable token"),
])
def test_serve_refuses_an_open_port_beyond_loopback_and_bad_tokens(tmp_path, options, env, code, fragment):
    """Each refusal is one line and an exit code before any port is bound (the model does not even
    exist: a start that got past the token checks stops at the model, exit 4)."""
    (tmp_path / "token.txt").write_text(TOKEN)
    (tmp_path / "empty.txt").write_text("\n")
    environ = {k: v for k, v in os.environ.items() if k != "VAE_ANOMALY_TOKEN"} | env
    r = subprocess.run(CLI + ["serve", "-m", "missing.onnx", "--port", str(_free_port()), *options], cwd=tmp_path,
                       env=environ, capture_output=True, text=True, timeout=120)
    assert r.returncode == code and fragment in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_body_over_the_limit_is_refused_while_it_is_read(guarded_server):
    """--max-body-mb 1: a chunked body (no Content-Length) is answered 413 once 1 MiB + 1 byte has
    arrived, though it has not ended (so the server neither waits for nor holds the rest); a declared
    Content-Length over the limit is answered 413 before any of the body is sent."""
    url = urllib.parse.urlsplit(guarded_server)
    limit = 1 << 20
    head = (f"POST /score HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\n").encode()

    def answer(data: bytes):
        with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
            sock.sendall(data)
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, json.loads(response.read())

    part = b" " * (1 << 16)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for _ in range(limit // len(part)))
    status, out = answer(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"1\r\n ")  # never ends
    assert status == 413 and out["kind"] == "too_large" and f"the limit is {limit}" in out["error"], out
    status, out = answer(head + f"Content-Length: {limit + 1}\r\n\r\n".encode())
    assert status == 413 and f"{limit + 1} bytes; the limit is {limit}" in out["error"], out
    assert request(guarded_server, "/healthz")[0] == 200


def test_any_json_body_gets_its_scores_or_a_4xx_never_a_500(server, table_server):
    base, _ = server
    status, out = request(base, "/score", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "JSON nested too deeply to read" in out["error"], out
    status, out = request(base, "/score", b'{"rows": [[' + b"1" * 5000 + b"]]}")
    assert status == 400 and "a number too long to read" in out["error"] and "\n" not in out["error"], out
    # a 400-digit integer is the number it is: beyond float64 as 1e400 is, and refused as it is (422)
    rest = b", 0" * 20 + b"]]"
    wide = request(base, "/score", b'{"rows": [[' + b"1" * 400 + rest + b"}")
    assert wide[0] == 422 and wide == request(base, "/score", b'{"rows": [[1e400' + rest + b"}")
    status, out = request(base, "/score", {"rows": [[0.0] * 21], "alpha": 10 ** 400})
    assert status == 422 and "alpha: got inf" in out["error"], out
    assert request(base, "/score", {"rows": [[0.0] * 21], "threshold": 10 ** 400})[0] == 200

    base, _, df = table_server
    record = df.astype({"proto": str, "flag": str}).head(1).to_dict("records")[0]

    def score(**changes):
        return request(base, "/score", {"records": [{**record, **changes}]})

    assert score(a=2 ** 62 + 1)[0] == 200 and score(a=2 ** 62 + 1) == score(a=float(2 ** 62 + 1))
    assert score(a=10 ** 400)[0] == 422 and score(a=10 ** 400) == score(a=float("inf"))
    assert score(proto=2 ** 70)[0] == 200 and score(proto=2 ** 70) == score(proto=str(2 ** 70))
    status, out = score(host=2 ** 70)
    assert status == 200 and out["ids"] == {"host": [2 ** 70]}, out


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
    """(base URL, served model path, a series to score) of a window model (W = 8, a host ID column,
    conditioned on the time of day: 300 ten-minute steps span 2 days)."""
    pytest.importorskip("torch")
    import pandas as pd

    from vae_anomaly.training.config import TrainConfig
    from vae_anomaly.training.fit import fit_file

    d = tmp_path_factory.mktemp("series_serve")
    rng = np.random.default_rng(0)
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(400) * 10, unit="min")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "host": "web-1",
                          "value": np.sin(np.arange(400) / 8) + 0.05 * rng.standard_normal(400)})
    frame.iloc[:300].to_csv(d / "train.csv", index=False)
    new = frame.iloc[300:].drop(index=[320, 321]).reset_index(drop=True)   # a gap of two steps
    new.loc[50, "value"] += 3.0
    fit_file(d / "train.csv", d / "fitted.onnx", window=8, id_columns="host", seasons="auto",
             config=TrainConfig(epochs=5, hidden=(16, 16), seed=0, prior_max_rows=0))
    base, served, proc = _serve(d / "fitted.onnx", d)
    yield base, served, new
    proc.terminate()
    proc.wait(timeout=30)


def test_a_window_model_scores_records_and_csv_as_a_series_like_score_file(series_server, tmp_path):
    from vae_anomaly import Scorer
    from vae_anomaly.deploy.batch import score_file

    base, model, new = series_server
    new.to_csv(tmp_path / "new.csv", index=False)
    local = score_file(tmp_path / "new.csv", model, tmp_path / "out.csv")
    records = new[["value", "timestamp", "host"]].to_dict("records")
    status, out = request(base, "/score", {"records": records, "features": 1})
    assert status == 200, out
    np.testing.assert_array_equal(np.float32(out["scores"]), local.scores)
    assert out["is_anomaly"] == local.is_anomaly.tolist()
    # the warm-up rows (no W − 1 steps before them) have no p-value: null, as in the CLI's JSONL
    assert [p is None for p in out["p_values"]] == np.isnan(local.p_values).tolist()
    assert np.isnan(local.p_values).sum() == Scorer(model).series["window"] - 1
    np.testing.assert_array_equal([p for p in out["p_values"] if p is not None], local.p_values[~np.isnan(local.p_values)])
    assert out["ids"] == {"timestamp": new["timestamp"].tolist(), "host": new["host"].tolist()}
    assert all(t in ([], [{"metric": "value", "share": 1.0}]) for t in out["top_metrics"]) and "top_features" not in out
    status, from_csv = request(base, "/score", new.to_csv(index=False).encode(), "text/csv")
    assert status == 200 and from_csv["scores"] == out["scores"] and from_csv["ids"] == out["ids"], from_csv
    assert Scorer(model).series["season"] == ["day"]  # the condition comes from the time column, not the client
    summary = request(base, "/model")[1]
    assert summary["series"]["season"] == ["day"] and summary["condition"] is None, summary
    status, refused = request(base, "/score", {"records": records, "condition": [[0.0, 1.0]] * len(records)})
    assert status == 422 and "takes no condition" in refused["error"], refused

    repeated = [*records[:10], records[9], *records[10:]]              # an hour logged twice
    status, refused = request(base, "/score", {"records": repeated})
    assert status == 422 and "data row 10, repeats the previous timestamp" in refused["error"]
    status, as_read = request(base, "/score", {"records": repeated, "time_order": "as-read"})
    assert status == 200 and len(as_read["scores"]) == len(repeated)
    status, bad = request(base, "/score", {"records": records, "time_order": "sorted"})
    assert status == 400 and "time_order" in bad["error"]


def test_a_row_the_graph_cannot_score_is_null_p_0_and_flagged_never_500(server, cardio):
    base, _ = server
    X = cardio[1][:4].tolist()
    X[2][3] = 1e30                       # finite, but it overflows the graph's float32 arithmetic
    status, out = request(base, "/score", {"rows": X})
    assert status == 200, out
    assert out["scores"][2] is None and out["p_values"][2] == 0.0 and out["is_anomaly"][2]
    assert all(s is not None for i, s in enumerate(out["scores"]) if i != 2)
    status, out = request(base, "/score", json.dumps({"rows": X, "threshold": float("nan")}).encode())
    assert status in (400, 422) and "NaN" in out["error"], out  # a NaN threshold would flag nothing


def test_a_series_body_with_a_mistyped_year_or_zoned_times_scores_like_the_file(series_server):
    base, _, new = series_server
    records = new[["value", "timestamp", "host"]].iloc[:12].to_dict("records")
    status, plain = request(base, "/score", {"records": records})
    zoned = [{**r, "timestamp": r["timestamp"].replace(" ", "T") + "+00:00"} for r in records]
    status_z, out_z = request(base, "/score", {"records": zoned})
    assert status == status_z == 200 and out_z["scores"] == plain["scores"], out_z
    typo = [dict(records[0]), {**records[1], "timestamp": "2082" + records[1]["timestamp"][4:]}]  # 56 years on
    status, out = request(base, "/score", {"records": typo})  # W - 1 missing steps inserted, not 5.9 million
    assert status == 200 and len(out["scores"]) == 2, out
