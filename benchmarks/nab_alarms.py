"""Alarms that hold their rate on a drifting series (issue 32): the online calibration's step, chosen
under the protocol for defaults on the 29 NAB series.

    python benchmarks/nab_alarms.py --models /tmp/nab_models            # fit (once) and measure
    python benchmarks/nab_alarms.py --models /tmp/nab_models --write results/nab_alarms.json

Each series' product model is fitted as ``benchmarks/nab.py`` fits it (``vae-anomaly fit`` on the
first 15% as ``timestamp,value``, ``--window 64 --seed 0 --time-order as-read``) and scored once on
the whole series with a fixed threshold, to keep its scores; the fits are kept in ``--models`` and
reused. The rules are then replayed on those scores in series order, with the shipped
:class:`vae_anomaly.deploy.online.OnlineCalibration` (its step η patched per variant), which gives
the flags ``score --state`` gives slice by slice (``benchmarks/nab.py --slices`` checks that):

* ``fixed``: the model's conformal threshold at α = 0.01 (the rule before issue 32);
* ``(η, R)``: quantile tracking on the asinh scale with step η; R = 1 moves the threshold at every
  flagged row (the shipped rule); R > 1 was the variant that counts an incident's first R rows and
  every R-th after, its rise deferred to the incident's end (kept here only as a replay of it).

Measured per series on the normal points after the training part: the realised false-alarm rate;
per series, the event recall (anomaly windows with at least one flag). The protocol (benchmarks/
README.md, "The protocol for defaults"): the 29 series split by a fixed seed (32) into halves; on
one half, among the variants whose median false-alarm rate lies in [α/2, 2α] with a mean of at most
2α, the one with the highest event recall (ties: the smaller mean |log2(rate/α)|) is chosen, and it
must meet the same bar on the other half; both directions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import nab  # benchmarks/nab.py, beside this script
from provenance import git_state

ALPHA = 0.01
HALVES_SEED = 32
VARIANTS = [None] + [(eta, r) for eta in (0.05, 0.1, 0.2, 0.4) for r in (1, 4, 16, 64)]


def fit_and_score(key: str, windows: list, models: Path) -> Path:
    """The series' model and its scores (kept in ``models``): the path of the .npz of scores,
    calibration scores, threshold and warm-up marks."""
    tag = key.replace("/", "_").removesuffix(".csv")
    out = models / f"{tag}.npz"
    if out.exists():
        return out
    ser = nab.load_series(key, windows)
    pd.read_csv(nab.DATA / key).iloc[:ser["n_train"]].to_csv(models / f"{tag}_train.csv", index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "vae_anomaly.cli.main", "fit", str(models / f"{tag}_train.csv"),
                           "--window", "64", "-o", str(models / f"{tag}.onnx"), "--seed", "0", "--time-order",
                           "as-read", "-q"], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{key}: fit exited {proc.returncode}: {proc.stderr[-300:]}")
    from vae_anomaly import Scorer, score_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_file(nab.DATA / key, models / f"{tag}.onnx", models / f"{tag}_scores.csv", time_order="as-read",
                         threshold=1e300)  # a fixed threshold: the scores alone
    scorer = Scorer(models / f"{tag}.onnx")
    np.savez(out, scores=res.scores, cal=scorer.calibration["neg-elbo"], t0=scorer.threshold(),
             warmup=np.isnan(res.p_values))
    return out


def replay(scores: np.ndarray, cal: np.ndarray, t0: float, variant) -> np.ndarray:
    """The flags of ``variant`` over a series' scores in order (see the module)."""
    from vae_anomaly.deploy import online

    if variant is None:
        return scores > t0
    eta, r = variant
    if r == 1:
        online.STEP = eta
        return online.OnlineCalibration(cal, t0, ALPHA).decide(scores)[1]
    return _deferred(scores, cal, t0, eta, r)


def _deferred(scores, cal, t0, eta, r):
    """The measured-and-not-adopted variant: an incident's first ``r`` rows and every r-th after
    count, its rise is applied at its end (or every r rows while it lasts)."""
    q1, m0, q3 = np.percentile(cal, (25.0, 50.0, 75.0))
    s0 = q3 - q1 if q3 > q1 else 1.0
    u = np.arcsinh((np.asarray(scores, float) - m0) / s0)
    q = np.arcsinh((t0 - m0) / s0)
    flags, run, pending = np.zeros(u.size, bool), 0, 0
    for i, x in enumerate(u):
        if x > q:
            flags[i], run = True, run + 1
            pending += run <= r or run % r == 0
            if run >= r and run % r == 0:
                q, pending = q + pending * eta * (1 - ALPHA), 0
        else:
            q, run, pending = q + pending * eta * (1 - ALPHA) - eta * ALPHA, 0, 0
    return flags


def series_flags(entry: tuple, variant) -> np.ndarray:
    """A series' flags under ``variant``: its full windows' in order, a non-finite score flagged."""
    ser, s, cal, t0, warm = entry
    ok = ~warm & np.isfinite(s)
    f = np.zeros(s.size, bool)
    f[ok] = replay(s[ok], cal, t0, variant)
    f[~np.isfinite(s)] = True
    return f


def measure(data: dict, variant, keys: list[str]) -> dict:
    far, recall = [], []
    for k in keys:
        ser, s = data[k][:2]
        r = nab.evaluate(ser, s.astype(float), series_flags(data[k], variant))
        far.append(r["far"])
        recall.append(r["event_recall"])
    far = np.array(far)
    return {"n": len(keys), "median_far": float(np.median(far)), "mean_far": float(far.mean()),
            "event_recall": float(np.mean(recall)),
            "log2_deviation": float(np.mean(np.abs(np.log2(np.maximum(far, ALPHA / 16) / ALPHA)))),
            "in_band": float(np.mean((far >= ALPHA / 2) & (far <= 2 * ALPHA)))}


def at_the_same_rate(data: dict, variant, keys: list[str]) -> dict:
    """Event recall of the fixed rule with its threshold set, per series, so that its realised
    false-alarm rate equals ``variant``'s (an oracle: the normal points' own quantile), beside
    ``variant``'s; and the anomaly windows after a series' first that each detects."""
    fixed, ours, later = [], [], {"variant": 0, "fixed at the same rate": 0, "windows": 0}
    for k in keys:
        ser, s = data[k][:2]
        f = series_flags(data[k], variant)
        far = nab.evaluate(ser, s.astype(float), f)["far"]
        normal = ~ser["labels"]
        normal[: ser["n_train"]] = False
        x = np.where(np.isfinite(s), s, np.inf).astype(float)
        g = x > (np.quantile(x[normal], 1 - far) if far > 0 else np.inf)
        g[: ser["n_train"]] = False
        ours.append(nab.evaluate(ser, s.astype(float), f)["event_recall"])
        fixed.append(nab.evaluate(ser, s.astype(float), g)["event_recall"])
        for a, b in ser["segs"][1:]:
            later["windows"] += 1
            later["variant"] += bool(f[a:b + 1].any())
            later["fixed at the same rate"] += bool(g[a:b + 1].any())
    return {"event_recall": float(np.mean(ours)), "fixed_event_recall_at_the_same_rate": float(np.mean(fixed)),
            "later_windows_detected": later}


def meets_bar(r: dict) -> bool:
    return ALPHA / 2 <= r["median_far"] <= 2 * ALPHA and r["mean_far"] <= 2 * ALPHA


def choose(rows: dict, half: str) -> str | None:
    ok = [(r[half]["event_recall"], -r[half]["log2_deviation"], v) for v, r in rows.items()
          if v != "fixed" and meets_bar(r[half])]
    return max(ok)[2] if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, required=True, help="folder for the fitted models and their scores")
    ap.add_argument("--jobs", type=int, default=2, help="fits at a time (default 2)")
    ap.add_argument("--write", type=Path, help="write the JSON results here")
    args = ap.parse_args()
    args.models.mkdir(parents=True, exist_ok=True)
    windows = json.loads((nab.DATA / "combined_windows.json").read_text())
    keys = sorted(k for k, v in windows.items() if v)
    with ThreadPoolExecutor(args.jobs) as pool:
        paths = dict(zip(keys, pool.map(lambda k: fit_and_score(k, windows[k], args.models), keys)))
    data = {}
    for k, path in paths.items():
        d = np.load(path, allow_pickle=False)
        data[k] = (nab.load_series(k, windows[k]), d["scores"], np.sort(d["cal"].astype(float)), float(d["t0"]),
                   d["warmup"])
    perm = np.random.default_rng(HALVES_SEED).permutation(len(keys))
    halves = {"H1": sorted(keys[i] for i in perm[: len(keys) // 2]), "H2": sorted(keys[i] for i in perm[len(keys) // 2:])}
    rows = {}
    for v in VARIANTS:
        name = "fixed" if v is None else f"eta={v[0]} R={v[1]}"
        rows[name] = {h: measure(data, v, ks) for h, ks in halves.items()} | {"all": measure(data, v, keys)}
        print(f"{name:16s} " + " | ".join(
            f"{h}: FAR median {r['median_far']:.4f} mean {r['mean_far']:.4f} recall {r['event_recall']:.3f}"
            for h, r in rows[name].items()), flush=True)
    decisions = {}
    for a, b in (("H1", "H2"), ("H2", "H1")):
        chosen = choose(rows, a)
        decisions[f"{a} -> {b}"] = {"chosen": chosen, "confirmed": chosen is not None and meets_bar(rows[chosen][b])}
        print(f"chosen on {a}: {chosen}; confirmed on {b}: {decisions[f'{a} -> {b}']['confirmed']}")
    shipped = (0.4, 1)  # vae_anomaly.deploy.online.STEP, every flagged row counted
    same_rate = at_the_same_rate(data, shipped, keys)
    print(f"eta=0.4 R=1 at its own rate: {same_rate}")
    if args.write:
        args.write.write_text(json.dumps({"command": " ".join(sys.argv), **git_state(nab.ROOT), "alpha": ALPHA,
                                          "halves": halves, "rows": rows, "decisions": decisions,
                                          "shipped_at_the_same_rate": same_rate}, indent=1))


if __name__ == "__main__":
    main()
