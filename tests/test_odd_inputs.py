"""Odd but ordinary inputs (issue 31): each gives the right answer or a clear refusal, never a wrong
answer with exit 0. Huge finite values, categories written differently by different readers,
headers and names, series time columns."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from vae_anomaly import Scorer

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


# ---------------------------------------------------------------- one rule for non-finite scores

@pytest.mark.parametrize("value", [1e30, -3e38])
def test_a_huge_finite_value_is_flagged_with_p_value_0_in_every_path(model_path, cardio, value, tmp_path):
    scorer = Scorer(model_path)
    x = cardio[1][:6].astype(np.float32).copy()
    x[2, 3] = value
    with pytest.warns(UserWarning, match="non-finite"):
        res = scorer.predict(x)
    assert res.scores[2] == np.inf and res.p_values[2] == 0.0 and res.is_anomaly[2]
    assert np.isfinite(res.scores[[0, 1, 3, 4, 5]]).all()
    with pytest.warns(UserWarning, match="non-finite"):
        assert scorer.score_samples(x)[2] == np.inf
    with pytest.warns(UserWarning, match="non-finite"):  # BH: flagged, and not one of BH's hypotheses
        assert scorer.predict(x, fdr=0.1).is_anomaly[2]

    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "s.jsonl"
    run = subprocess.run([*CLI, "score", str(tmp_path / "x.npy"), "--model", str(model_path), "--output", str(out),
                          "--fail-on-anomaly"], capture_output=True, text=True)
    assert run.returncode == 6, run.stderr  # --fail-on-anomaly: the row is an anomaly
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[2]["score"] is None and rows[2]["p_value"] == 0.0 and rows[2]["is_anomaly"] == 1


def test_logsumexp_of_all_minus_inf_terms_is_minus_inf_not_nan():
    torch = pytest.importorskip("torch")
    from vae_anomaly.training.scores import row_logsumexp

    t = torch.tensor([[-np.inf, -np.inf], [0.0, np.inf], [0.0, 0.0]])
    out = row_logsumexp(t)
    assert out[0] == -np.inf and out[1] == np.inf and torch.isclose(out[2], torch.tensor(np.log(2.0), dtype=out.dtype))
