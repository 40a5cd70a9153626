"""The exported model: torch/ONNX parity, determinism, batch invariance, safety of loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_anomaly import Scorer
from vae_anomaly.deploy.artifact import METADATA_KEY, SCORE_OUTPUTS
from vae_anomaly.errors import InputValidationError, ModelArtifactError, TrainingError

torch = pytest.importorskip("torch")


def _rows(cardio, rng):
    """Held-out real rows plus far-out synthetic ones (scores over a wide range)."""
    X_test = cardio[1][:300]
    far = X_test[:20] + 25 * rng.standard_normal(X_test[:20].shape) * X_test.std(axis=0)
    return np.vstack([X_test, far]).astype(np.float32)


def test_onnxruntime_scores_match_torch(trained, model_path, cardio, rng):
    X = _rows(cardio, rng)
    with torch.no_grad():
        ref = [t.numpy() for t in trained.graph(torch.as_tensor(X))]
    scorer = Scorer(model_path)
    for i, name in enumerate(SCORE_OUTPUTS):
        got = scorer.score_samples(X, score=name)
        np.testing.assert_allclose(got, ref[i], rtol=1e-4, atol=1e-3 * np.abs(ref[i]).max(), err_msg=name)
    np.testing.assert_allclose(scorer.feature_terms(X), ref[3], rtol=1e-4, atol=1e-3 * np.abs(ref[3]).max())


def test_feature_terms_sum_to_the_reconstruction_score(model_path, cardio):
    scorer = Scorer(model_path)
    X = cardio[1][:200]
    np.testing.assert_allclose(scorer.feature_terms(X).sum(axis=1), scorer.score_samples(X, score="recon-prob"),
                               rtol=1e-5, atol=1e-3)


def test_scores_are_a_pure_function_of_the_row(model_path, cardio, rng):
    """Same row, same score: in any batch, order, chunking, and on a second load."""
    X = _rows(cardio, rng)
    a, b = Scorer(model_path), Scorer(model_path)
    whole = a.score_samples(X)
    np.testing.assert_array_equal(whole, b.score_samples(X))
    perm = rng.permutation(len(X))
    np.testing.assert_array_equal(a.score_samples(X[perm]), whole[perm])
    np.testing.assert_array_equal(a.score_samples(X, chunk_rows=7), whole)
    one_by_one = np.concatenate([a.score_samples(X[i : i + 1]) for i in range(0, len(X), 37)])
    np.testing.assert_array_equal(one_by_one, whole[::37])
    half = len(X) // 2
    np.testing.assert_array_equal(np.concatenate([a.score_samples(X[:half]), a.score_samples(X[half:])]), whole)


def test_plain_onnxruntime_runs_the_file(model_path, cardio):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert meta["n_features"] == cardio[1].shape[1]
    out = sess.run(None, {"x": cardio[1][:5].astype(np.float32)})
    assert out[0].shape == (5,) and out[3].shape == (5, meta["n_features"]) and out[4].shape == (5, meta["latent_dim"])


def test_metadata_holds_sorted_calibration_scores_of_the_validation_rows(model_path, trained):
    scorer = Scorer(model_path)
    meta = scorer.metadata
    assert meta["training"]["n_val"] == len(trained.x_val) == meta["n_calibration"]
    for name in meta["score_names"]:
        cal = np.asarray(meta["calibration"][name])
        np.testing.assert_array_equal(cal, np.sort(scorer.score_samples(trained.x_val, score=name)))


def test_predict_flags_exactly_the_rows_with_p_at_most_alpha(model_path, cardio):
    scorer = Scorer(model_path)
    res = scorer.predict(cardio[1])
    np.testing.assert_array_equal(res.is_anomaly, res.p_values <= scorer.alpha)
    fixed = scorer.predict(cardio[1], threshold=float(np.median(res.scores)))
    assert fixed.is_anomaly.sum() == np.sum(res.scores > np.median(res.scores))


def test_anomalies_score_higher_than_normals_on_real_data(model_path, cardio):
    from sklearn.metrics import roc_auc_score

    _, X_test, y_test = cardio
    auc = roc_auc_score(y_test, Scorer(model_path).score_samples(X_test))
    assert auc > 0.75  # a model that learned nothing scores 0.5


def test_scorer_refuses_wrong_feature_count_and_unknown_score(model_path):
    scorer = Scorer(model_path)
    with pytest.raises(InputValidationError, match="features, but the model expects"):
        scorer.score_samples(np.zeros((3, scorer.n_features + 1)))
    with pytest.raises(InputValidationError, match="expected one of"):
        scorer.score_samples(np.zeros((3, scorer.n_features)), score="mse")


def test_zero_rows_give_empty_results(model_path):
    scorer = Scorer(model_path)
    res = scorer.predict(np.zeros((0, scorer.n_features)))
    assert res.scores.shape == res.p_values.shape == res.is_anomaly.shape == (0,)


def test_corrupted_truncated_and_foreign_models_are_refused(model_path, tmp_path):
    data = model_path.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all" * 10)
    for name in ("trunc.onnx", "junk.onnx"):
        with pytest.raises(ModelArtifactError, match="not a valid ONNX model"):
            Scorer(tmp_path / name)
    import onnx

    model = onnx.load(str(model_path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "nometa.onnx"))
    with pytest.raises(ModelArtifactError, match="no 'vae_anomaly' metadata"):
        Scorer(tmp_path / "nometa.onnx")
    model = onnx.load(str(model_path))
    meta = json.loads(model.metadata_props[0].value)
    meta["schema_version"] = 99
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(ModelArtifactError, match="schema version 99"):
        Scorer(tmp_path / "future.onnx")


def test_external_data_is_refused(model_path, tmp_path):
    import onnx

    model = onnx.load(str(model_path))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(ModelArtifactError, match="external data"):
        Scorer(tmp_path / "ext.onnx")


def test_nan_loss_stops_training_and_writes_no_model(monkeypatch, tmp_path, cardio):
    import vae_anomaly.training.loop as loop_mod
    from vae_anomaly.training.train import TrainConfig, train

    monkeypatch.setattr(loop_mod, "training_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="nan in epoch 1"):
        train(cardio[0], config=TrainConfig(epochs=3))


def test_tiny_input_trains_and_too_few_rows_is_refused(tmp_path, rng):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    X = rng.standard_normal((12, 3))  # fewer rows than a batch
    with pytest.warns(UserWarning, match="can never flag"):
        export_model(train(X, config=TrainConfig(epochs=2)), tmp_path / "tiny.onnx")
    assert Scorer(tmp_path / "tiny.onnx").score_samples(X).shape == (12,)
    with pytest.raises(InputValidationError, match="expected at least 6"):
        train(X[:5], config=TrainConfig(epochs=2))


def test_training_is_seeded(cardio):
    from vae_anomaly.training.train import TrainConfig, train

    a, b = (train(cardio[0][:200], config=TrainConfig(epochs=3, seed=7)) for _ in range(2))
    for (ka, va), (_, vb) in zip(a.graph.state_dict().items(), b.graph.state_dict().items()):
        assert torch.equal(va, vb), ka


@pytest.mark.parametrize("n_train", [1, 100, 300, 1_000, 12_000, 20_000, 30_000, 200_000, 3_000_000])
def test_auto_epochs_gives_the_step_budget_within_the_epoch_bounds(n_train):
    """The fewest epochs reaching about target_steps steps of batch_size rows, within [min_epochs,
    2000], capped by max_steps; a step counts n_train / batch_size when the rows are fewer."""
    from vae_anomaly.training.config import TrainConfig, auto_epochs

    cfg = TrainConfig()
    steps_per_epoch = n_train / cfg.batch_size
    epochs = auto_epochs(n_train, cfg)
    assert 1 <= epochs <= 2000
    steps = epochs * steps_per_epoch
    if epochs < 2000:  # the budget is reached ...
        assert steps >= min(cfg.target_steps, cfg.max_steps)
    if epochs > cfg.min_epochs:  # ... and not by more than one epoch
        assert (epochs - 1) * steps_per_epoch < cfg.target_steps
    assert (epochs - 1) * steps_per_epoch < cfg.max_steps  # never a whole epoch past max_steps
    if epochs < cfg.min_epochs:  # fewer epochs than the floor only where the floor would pass max_steps
        assert cfg.min_epochs * steps_per_epoch > cfg.max_steps
    elif n_train > cfg.batch_size * cfg.target_steps / cfg.min_epochs:  # large data get min_epochs passes
        assert epochs == cfg.min_epochs
    # the same rows through the network whatever the batch size, below the floor and the cap
    half = TrainConfig(batch_size=cfg.batch_size // 2, target_steps=2 * cfg.target_steps,
                       max_steps=2 * cfg.max_steps)
    assert auto_epochs(n_train, half) == epochs


WIDTHS = [1, 3, 7, 40]


def width_rows(n_features):
    """120 rows of ``n_features`` features on scales from 0.1 to 10."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((120, n_features)) * rng.uniform(0.1, 10, n_features)


#: the models of the width test, trained and exported beside the tests (conftest.py, Prebuilt)
PREBUILT = {f"width-{n}": {"data": lambda n=n: {"X": width_rows(n)}, "config": {"epochs": 2, "seed": 1},
                           "export": {"alpha": 0.1}, "used_by": [f"test_batch_invariance_holds_for_any_width[{n}]"]}
            for n in WIDTHS}


@pytest.mark.parametrize("n_features", WIDTHS)
def test_batch_invariance_holds_for_any_width(n_features, prebuilt):
    """Bit-identical scores whatever the chunk size, for widths that are not SIMD multiples."""
    X = width_rows(n_features)
    scorer = Scorer(prebuilt.path(f"width-{n_features}"))
    for name in scorer.score_names:
        whole = scorer.score_samples(X, score=name)
        for chunk in (1, 3, 7, 64):
            np.testing.assert_array_equal(scorer.score_samples(X, score=name, chunk_rows=chunk), whole,
                                          err_msg=f"{name}, chunk {chunk}")
    terms = scorer.feature_terms(X)
    np.testing.assert_array_equal(scorer.feature_terms(X, chunk_rows=5), terms)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_exports_a_model_that_scores_on_the_cpu(cardio, tmp_path):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    result = train(cardio[0], config=TrainConfig(epochs=5, device="cuda"))
    assert result.summary["device"].startswith("cuda") and result.summary["precision"] == "bf16"
    export_model(result, tmp_path / "gpu.onnx")
    assert Scorer(tmp_path / "gpu.onnx").score_samples(cardio[1]).shape == (len(cardio[1]),)


def test_bf16_autocast_trains_a_model_that_exports_and_ranks(cardio, tmp_path):
    """The GPU speed option also runs on the CPU; the exported graph stays float32 and detects (4 epochs:
    about 0.96 ROC-AUC). torch.compile: tests/test_training_precision.py."""
    from sklearn.metrics import roc_auc_score

    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    X, X_test, y_test = cardio
    result = train(X, config=TrainConfig(epochs=4, seed=0, device="cpu", precision="bf16"))
    assert result.summary["precision"] == "bf16"
    export_model(result, tmp_path / "m.onnx")
    assert roc_auc_score(y_test, Scorer(tmp_path / "m.onnx").score_samples(X_test)) > 0.8


def test_unknown_precision_and_batch_size_are_refused(cardio):
    from vae_anomaly.training.train import TrainConfig, train

    with pytest.raises(InputValidationError, match="--precision"):
        train(cardio[0], config=TrainConfig(epochs=1, precision="fp8", device="cpu"))
    with pytest.raises(InputValidationError, match="--batch-size"):
        train(cardio[0], config=TrainConfig(epochs=1, batch_size=0, device="cpu"))


def test_hidden_widths_override_the_default_rule(cardio):
    from vae_anomaly.training.train import TrainConfig, train

    result = train(cardio[0][:300], config=TrainConfig(epochs=1, hidden=(32, 16, 8), device="cpu"))
    assert tuple(result.summary["architecture"]["hidden"]) == (32, 16, 8)
    assert [m.out_features for m in result.graph.vae.encoder if hasattr(m, "out_features")] == [32, 16, 8]
    with pytest.raises(InputValidationError, match="hidden"):
        train(cardio[0], config=TrainConfig(epochs=1, hidden=(0,), device="cpu"))


def test_the_kept_state_has_the_best_validation_negative_elbo_at_the_posterior_mean(cardio):
    """Early stopping scores the validation rows with the negative ELBO of the score graph under
    N(0, I) (the decoder at the posterior mean); ScoreGraph.neg_elbo gives the same values as the
    graph's first output, and the IWAE keeps all L noise vectors."""
    from vae_anomaly.training.scores import ScoreGraph
    from vae_anomaly.training.train import TrainConfig, train

    result = train(cardio[0][:400], config=TrainConfig(epochs=6, seed=3, device="cpu"))
    graph = result.graph
    assert graph.eps.shape[0] == result.summary["config"]["n_samples"] == 16
    x_val = torch.as_tensor(result.x_val)
    with torch.no_grad():
        standard = ScoreGraph(graph.vae, graph.eps)
        criterion = standard(x_val)[0]
        assert torch.equal(standard.neg_elbo(x_val), criterion)
        assert torch.equal(ScoreGraph(graph.vae, graph.eps[:1])(x_val)[0], criterion)  # no samples in it
    assert float(criterion.double().mean()) == pytest.approx(result.summary["best_val_neg_elbo"], rel=1e-5)


def test_latent_mixture_density_is_the_mean_of_its_gaussians(rng):
    """The graph's expanded log p(z) equals log((1/M) Σ_m N(z; m_m, diag v_m)), computed directly in
    float64 with scipy, near the components and far from them."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    from vae_anomaly.training.scores import LatentMixture

    k, m = 5, 40
    means = 2 * rng.standard_normal((m, k))
    variances = np.exp(rng.uniform(-5, 0.5, (m, k)))
    queries = np.vstack([means[:20] + 0.1 * rng.standard_normal((20, k)), 4 * rng.standard_normal((30, k))])
    expected = logsumexp(norm.logpdf(queries[:, None, :], means, np.sqrt(variances)).sum(-1), axis=1) - np.log(m)
    with torch.no_grad():
        got = LatentMixture(means, variances)(torch.as_tensor(queries, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("log_var", np.linspace(-12.0, 8.0, 6))
def test_latent_mixture_error_is_below_a_thousandth_of_a_nat_over_the_encoders_variance_range(log_var, rng):
    """For component variances anywhere in the encoder's range e^-12 .. e^8 (VAE.LOGVAR_MIN/MAX),
    log p(z) of the mixture, in torch and through onnxruntime, is within 1e-3 nats of the direct
    float64 evaluation of Σ_j (z_j − m_mj)² / v_mj at the same float32 z (drawn from the components,
    where the expanded quadratic form cancels the most)."""
    import onnxruntime as ort
    from scipy.special import logsumexp

    from vae_anomaly.training.export import _to_onnx_bytes
    from vae_anomaly.training.model import VAE
    from vae_anomaly.training.scores import LatentMixture

    assert VAE.LOGVAR_MIN == -12.0 and VAE.LOGVAR_MAX == 8.0
    k, m = 16, 64
    means = 3 * rng.standard_normal((m, k))
    variances = np.exp(log_var + rng.uniform(-0.5, 0.5, (m, k))).clip(np.exp(-12), np.exp(8))
    idx = rng.integers(0, m, 200)
    z = (means[idx] + np.sqrt(variances[idx]) * rng.standard_normal((200, k))).astype(np.float32)
    zd = z.astype(np.float64)
    quad = (((zd[:, None, :] - means) ** 2) / variances).sum(-1)                      # direct, float64
    expected = logsumexp(-0.5 * (k * np.log(2 * np.pi) + np.log(variances).sum(1) + quad), axis=1) - np.log(m)
    mixture = LatentMixture(means, variances).eval()
    with torch.no_grad():
        got_torch = mixture(torch.as_tensor(z)).double().numpy()
    session = ort.InferenceSession(_to_onnx_bytes(mixture, {"z": k}, ["log_pz"]), providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {"z": z})[0].astype(np.float64)
    assert np.abs(got_torch - expected).max() < 1e-3
    assert np.abs(got_onnx - expected).max() < 1e-3


@pytest.fixture(scope="module")
def prior_trained(cardio):
    """A TrainResult fitted on cardio's normal rows with the aggregate-posterior prior (an option)."""
    from vae_anomaly.training.train import TrainConfig, train

    return train(cardio[0], config=TrainConfig(epochs=20, seed=0, prior_max_rows=4096))


def test_mixture_prior_scores_are_the_elbo_at_the_mean_and_the_iwae_of_that_prior(prior_trained, cardio, rng):
    """With the aggregate posterior as p(z): neg-ELBO = −log p(x|μ) + log q(μ|x) − log p(μ) (the
    posterior mean), IWAE = −(logsumexp_l w_l − log L), w_l = log p(x|z_l) + log p(z_l) − log q(z_l|x),
    computed here from the parts; the reconstruction score does not depend on the prior."""
    from vae_anomaly.training.scores import ScoreGraph, gaussian_log_prob

    graph = prior_trained.graph
    assert prior_trained.summary["latent_prior"] == {"kind": "aggregate-posterior",
                                                     "components": prior_trained.summary["n_train"]}
    vae, eps = graph.vae, graph.eps
    X = torch.as_tensor(_rows(cardio, rng))
    with torch.no_grad():
        neg_elbo, recon, iwae, _, _ = (t.double() for t in graph(X))
        xs = vae.standardize(X)
        mu, logvar = vae.encode(xs)
        log_scale = torch.log(vae.scale).sum()
        x_mu0, x_logvar = vae.decode(mu)
        log_px0 = gaussian_log_prob(xs, x_mu0, x_logvar).sum(-1) - log_scale
        log_q0 = gaussian_log_prob(mu, mu, logvar).sum(-1)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
        x_mu, _ = vae.decode(z)
        log_px = gaussian_log_prob(xs.unsqueeze(1), x_mu, x_logvar).sum(-1) - log_scale
        log_qz = gaussian_log_prob(z, mu.unsqueeze(1), logvar.unsqueeze(1)).sum(-1)
        w = (log_px + graph.prior(z) - log_qz).double()
        standard = ScoreGraph(vae, eps)(X)
    np.testing.assert_allclose(neg_elbo, (-log_px0 + log_q0 - graph.prior(mu)).double(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(iwae, -(torch.logsumexp(w, 1) - np.log(w.shape[1])), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(recon, -log_px0.double(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(recon, standard[1].double(), rtol=1e-6)
    assert not np.allclose(neg_elbo, standard[0].double(), rtol=1e-3)  # the prior changes the score


def test_mixture_prior_model_scores_each_row_the_same_in_any_chunking(prior_trained, cardio, rng, tmp_path):
    """A model fitted with --prior-max-rows above its training rows: export checks torch/onnxruntime
    parity; the Scorer caps the rows per call (2**20 / (L·M)), and a row's score stays the same bits
    whatever the chunking and batch."""
    from sklearn.metrics import roc_auc_score

    from vae_anomaly.training.export import export_model

    export_model(prior_trained, tmp_path / "m.onnx")
    scorer = Scorer(tmp_path / "m.onnx")
    n_comp = scorer.metadata["training"]["latent_prior"]["components"]
    assert scorer._max_chunk_rows == 2**20 // (16 * n_comp)
    X = _rows(cardio, rng)
    whole = scorer.score_samples(X)
    np.testing.assert_array_equal(scorer.score_samples(X, chunk_rows=7), whole)
    perm = rng.permutation(len(X))
    np.testing.assert_array_equal(scorer.score_samples(X[perm]), whole[perm])
    np.testing.assert_array_equal(np.concatenate([scorer.score_samples(X[i : i + 1]) for i in range(5)]), whole[:5])
    far = np.r_[np.zeros(300), np.ones(len(X) - 300)]
    assert roc_auc_score(far, whole) > 0.95  # the 20 far-out rows score above the real ones


def test_more_training_rows_than_prior_max_rows_keep_the_standard_normal_prior(cardio):
    from vae_anomaly.training.scores import kl_terms
    from vae_anomaly.training.train import TrainConfig, train

    result = train(cardio[0][:300], config=TrainConfig(epochs=2, prior_max_rows=239, device="cpu"))
    assert result.summary["n_train"] == 240
    assert result.graph.prior is None and result.summary["latent_prior"] == {"kind": "standard-normal"}
    X = torch.as_tensor(cardio[1][:50], dtype=torch.float32)
    with torch.no_grad():
        neg_elbo, recon, *_ = result.graph(X)
        mu, logvar = result.graph.vae.encode(result.graph.vae.standardize(X))
    np.testing.assert_allclose(neg_elbo - recon, kl_terms(mu, logvar).sum(-1), rtol=1e-4, atol=1e-4)
    with pytest.raises(InputValidationError, match="--prior-max-rows: got -1"):
        train(cardio[0], config=TrainConfig(epochs=1, prior_max_rows=-1, device="cpu"))


def test_the_prior_is_made_of_the_training_rows_posteriors(prior_trained, cardio):
    """Components = q(z|x_i) of every training row, never of the calibration rows."""
    from vae_anomaly.training.data import split_rows

    cfg = prior_trained.summary["config"]
    tr, _ = split_rows(len(cardio[0]), cfg["val_fraction"], cfg["seed"])
    vae, prior = prior_trained.graph.vae, prior_trained.graph.prior
    with torch.no_grad():
        mu, logvar = vae.encode(vae.standardize(torch.as_tensor(cardio[0][tr], dtype=torch.float32)))
    np.testing.assert_allclose(prior.scaled_means.numpy(), (mu / torch.exp(logvar)).T.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(prior.inv_var.numpy(), torch.exp(-logvar).T.numpy(), rtol=1e-4)
