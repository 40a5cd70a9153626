"""The VAE family: convolutional VAE on images, conditional VAE, free bits, sampling, latent plots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vae_anomaly import Scorer
from vae_anomaly.errors import InputValidationError, ModelArtifactError

torch = pytest.importorskip("torch")

from vae_anomaly.training.train import TrainConfig, train  # noqa: E402

# torch made unimportable (a finder that refuses it; a None in sys.modules would trip scikit-learn's
# array-API probe, which looks torch up there)
NO_TORCH = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('torch is blocked in this test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from vae_anomaly.cli.main import main; sys.argv[0] = 'vae-anomaly'; main()")


def cli(*args, cwd, no_torch=False):
    cmd = [sys.executable, "-c", NO_TORCH, *args] if no_torch else [sys.executable, "-m", "vae_anomaly.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def digits_rows():
    """scikit-learn's 8x8 digits: train on half of the zeros; test on the other zeros + all other digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.images.astype(np.float32), d.target
    zeros = np.flatnonzero(y == 0)
    train_idx = zeros[::2]
    test_idx = np.setdiff1d(np.arange(len(y)), train_idx)
    return X[train_idx], X[test_idx], (y[test_idx] != 0).astype(int)


def context_data(rng, n, d=4, shift=2.5):
    """Rows whose normal location depends on a categorical condition (0 -> +shift, 1 -> -shift),
    and 'swapped' rows: normal for the other condition, anomalous for their own."""
    c = rng.integers(0, 2, n)
    centre = np.where(c[:, None] == 0, shift, -shift)
    normal = (rng.standard_normal((n, d)) + centre).astype(np.float32)
    swapped = (rng.standard_normal((n, d)) - centre).astype(np.float32)
    return c, normal, swapped


def numeric_context_rows(rng, n):
    """(context, rows): rows whose normal location moves with a numeric context in [-1, 1]."""
    ctx = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    return ctx, (rng.standard_normal((n, 3)) * 0.5 + 3 * ctx).astype(np.float32)


def _context_training(conditional):
    c, X, _ = context_data(np.random.default_rng(0), 1500)
    return {"X": X, "condition": c} if conditional else {"X": X}


_CPU = {"seed": 0, "device": "cpu"}
#: the models this module's tests score, trained and exported beside the tests (conftest.py, Prebuilt)
PREBUILT = {
    "digits-conv": {"data": lambda: {"X": digits_rows()[0]}, "config": {"epochs": 60, **_CPU},
                    "export": {"alpha": 0.1}, "used_by": ["conv_model"]},
    "digits-mlp": {"data": lambda: {"X": digits_rows()[0]}, "config": {"epochs": 5, "arch": "mlp", **_CPU},
                   "used_by": ["test_mlp_on_images_flattens_them"]},
    "conditional": {"data": lambda: _context_training(True), "config": {"epochs": 20, **_CPU},
                    "export": {"alpha": 0.05}, "used_by": ["context_models"]},
    "unconditional": {"data": lambda: _context_training(False), "config": {"epochs": 20, **_CPU},
                      "export": {"alpha": 0.05}, "used_by": ["context_models"]},
    "numeric": {"data": lambda: dict(zip(("condition", "X"), numeric_context_rows(np.random.default_rng(0), 1500))),
                "config": {"epochs": 20, **_CPU}, "used_by": ["test_numeric_context_conditions"]},
}


@pytest.fixture(scope="module")
def digits():
    return digits_rows()


@pytest.fixture(scope="module")
def conv_model(prebuilt):
    """(metadata, path) of the convolutional VAE of the digits' zeros."""
    path = prebuilt.path("digits-conv")
    return Scorer(path).metadata, path


@pytest.fixture(scope="module")
def context_models(prebuilt, tmp_path_factory):
    """The conditional and unconditional models of context_data's rows, in a folder with those rows
    (X.npy) and their conditions (c.npy)."""
    c, X, _ = context_data(np.random.default_rng(0), 1500)
    folder = tmp_path_factory.mktemp("cond")
    paths = {}
    for kind in ("conditional", "unconditional"):
        paths[kind] = folder / f"{kind}.onnx"
        shutil.copy(prebuilt.path(kind), paths[kind])
    np.save(folder / "X.npy", X)
    np.save(folder / "c.npy", c)
    return paths


# ---------------------------------------------------------------- images


def test_conv_vae_is_chosen_for_images_and_detects_other_digits(conv_model, digits):
    meta, path = conv_model
    assert meta["training"]["architecture"]["kind"] == "conv"
    scorer = Scorer(path)
    assert scorer.input_shape == (8, 8) and scorer.n_features == 64
    _, X_test, y_test = digits
    assert roc_auc_score(y_test, scorer.score_samples(X_test)) > 0.95


def test_image_scores_are_batch_invariant_and_equal_for_flattened_rows(conv_model, digits):
    scorer = Scorer(conv_model[1])
    X_test = digits[1][:200]
    whole = scorer.score_samples(X_test)
    np.testing.assert_array_equal(scorer.score_samples(X_test.reshape(len(X_test), -1)), whole)
    for chunk in (1, 7, 64):
        np.testing.assert_array_equal(scorer.score_samples(X_test, chunk_rows=chunk), whole)
    terms = scorer.feature_terms(X_test)
    assert terms.shape == (200, 64)  # per-pixel attribution, same contract as tabular features
    np.testing.assert_allclose(terms.sum(1), scorer.score_samples(X_test, score="recon-prob"), rtol=1e-4,
                               atol=1e-3 * np.abs(terms.sum(1)).max())


def test_mlp_on_images_flattens_them(digits, prebuilt):
    scorer = Scorer(prebuilt.path("digits-mlp"))
    assert scorer.metadata["training"]["architecture"]["kind"] == "mlp"
    assert scorer.score_samples(digits[1][:5]).shape == (5,)


def test_conv_needs_images(digits):
    with pytest.raises(InputValidationError, match="--arch conv needs images"):
        train(digits[0].reshape(len(digits[0]), -1), config=TrainConfig(epochs=1, arch="conv", device="cpu"))


def test_images_of_another_shape_are_refused(conv_model):
    with pytest.raises(InputValidationError, match=r"images of shape \(7, 7\)"):
        Scorer(conv_model[1]).score_samples(np.zeros((3, 7, 7), np.float32))


def test_sample_has_the_training_input_shape_and_is_seeded(conv_model, digits):
    scorer = Scorer(conv_model[1])
    a = scorer.sample(6, seed=1)
    assert a.shape == (6, 8, 8) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(scorer.sample(6, seed=1), a)
    assert not np.array_equal(scorer.sample(6, seed=2), a)
    assert scorer.sample(0).shape == (0, 8, 8)
    # decoded prior draws look like the training digits more than like noise
    assert np.abs(a.mean(0) - digits[0].mean(0)).mean() < np.abs(digits[0].mean(0)).mean()


@pytest.mark.slow
def test_cli_fit_score_sample_and_latent_report_on_images_without_torch_for_scoring(digits, tmp_path):
    X_train, X_test, y_test = digits
    np.save(tmp_path / "train.npy", X_train)
    np.save(tmp_path / "test.npy", X_test)
    np.save(tmp_path / "labels.npy", y_test)
    r = cli("fit", "train.npy", "-o", "img.onnx", "--epochs", "8", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = [  # independent runs, two at a time; the first three must not import torch
        (("score", "test.npy", "-m", "img.onnx", "-o", "s.csv"), True),
        (("sample", "-m", "img.onnx", "-n", "4", "-o", "draws.npy"), True),
        (("report", "test.npy", "-m", "img.onnx", "--labels", "labels.npy", "--latent", "-o", "r.png"), True),
        (("sample", "-m", "img.onnx", "-n", "4", "-o", "draws.csv"), False)]
    with ThreadPoolExecutor(2) as pool:
        scored, sampled, reported, refused = pool.map(lambda a: cli(*a[0], cwd=tmp_path, no_torch=a[1]), runs)
    assert scored.returncode == sampled.returncode == reported.returncode == 0, (scored.stderr, sampled.stderr,
                                                                                 reported.stderr)
    scores = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert scores.shape == (len(X_test), 4)
    assert np.load(tmp_path / "draws.npy").shape == (4, 8, 8)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert refused.returncode == 5 and ".npy" in refused.stderr and not (tmp_path / "draws.csv").exists()


def test_latent_projection_is_the_means_or_their_principal_components(conv_model, digits):
    from vae_anomaly.evaluation.report import latent_projection

    means = Scorer(conv_model[1]).latent_means(digits[1][:50])
    assert means.shape == (50, conv_model[0]["latent_dim"])
    coords, axis = latent_projection(means)
    assert coords.shape == (50, 2) and "principal" in axis
    coords, axis = latent_projection(means[:, :2])
    np.testing.assert_array_equal(coords, means[:, :2])


# ---------------------------------------------------------------- conditions


def test_conditional_vae_detects_rows_normal_only_for_another_condition(context_models):
    rng = np.random.default_rng(1)
    c, normal, swapped = context_data(rng, 400)
    X, C = np.vstack([normal, swapped]), np.r_[c, c]
    y = np.r_[np.zeros(400), np.ones(400)]
    conditional = Scorer(context_models["conditional"])
    unconditional = Scorer(context_models["unconditional"])
    assert conditional.condition == {"kind": "categorical", "n_categories": 2}
    assert roc_auc_score(y, conditional.score_samples(X, condition=C)) >= 0.95
    assert roc_auc_score(y, unconditional.score_samples(X)) < 0.75  # the context is invisible to it
    # one-hot rows are the same condition as ids
    np.testing.assert_array_equal(conditional.score_samples(X, condition=np.eye(2)[C]),
                                  conditional.score_samples(X, condition=C))


def test_conditional_sampling_follows_the_condition(context_models):
    scorer = Scorer(context_models["conditional"])
    draws = scorer.sample(200, condition=np.r_[np.zeros(100, int), np.ones(100, int)], seed=0)
    assert draws.shape == (200, 4)
    assert draws[:100].mean() > 1.5 and draws[100:].mean() < -1.5


@pytest.mark.parametrize("condition, message", [
    (None, "the model is conditional"),
    (np.zeros(3, int), "3 condition rows for 5 data rows"),
    (np.full(5, 2), r"integer category ids in \[0, 2\)"),
    (np.full(5, 0.5), r"integer category ids in \[0, 2\)"),
    (np.ones((5, 2)), "must be one-hot rows"),
    (np.array(["a"] * 5), "expected numbers"),
])
def test_bad_conditions_are_refused(context_models, condition, message):
    with pytest.raises(InputValidationError, match=message):
        Scorer(context_models["conditional"]).score_samples(np.zeros((5, 4), np.float32), condition=condition)


def test_conditions_for_an_unconditional_model_are_refused(context_models):
    with pytest.raises(InputValidationError, match="not conditional"):
        Scorer(context_models["unconditional"]).score_samples(np.zeros((5, 4), np.float32), condition=np.zeros(5))


def test_numeric_context_conditions(prebuilt):
    rng = np.random.default_rng(0)
    numeric_context_rows(rng, 1500)  # the training rows of PREBUILT["numeric"]; the test rows follow them
    scorer = Scorer(prebuilt.path("numeric"))
    assert scorer.metadata["training"]["condition"] == {"kind": "numeric", "size": 1}
    ctx_t = rng.uniform(-1, 1, (300, 1)).astype(np.float32)
    normal = (rng.standard_normal((300, 3)) * 0.5 + 3 * ctx_t).astype(np.float32)
    wrong = (rng.standard_normal((300, 3)) * 0.5 - 3 * ctx_t).astype(np.float32)  # right values, wrong context
    s = scorer.score_samples(np.vstack([normal, wrong]), condition=np.vstack([ctx_t, ctx_t]))
    assert roc_auc_score(np.r_[np.zeros(300), np.ones(300)], s) > 0.8
    with pytest.raises(InputValidationError, match="numeric context of size 1"):
        scorer.score_samples(normal, condition=np.hstack([ctx_t, ctx_t]))


def test_cli_conditions_end_to_end_and_errors_write_nothing(context_models):
    folder = context_models["conditional"].parent
    np.save(folder / "short.npy", np.zeros(10, int))
    runs = [  # (arguments, without torch)
        (("score", "X.npy", "-m", "conditional.onnx", "--condition", "c.npy", "-o", "s.csv"), True),
        (("score", "X.npy", "-m", "conditional.onnx"), False),
        (("score", "X.npy", "-m", "conditional.onnx", "--condition", "short.npy", "-o", "t.csv"), False),
        (("sample", "-m", "conditional.onnx", "--condition", "c.npy", "-o", "draws.npy"), True),
        (("fit", "X.npy", "--condition", "short.npy", "-o", "bad.onnx"), False),
    ]
    with ThreadPoolExecutor(2) as pool:  # independent runs, each keeps one core busy
        scored, no_condition, short, sampled, fit = pool.map(lambda r: cli(*r[0], cwd=folder, no_torch=r[1]), runs)
    assert scored.returncode == 0, scored.stderr
    assert np.loadtxt(folder / "s.csv", delimiter=",", skiprows=1).shape == (1500, 4)
    assert no_condition.returncode == 3 and "--condition" in no_condition.stderr and no_condition.stdout == ""
    assert short.returncode == 3 and "condition rows" in short.stderr and not (folder / "t.csv").exists()
    assert sampled.returncode == 0, sampled.stderr
    assert np.load(folder / "draws.npy").shape == (1500, 4)
    assert fit.returncode == 3 and "condition rows" in fit.stderr and not (folder / "bad.onnx").exists()


def test_recalibration_keeps_the_generation_graph(context_models, tmp_path):
    from vae_anomaly.deploy.recalibration import recalibrate

    path = tmp_path / "m.onnx"
    path.write_bytes(context_models["conditional"].read_bytes())
    rng = np.random.default_rng(2)
    c, normal, _ = context_data(rng, 300)
    recalibrate(path, normal, condition=c, alpha=0.1)
    scorer = Scorer(path)
    assert scorer.alpha == 0.1 and scorer.sample(3, condition=[0, 1, 0]).shape == (3, 4)


def test_a_model_without_a_generation_graph_says_so(context_models, tmp_path):
    import onnx

    from vae_anomaly.deploy.artifact import SAMPLER_KEY, seal

    model = onnx.load(context_models["unconditional"])
    keep = [p for p in model.metadata_props if p.key != SAMPLER_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    seal(model)  # a sound file that only lacks the generation graph (an unsealed edit fails the checksum)
    onnx.save(model, tmp_path / "old.onnx")
    with pytest.raises(ModelArtifactError, match="no generation graph"):
        Scorer(tmp_path / "old.onnx").sample(2)


# ---------------------------------------------------------------- training options


def test_free_bits_keep_latent_dimensions_from_collapsing(cardio):
    """With a heavy KL weight (β = 4) every latent dimension collapses to the prior; free bits of 0.5
    nats per dimension keep them in use (Kingma et al. 2016)."""
    from vae_anomaly.training.scores import kl_terms

    active = {}
    for free_bits in (0.0, 0.5):
        result = train(cardio[0], config=TrainConfig(epochs=20, seed=0, beta=4.0, free_bits=free_bits, device="cpu"))
        vae = result.graph.vae
        with torch.no_grad():
            mu, logvar = vae.encode(vae.standardize(torch.as_tensor(result.x_val)))
            active[free_bits] = int((kl_terms(mu, logvar).mean(0) > 0.1).sum())
    assert active[0.0] <= 1 < active[0.5]


def test_free_bits_must_be_non_negative(cardio):
    with pytest.raises(InputValidationError, match="--free-bits"):
        train(cardio[0], config=TrainConfig(epochs=1, free_bits=-1.0, device="cpu"))


def test_http_service_scores_a_conditional_model_with_json_conditions(context_models):
    import json
    import socket
    import time
    import urllib.error
    import urllib.request

    pytest.importorskip("fastapi")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vae_anomaly.cli.main", "serve", "-m",
                             str(context_models["conditional"]), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def post(body):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        rows = np.load(context_models["conditional"].parent / "X.npy")[:20]
        c = np.load(context_models["conditional"].parent / "c.npy")[:20]
        status, body = post({"rows": rows.tolist(), "condition": c.tolist()})
        assert status == 200
        expected = Scorer(context_models["conditional"]).score_samples(rows, condition=c)
        np.testing.assert_array_equal(np.asarray(body["scores"], dtype=np.float32), expected)
        status, body = post({"rows": rows.tolist()})
        assert status == 422 and "conditional" in body["error"]
        status, body = post({"rows": rows.tolist(), "condition": [[0], [1, 2]] + [[0]] * 18})
        assert status == 422 and "different lengths" in body["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
