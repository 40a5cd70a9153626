"""The online calibration of a series' threshold (vae_anomaly.deploy.online): numpy only, no model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_anomaly.deploy.calibration import score_threshold
from vae_anomaly.deploy.online import OnlineCalibration

ALPHA = 0.01


def _calibrated(n: int = 500, seed: int = 0) -> OnlineCalibration:
    cal = np.sort(np.random.default_rng(seed).standard_normal(n))
    return OnlineCalibration(cal, score_threshold(cal, ALPHA))


def test_on_scores_like_the_calibration_scores_the_rate_stays_near_alpha():
    oc = _calibrated()
    _, flags, _ = oc.decide(np.random.default_rng(1).standard_normal(50_000))
    assert 0.5 * ALPHA <= flags.mean() <= 2 * ALPHA


@pytest.mark.parametrize("shift, stretch", [(5.0, 1.0), (5.0, 3.0), (-2.0, 0.5)])
def test_a_lasting_shifted_and_stretched_level_is_read_as_normal_after_a_while(shift, stretch):
    oc = _calibrated()
    x = shift + stretch * np.random.default_rng(2).standard_normal(40_000)
    _, flags, _ = oc.decide(x)
    fixed = (x > oc.t0).mean()
    assert not 0.5 * ALPHA <= fixed <= 2 * ALPHA           # the fixed threshold misses its rate here
    assert 0.5 * ALPHA <= flags[10_000:].mean() <= 2 * ALPHA  # the online one holds it once it has followed


def test_an_incident_does_not_raise_the_threshold_and_hide_the_next_one():
    oc = _calibrated()
    rng = np.random.default_rng(3)
    oc.decide(rng.standard_normal(2_000))
    before = oc.threshold
    _, flags, _ = oc.decide(np.full(200, 1e6))              # an incident of 200 windows (N = 500)
    assert flags.all() and oc.threshold < before + 0.5      # it entered at the threshold, not at 1e6
    _, flags, _ = oc.decide(np.r_[rng.standard_normal(300), np.full(20, before + 1.0)])
    assert flags[-20:].all()                                # the next incident is still seen


def test_the_state_continues_a_run_exactly_through_json():
    x = 3.0 + np.random.default_rng(4).standard_normal(5_000)
    whole = _calibrated().decide(x)
    oc, got = _calibrated(), []
    for a, b in [(0, 7), (7, 1_234), (1_234, 1_235), (1_235, 5_000)]:
        got.append(oc.decide(x[a:b]))
        state = json.loads(json.dumps(oc.state()))
        oc = OnlineCalibration(oc.cal, oc.t0, state)
    for i in range(3):
        assert np.concatenate([g[i] for g in got]).tobytes() == whole[i].tobytes()


def test_a_state_for_other_calibration_scores_is_refused():
    state = _calibrated(500).state()
    with pytest.raises(ValueError, match="expected 400 recent finite scores"):
        OnlineCalibration(np.sort(np.random.default_rng(0).standard_normal(400)), 2.0, state)
