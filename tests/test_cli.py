"""The command line end to end, in subprocesses, on bundled real data (thyroid)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vae_anomaly import Scorer
from vae_anomaly.evaluation.datasets import (
    bundled_path,
    load_labelled,
    semi_supervised_split,
)

pytest.importorskip("torch")
NO_TORCH = "import sys; sys.modules['torch'] = None; from vae_anomaly.cli.main import main; sys.argv[0] = 'vae-anomaly'; main()"


def run(*args, cwd, no_torch=False):
    cmd = [sys.executable, "-c", NO_TORCH, *args] if no_torch else [sys.executable, "-m", "vae_anomaly.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def start(*args, cwd):
    """``run`` started now and waited for by ``fitted``, so that fits run side by side."""
    return subprocess.Popen([sys.executable, "-m", "vae_anomaly.cli.main", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def fits(request, tmp_path_factory):
    """A folder with thyroid's normal.npy, test.npy and labels, and this module's CLI fits started in it at
    once (each keeps one core busy): model.onnx with the defaults, and small.onnx (--hidden 32,16
    --prior-max-rows 4096) when a selected test uses it."""
    d = tmp_path_factory.mktemp("cli")
    X, y = load_labelled(bundled_path("thyroid"))
    tr, te = semi_supervised_split(y, seed=0)
    np.save(d / "normal.npy", X[tr])
    np.save(d / "test.npy", X[te])
    np.save(d / "labels.npy", y[te])
    procs = {"model.onnx": start("fit", "normal.npy", "--epochs", "12", "--quiet", cwd=d)}
    if any("small" in item.fixturenames for item in request.session.items if item.module is request.module):
        procs["small.onnx"] = start("fit", "normal.npy", "--hidden", "32,16", "--prior-max-rows", "4096", "--epochs", "2",
                                    "--quiet", "-o", "small.onnx", cwd=d)
    yield d, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def fitted(fits, name):
    """The path of the model ``name`` of ``fits`` once its fit has succeeded."""
    d, procs = fits
    _, err = procs[name].communicate(timeout=600)
    assert procs[name].returncode == 0, err
    assert (d / name).is_file()
    return d / name


@pytest.fixture(scope="module")
def work(fits):
    """The folder of ``fits`` once its model.onnx is fitted through the CLI."""
    return fitted(fits, "model.onnx").parent


@pytest.fixture(scope="module")
def small(fits):
    """The training metadata of small.onnx."""
    return Scorer(fitted(fits, "small.onnx")).metadata["training"]


def parse(text):
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "score", "p_value", "is_anomaly"]
    return np.array(rows[1:], dtype=float)


def test_fit_score_round_trip_separates_real_anomalies(work):
    from sklearn.metrics import roc_auc_score

    r = run("score", "test.npy", "--threshold", "auto", "-o", "scores.csv", cwd=work)
    assert r.returncode == 0, r.stderr
    table = parse((work / "scores.csv").read_text())
    y = np.load(work / "labels.npy")
    np.testing.assert_array_equal(table[:, 0], np.arange(len(y)))
    assert set(np.unique(table[:, 3])) <= {0.0, 1.0}
    assert np.all((table[:, 2] > 0) & (table[:, 2] <= 1))
    assert roc_auc_score(y, table[:, 1]) > 0.85  # thyroid: a model that learned nothing gives 0.5
    meta = json.loads(run("info", cwd=work).stdout)
    assert meta["n_features"] == 6 and meta["alpha"] == 0.01


def test_scoring_is_byte_identical_twice_and_in_halves_without_torch(work):
    first = run("score", "test.npy", cwd=work)
    second = run("score", "test.npy", cwd=work, no_torch=True)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    X = np.load(work / "test.npy")
    half = len(X) // 2
    np.save(work / "a.npy", X[:half])
    np.save(work / "b.npy", X[half:])
    whole = parse(first.stdout)
    parts = np.vstack([parse(run("score", f, cwd=work).stdout) for f in ("a.npy", "b.npy")])
    np.testing.assert_array_equal(parts[:, 1:], whole[:, 1:])


def test_score_path_never_imports_torch(work):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import vae_anomaly\n"
            "s = vae_anomaly.Scorer('model.onnx')\n"
            "import numpy as np; print(s.predict(np.load('test.npy')).scores.shape)")
    r = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def bad_input_runs(request, work):
    """The selected cases of the test below, set up and run through the CLI two at a time (the runs are
    independent and each keeps one core busy): tuple(args) -> result."""
    cases = [item.callspec.params for item in request.session.items if item.module is request.module
             and item.originalname == "test_bad_inputs_get_one_line_and_the_documented_exit_code"]
    for case in cases:
        if case["setup"]:
            case["setup"](work)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: run(*case["args"], cwd=work), cases))
    return {tuple(case["args"]): r for case, r in zip(cases, results)}


@pytest.mark.parametrize("setup, args, code, message", [
    (None, ["score", "missing.npy"], 3, "file not found"),
    (lambda d: np.save(d / "one_d.npy", np.zeros(6)), ["score", "one_d.npy"], 3, "1-D"),
    (lambda d: np.save(d / "nan.npy", np.full((2, 6), np.nan)), ["score", "nan.npy"], 3, "NaN"),
    (lambda d: np.save(d / "wide.npy", np.zeros((2, 8))), ["score", "wide.npy"], 3,
     "X has 8 features, but the model expects 6"),
    (lambda d: (d / "broken.onnx").write_bytes(b"\x08\x07garbage"), ["score", "test.npy", "-m", "broken.onnx"], 4,
     "not a valid ONNX model"),
    (None, ["score", "test.npy", "-m", "nope.onnx"], 4, "model file not found"),
    (None, ["score", "test.npy", "-o", "no/such/dir/out.csv"], 5, "does not exist"),
    (None, ["score", "test.npy", "--threshold", "high"], 2, "auto"),
    (None, ["fit", "normal.npy", "-o", "no/such/dir/m.onnx"], 5, "does not exist"),
    (None, ["fit", "normal.npy", "--hidden", "128,x", "-o", "h.onnx"], 3, "--hidden: got '128,x'"),
    (None, ["fit", "normal.npy", "--prior-max-rows", "-1", "-o", "p.onnx"], 3, "--prior-max-rows: got -1"),
])
def test_bad_inputs_get_one_line_and_the_documented_exit_code(work, bad_input_runs, setup, args, code, message):
    r = bad_input_runs[tuple(args)]
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    if code != 2:
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (work / "no").exists()


def test_fit_takes_the_hidden_layer_widths(small):
    assert small["architecture"]["hidden"] == [32, 16]


def test_fit_prior_max_rows_chooses_the_latent_prior_of_the_scores(work, small):
    """The default scores with N(0, I) above 256 training rows (thyroid's 1,471); --prior-max-rows
    4096 with the aggregate posterior of the (fewer) training rows."""
    default = Scorer(work / "model.onnx").metadata["training"]
    assert default["latent_prior"] == {"kind": "standard-normal"}
    assert small["latent_prior"] == {"kind": "aggregate-posterior", "components": small["n_train"]}


def test_failed_refit_leaves_the_existing_model_untouched(work):
    before = (work / "model.onnx").read_bytes()
    np.save(work / "bad_normal.npy", np.full((50, 6), np.inf))
    r = run("fit", "bad_normal.npy", "--quiet", cwd=work)
    assert r.returncode == 3 and "NaN or infinite" in r.stderr
    assert (work / "model.onnx").read_bytes() == before
