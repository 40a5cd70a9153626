"""The online calibration of a series' threshold (vae_anomaly.deploy.online): numpy only, no model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_anomaly.deploy import online
from vae_anomaly.deploy.calibration import score_threshold
from vae_anomaly.deploy.online import OnlineCalibration

ALPHA = 0.01


def _calibrated(n: int = 500, seed: int = 0) -> OnlineCalibration:
    cal = np.sort(np.random.default_rng(seed).standard_normal(n))
    return OnlineCalibration(cal, score_threshold(cal, ALPHA), ALPHA)


def test_on_scores_like_the_calibration_scores_the_rate_stays_near_alpha():
    p, flags = _calibrated().decide(np.random.default_rng(1).standard_normal(50_000))
    assert 0.5 * ALPHA <= flags.mean() <= 2 * ALPHA
    assert np.array_equal(p <= ALPHA, flags)  # a flag is a p-value at or below alpha, and only that


@pytest.mark.parametrize("drift", ["shift", "heavy tail", "quieter", "huge"])
def test_the_rate_holds_where_the_fixed_threshold_misses_it(drift):
    rng = np.random.default_rng(2)
    x = {"shift": 5.0 + rng.standard_normal(40_000), "heavy tail": rng.standard_t(1.5, 40_000),
         "quieter": 0.2 * rng.standard_normal(40_000), "huge": 1e12 * np.abs(rng.standard_normal(40_000))}[drift]
    oc = _calibrated()
    fixed = (x > oc.t0).mean()
    p, flags = oc.decide(x)
    assert not 0.5 * ALPHA <= fixed <= 2 * ALPHA             # the fixed threshold misses its rate here
    assert 0.5 * ALPHA <= flags[10_000:].mean() <= 2 * ALPHA   # the tracked one holds it once it has followed
    assert np.array_equal(p <= ALPHA, flags)


def test_each_flagged_row_raises_the_threshold_by_one_step_and_each_other_lowers_it():
    oc = _calibrated()
    oc.decide(np.random.default_rng(3).standard_normal(2_000))
    start = oc._q(oc.lowered)
    _, flags = oc.decide(np.full(50, 1e15))  # an incident of 50 rows
    assert flags.all() and oc.anchor == pytest.approx(start + 50 * online.STEP * (1 - ALPHA))
    _, flags = oc.decide(np.full(1_000, oc.m0))  # quiet rows
    assert not flags.any() and oc._q(oc.lowered) == pytest.approx(oc.anchor - 1_000 * online.STEP * ALPHA)


def test_the_state_continues_a_run_exactly_through_json():
    x = 3.0 + np.random.default_rng(4).standard_t(2.0, 20_000)
    whole = _calibrated().decide(x)
    oc, got = _calibrated(), []
    for a, b in [(0, 7), (7, 1_234), (1_234, 1_235), (1_235, 9_000), (9_000, 20_000)]:
        got.append(oc.decide(x[a:b]))
        oc = OnlineCalibration(oc.cal, oc.t0, ALPHA, json.loads(json.dumps(oc.state())))
    for i in range(2):
        assert np.concatenate([g[i] for g in got]).tobytes() == whole[i].tobytes()


def test_a_damaged_state_is_refused():
    cal = np.sort(np.random.default_rng(0).standard_normal(400))
    with pytest.raises((ValueError, KeyError)):
        OnlineCalibration(cal, 2.0, ALPHA, {"anchor": float("nan"), "lowered": 0})
    with pytest.raises((ValueError, KeyError)):
        OnlineCalibration(cal, 2.0, ALPHA, {"recent": []})
