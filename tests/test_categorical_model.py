"""Heterogeneous likelihoods (HI-VAE, Nazábal et al. 2020): a categorical likelihood with a floor for
one-hot encoded categorical columns beside the Gaussian numeric ones.

One small model is trained on synthetic mixed data (3 numeric columns, categorical columns of 3
and 5 categories that depend on the numeric ones) and exported once; the tests check invariants:
torch/onnxruntime parity, feature terms summing to recon-prob, batch invariance, an unseen
category scoring higher and costing −log ε.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

N_NUMERIC, CATEGORIES = 3, (3, 5)
FLOOR = 1e-4
SCORES = ("neg-elbo", "recon-prob", "iwae")


def encode(numeric: np.ndarray, cats: list[np.ndarray], unseen: list[np.ndarray] | None = None) -> np.ndarray:
    """Rows per the input contract: numeric columns, then per column K + 1 one-hot slots."""
    blocks = [numeric.astype(np.float32)]
    for c, (k, ids) in enumerate(zip(CATEGORIES, cats)):
        block = np.zeros((len(ids), k + 1), np.float32)
        block[np.arange(len(ids)), ids] = 1.0
        if unseen is not None:
            block[unseen[c]] = 0.0
            block[unseen[c], k] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    num = rng.standard_normal((n, N_NUMERIC)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    a = np.digitize(num[:, 0], [-0.5, 0.5])                                     # 3 categories, from col 0
    b = (np.digitize(num[:, 1], [6.0, 9.0, 11.0, 14.0]) + (rng.random(n) < 0.05)) % 5  # 5, from col 1
    return num, [a, b]


TABLE = {
    "features": [{"name": f"x{j}", "kind": "numeric"} for j in range(N_NUMERIC)]
    + [{"name": "a", "kind": "categorical", "categories": ["lo", "mid", "hi"]},
       {"name": "b", "kind": "categorical", "categories": ["v", "w", "x", "y", "z"]}],
    "id_columns": ["id"],
    "exclude": [],
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    num, cats = synthetic(600, 0)
    result = train(encode(num, cats), categories=CATEGORIES,
                   config=TrainConfig(epochs=8, seed=0, hidden=(32, 32), device="cpu"))
    path = tmp_path_factory.mktemp("cat") / "model.onnx"
    meta = export_model(result, path, table=TABLE)
    return result, path, meta


@pytest.fixture(scope="module")
def scorer(fitted):
    from vae_anomaly import Scorer

    return Scorer(fitted[1])


def test_architecture_and_metadata(fitted):
    result, _, meta = fitted
    arch = result.graph.vae.arch
    assert arch.categories == CATEGORIES and arch.category_floor == FLOOR
    assert arch.n_numeric == N_NUMERIC and arch.n_features == N_NUMERIC + sum(k + 1 for k in CATEGORIES)
    assert result.graph.vae.dec_mu.out_features == N_NUMERIC + sum(CATEGORIES)
    assert result.graph.vae.dec_var_param.shape == (N_NUMERIC,)
    # one-hot slots are not standardized
    assert np.all(result.graph.vae.loc.numpy()[N_NUMERIC:] == 0) and np.all(result.graph.vae.scale.numpy()[N_NUMERIC:] == 1)
    # the unseen slots' encoder weights stay 0 through training
    w = result.graph.vae.encoder[0].weight.detach().numpy()
    assert np.all(w[:, arch.unseen_slots()] == 0) and np.all(w[:, arch.unseen_slots()[0] - 1] != 0)
    assert meta["table"] == TABLE
    assert meta["feature_names"] == ["x0", "x1", "x2", "a", "b"]
    assert meta["n_feature_terms"] == N_NUMERIC + len(CATEGORIES)
    assert list(meta["training"]["architecture"]["categories"]) == list(CATEGORIES)
    assert meta["training"]["architecture"]["category_floor"] == FLOOR


def _rows(seed: int, n: int = 40, unseen=None) -> np.ndarray:
    num, cats = synthetic(n, seed)
    return encode(num, cats, unseen)


def test_feature_terms_sum_to_recon_prob_and_parity(fitted, scorer):
    result = fitted[0]
    x = _rows(1)
    terms = scorer.feature_terms(x)
    assert terms.shape == (len(x), N_NUMERIC + len(CATEGORIES)) and terms.dtype == np.float32
    recon = scorer.score_samples(x, score="recon-prob")
    np.testing.assert_allclose(terms.sum(1), recon, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        ref = result.graph(torch.as_tensor(x))
    for i, s in enumerate(SCORES):
        np.testing.assert_allclose(scorer.score_samples(x, score=s), ref[i].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(terms, ref[3].numpy(), rtol=1e-4, atol=1e-3)


def test_scores_are_bit_identical_across_chunk_sizes(scorer):
    x = _rows(2, n=61, unseen=[np.arange(61) % 7 == 0, np.arange(61) % 5 == 0])
    for s in SCORES:
        runs = [scorer.score_samples(x, score=s, chunk_rows=c) for c in (1, 7, 1024)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:]), s
    terms = [scorer.feature_terms(x, chunk_rows=c) for c in (1, 7, 1024)]
    assert all(np.array_equal(terms[0], t) for t in terms[1:])


@pytest.mark.parametrize("column", [0, 1])
def test_unseen_category_scores_higher_and_costs_minus_log_floor(scorer, column):
    n = 30
    x = _rows(3, n)
    mask = [np.zeros(n, bool), np.zeros(n, bool)]
    mask[column][:] = True
    x_unseen = _rows(3, n, unseen=mask)
    for s in ("neg-elbo", "recon-prob"):
        assert np.all(scorer.score_samples(x_unseen, score=s) > scorer.score_samples(x, score=s)), s
    terms = scorer.feature_terms(x_unseen)[:, N_NUMERIC + column]
    np.testing.assert_allclose(terms, -math.log(FLOOR), rtol=1e-5)
    seen_terms = scorer.feature_terms(x)[:, N_NUMERIC:]
    assert np.all(seen_terms > 0) and np.all(seen_terms < -math.log(FLOOR))


def test_sample_graph_layout(scorer):
    out = scorer.sample(50, seed=1)
    assert out.shape == (50, N_NUMERIC + sum(k + 1 for k in CATEGORIES))
    pos = N_NUMERIC
    for k in CATEGORIES:
        block = out[:, pos : pos + k + 1]
        assert np.all(block[:, k] == 0) and np.all(block[:, :k] >= FLOOR * 0.999)
        np.testing.assert_allclose(block.sum(1), 1.0, rtol=1e-5)
        pos += k + 1


def test_categorical_log_prob_of_uniform_logits(fitted):
    """Equal logits: every training category has probability ε + (1 − K ε)/K = 1/K."""
    from vae_anomaly.training.scores import categorical_log_prob

    vae = fitted[0].graph.vae
    x = torch.as_tensor(_rows(4, 8))
    onehot = x[:, N_NUMERIC:]
    logits = torch.zeros(8, sum(CATEGORIES))
    lp = categorical_log_prob(onehot, logits, CATEGORIES, FLOOR)          # uniform: log(1/K)
    np.testing.assert_allclose(lp.numpy(), np.log([[1 / 3, 1 / 5]] * 8), rtol=1e-5)
    assert vae.arch.category_floor == FLOOR


def test_bad_inputs_are_refused(fitted):
    from vae_anomaly.errors import InputValidationError
    from vae_anomaly.training.export import build_model
    from vae_anomaly.training.model import default_architecture
    from vae_anomaly.training.train import TrainConfig, train

    num, cats = synthetic(40, 5)
    x = encode(num, cats, unseen=[np.arange(40) == 3, np.zeros(40, bool)])   # unseen in training rows
    with pytest.raises(InputValidationError, match="unseen"):
        train(x, categories=CATEGORIES, config=TrainConfig(epochs=1, hidden=(8,), device="cpu"))
    with pytest.raises(InputValidationError, match="MLP"):
        default_architecture(16, categories=(3,), image_shape=(1, 4, 4))
    bad = {**TABLE, "features": TABLE["features"][:3] + [{"name": "a", "kind": "categorical", "categories": ["p"]}]}
    with pytest.raises(InputValidationError, match="table"):
        build_model(fitted[0], table=bad)


def test_checkpoint_resume_keeps_categories(tmp_path):
    from vae_anomaly.errors import InputValidationError
    from vae_anomaly.training.train import TrainConfig, train

    num, cats = synthetic(80, 6)
    x = encode(num, cats)
    cfg = TrainConfig(epochs=2, seed=0, hidden=(8,), device="cpu", n_samples=4)
    ck = tmp_path / "ck.pt"
    full = train(x, categories=CATEGORIES, config=TrainConfig(**{**cfg.__dict__, "epochs": 4}))
    train(x, categories=CATEGORIES, config=cfg, checkpoint=ck, checkpoint_every=2)
    resumed = train(x, config=TrainConfig(**{**cfg.__dict__, "epochs": 4}), resume=ck)
    assert resumed.graph.vae.arch == full.graph.vae.arch
    for k, v in full.graph.vae.state_dict().items():
        assert torch.equal(v, resumed.graph.vae.state_dict()[k]), k
    with pytest.raises(InputValidationError, match="checkpoint"):
        train(x, categories=(3, 4), config=cfg, resume=ck)
