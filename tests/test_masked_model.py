"""Missing values left out of the likelihood (Donut's modified ELBO, Xu et al. 2018, §3.2; HI-VAE's
masked likelihood, Nazábal et al. 2020): ``train(..., missing=True)``.

One small window model is trained on sine-wave windows (W = 8 steps × 2 metrics) with 5% of the
points missing (NaN) and a few rows missing entirely, and exported once; the tests run the exported
graph with onnxruntime directly and check invariants: NaN never reaches an output, each row's
scores are bit-identical for any chunk size, torch/onnxruntime parity, a missing entry's feature
term is 0, the encoder reads a missing entry as the training mean, and masking an outlier lowers
the score.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

W, D = 8, 2
OUTPUTS = ("neg_elbo", "recon_prob", "iwae", "feature_terms", "latent_mean")
ALL_NAN_TRAIN = (0, 1, 2, 3)


def windows(n_steps: int, seed: int) -> np.ndarray:
    """(n_steps − W + 1, W·D) float32 windows of two noisy sine waves."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    series = np.stack([np.sin(2 * np.pi * t / 50), 2.0 * np.cos(2 * np.pi * t / 30) + 5.0], axis=1)
    series += 0.05 * rng.standard_normal(series.shape)
    return np.lib.stride_tricks.sliding_window_view(series, (W, D))[:, 0].reshape(-1, W * D).astype(np.float32)


def with_missing(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    out = x.copy()
    out[np.random.default_rng(seed).random(out.shape) < fraction] = np.nan
    return out


def sample_rows() -> np.ndarray:
    """Clean windows, windows with 10%, 50% and 90% missing, all but one missing, all missing."""
    clean = windows(300, 7)[:40]
    rows = [clean, with_missing(clean, 0.1, 1), with_missing(clean, 0.5, 2), with_missing(clean, 0.9, 3)]
    one = np.full((3, W * D), np.nan, np.float32)
    one[:, 5] = clean[:3, 5]
    rows += [one, np.full((3, W * D), np.nan, np.float32)]
    return np.concatenate(rows)


def run_graph(path, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    parts = [sess.run(list(OUTPUTS), {name: x[i : i + chunk]}) for i in range(0, len(x), chunk)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(OUTPUTS))]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    x = with_missing(windows(700, 0), 0.05, 0)
    x[list(ALL_NAN_TRAIN)] = np.nan
    result = train(x, missing=True, config=TrainConfig(epochs=8, seed=0, hidden=(32, 32), device="cpu"))
    path = tmp_path_factory.mktemp("masked") / "model.onnx"
    meta = export_model(result, path)
    return x, result, path, meta


def test_architecture_summary_and_metadata(fitted):
    from vae_anomaly.training.data import split_rows

    x, result, _, meta = fitted
    assert result.graph.vae.arch.masked and meta["missing"] == "masked"
    train_rows, _ = split_rows(len(x), 0.2, 0)
    dropped = int(np.isnan(x[train_rows]).all(axis=1).sum())
    assert dropped >= 1 and result.summary["missing"]["n_train_dropped"] == dropped
    assert result.summary["n_train"] == len(train_rows) - dropped
    assert meta["training"]["architecture"]["masked"] is True
    kept = x[train_rows][~np.isnan(x[train_rows]).all(axis=1)]
    np.testing.assert_allclose(meta["feature_mean"], np.nanmean(kept.astype(np.float64), axis=0), rtol=1e-6)
    np.testing.assert_allclose(meta["feature_std"], np.nanstd(kept.astype(np.float64), axis=0), rtol=1e-5)
    assert np.isnan(result.x_val).any()  # calibration rows as they are, NaN included
    assert all(np.isfinite(meta["calibration"][s]).all() for s in meta["score_names"])


def test_no_nan_in_any_output_and_chunk_invariance(fitted):
    _, _, path, _ = fitted
    x = sample_rows()
    base = run_graph(path, x, 1024)
    for out in base:
        assert np.isfinite(out).all()
    for chunk in (1, 7):
        for name, a, b in zip(OUTPUTS, base, run_graph(path, x, chunk)):
            assert a.tobytes() == b.tobytes(), f"{name} differs with chunk {chunk}"


def test_torch_onnx_parity_with_missing_values(fitted):
    _, result, path, _ = fitted
    x = sample_rows()
    with torch.no_grad():
        expected = [t.numpy() for t in result.graph(torch.as_tensor(x))]
    for name, a, b in zip(OUTPUTS, run_graph(path, x, 64), expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())), err_msg=name)


def test_missing_entries_have_zero_terms_and_terms_sum_to_recon(fitted):
    _, _, path, _ = fitted
    x = sample_rows()
    neg_elbo, recon, _, terms, _ = run_graph(path, x, 1024)
    assert (terms[np.isnan(x)] == 0).all()
    np.testing.assert_allclose(terms.sum(axis=1), recon, rtol=1e-4, atol=1e-3)
    all_nan = np.isnan(x).all(axis=1)
    assert all_nan.sum() >= 3 and (recon[all_nan] == 0).all()
    assert np.unique(neg_elbo[all_nan]).size == 1  # the KL alone, of the encoding of the training mean


def test_a_missing_entry_reads_as_the_training_mean_and_its_payload_is_irrelevant(fitted):
    _, _, path, meta = fitted
    rows = windows(300, 8)[:20]
    j = 5
    masked, at_mean = rows.copy(), rows.copy()
    masked[:, j] = np.nan
    at_mean[:, j] = np.float32(meta["feature_mean"][j])
    # a NaN with another payload (and sign) is the same missing value
    other = masked.copy()
    other.view(np.uint32)[:, j] = np.uint32(0xFFC01234)
    assert np.isnan(other[:, j]).all()
    out_masked, out_mean, out_other = (run_graph(path, r, 1024) for r in (masked, at_mean, other))
    for a, b in zip(out_masked, out_other):
        assert a.tobytes() == b.tobytes()
    assert np.abs(meta["feature_mean"][j] - float(np.float32(meta["feature_mean"][j]))) < 1e-6
    np.testing.assert_allclose(out_masked[4], out_mean[4], atol=1e-5)               # the encoder's view
    others = np.arange(W * D) != j
    np.testing.assert_allclose(out_masked[3][:, others], out_mean[3][:, others], atol=1e-4)
    np.testing.assert_allclose(out_masked[1], out_mean[1] - out_mean[3][:, j], rtol=1e-5, atol=1e-3)


def test_masking_an_outlier_lowers_every_score(fitted):
    _, _, path, _ = fitted
    rows = windows(300, 9)[:20]
    outlier = rows.copy()
    outlier[:, 3] += 50.0
    masked = outlier.copy()
    masked[:, 3] = np.nan
    high, low = run_graph(path, outlier, 1024), run_graph(path, masked, 1024)
    for i in range(3):
        assert (low[i] < high[i]).all(), OUTPUTS[i]


def test_refusals():
    from vae_anomaly.errors import InputValidationError
    from vae_anomaly.training.train import TrainConfig, train

    cfg = TrainConfig(epochs=1, seed=0, hidden=(8,), device="cpu")
    x = windows(100, 0)
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(InputValidationError, match="infinite"):
        train(bad, missing=True, config=cfg)
    nan = with_missing(x, 0.05, 0)
    with pytest.raises(InputValidationError, match="NaN"):
        train(nan, config=cfg)
    with pytest.raises(InputValidationError, match="NaN"):
        train(np.full_like(x, np.nan), missing=True, config=cfg)
    val = x[:10].copy()
    val[0, 0] = -np.inf
    with pytest.raises(InputValidationError, match="infinite"):
        train(nan, X_val=val, missing=True, config=cfg)
    onehot = np.zeros((len(x), 3), np.float32)
    onehot[:, 0] = 1.0
    with pytest.raises(InputValidationError, match="all-numeric"):
        train(np.concatenate([nan, onehot], axis=1), missing=True, categories=(2,), config=cfg)


def test_per_row_variance_and_resume_keep_the_mask(tmp_path):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    x = with_missing(windows(200, 3), 0.1, 4)
    cfg = TrainConfig(epochs=2, seed=0, hidden=(16,), device="cpu", decoder_variance="row")
    ckpt = tmp_path / "c.pt"
    first = train(x, missing=True, config=cfg, checkpoint=ckpt, checkpoint_every=1)
    resumed = train(x, config=TrainConfig(epochs=3, device="cpu"), resume=ckpt)
    assert first.graph.vae.arch.masked and resumed.graph.vae.arch.masked
    export_model(resumed, tmp_path / "m.onnx")
    rows = sample_rows()
    base = run_graph(tmp_path / "m.onnx", rows, 1024)
    assert all(np.isfinite(o).all() for o in base)
    for a, b in zip(base, run_graph(tmp_path / "m.onnx", rows, 7)):
        assert a.tobytes() == b.tobytes()


def test_missing_false_is_the_default(tmp_path):
    from vae_anomaly.training.model import Architecture, default_architecture

    assert Architecture(4, 2, (8,)).masked is False and default_architecture(4).masked is False


def test_rows_without_missing_values_train_on_the_same_loss_without_the_mask():
    from dataclasses import replace

    from vae_anomaly.training.model import VAE, default_architecture
    from vae_anomaly.training.scores import training_loss

    arch = replace(default_architecture(W * D, hidden=(16, 16)), masked=True)
    vae = VAE(arch, np.zeros(W * D), np.ones(W * D))
    x = torch.from_numpy(windows(80, 3))
    losses = []
    for missing in (True, False):
        torch.manual_seed(5)  # the same reparameterization noise
        loss = training_loss(vae, x, 1.0, missing=missing)
        vae.zero_grad()
        loss.backward()
        losses.append((loss.detach(), [p.grad.clone() for p in vae.parameters()]))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-6, atol=1e-5)
    for a, b in zip(losses[0][1], losses[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # with a NaN the mask is what keeps the loss finite
    x[0, 0] = float("nan")
    assert torch.isfinite(training_loss(vae, x, 1.0)) and not torch.isfinite(training_loss(vae, x, 1.0, missing=False))
