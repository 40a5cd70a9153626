"""Export and calibration run the graph in bounded chunks whatever the number of calibration rows."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_export_runs_torch_and_onnxruntime_in_chunks_capped_by_the_prior(rng):
    from vae_anomaly.deploy.model_file import PRIOR_CHUNK_ELEMENTS
    from vae_anomaly.training.export import build_model
    from vae_anomaly.training.train import TrainConfig, train

    X = rng.standard_normal((700, 5)).astype(np.float32)
    X_val = rng.standard_normal((1500, 5)).astype(np.float32)
    result = train(X, X_val=X_val, config=TrainConfig(epochs=1, hidden=(16,), device="cpu", prior_max_rows=4096))
    graph = result.graph
    components, samples = graph.prior.inv_var.shape[1], graph.eps.shape[0]
    assert components == 700
    cap = PRIOR_CHUNK_ELEMENTS // (components * samples)
    rows_seen = []
    forward = graph.forward
    graph.forward = lambda x, *rest: (rows_seen.append(x.shape[0]), forward(x, *rest))[1]
    _, meta = build_model(result)
    assert max(rows_seen) <= cap < 1500, rows_seen
    assert sum(r for r in rows_seen if r != 3) == 1500  # every calibration row once (3 = the export trace)
    assert meta["n_calibration"] == 1500
