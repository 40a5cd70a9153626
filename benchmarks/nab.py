"""NAB metric series: sliding-window VAE scoring (issue 22) against KNN, IsolationForest and NAB's detectors.

    python benchmarks/nab.py                                   # W=64, seed 0, all methods; prints tables
    python benchmarks/nab.py --window 16,32,64,128 --scores neg-elbo,recon-prob --write   # the W sweep
    python benchmarks/nab.py --methods vae-windows --window 64 --options default,small --write results/nab_options.json
    python benchmarks/nab.py --series 'realKnownCause/*' --png /tmp/nab_png   # a subset, one PNG per series
    python benchmarks/nab.py --methods vae-anomaly,knn --slices --write results/nab_slices.json   # a day a slice (issue 32)

Data: ``../shared/datasets/nab/`` (NAB subset, see its README.md): each ``category/name.csv`` is
``timestamp,value``; ``combined_windows.json`` gives the anomaly windows per file;
``detectors_pointwise.json`` the point-wise ROC-AUC / AP of six published NAB detectors. Only the
29 series with at least one anomaly window are evaluated (``artificialNoAnomaly/`` has none).

Protocol (NAB's probationary period): per series of n points, the first ``int(0.15 n)`` points are
the training part (a detector may learn there); every point is scored; metrics use the points after
the training part only. Labels: points whose timestamp lies inside one of the series' anomaly windows
(ends inclusive). The series is standardized with the training part's mean and std (std 0 -> 1).
The step is the median timestamp difference; series with gaps (differences above the step) are
counted and reported, but rows are treated as consecutive (no resampling or filling).

Windows: row t of the window matrix holds the W standardized values ending at t, x[t-W+1 .. t]; the
score of timestamp t is the score of the window ending at t. The first W-1 points have no window and
get the lowest score of the series (and no flag); they always lie inside the training part
(W <= 128 < 0.15 n for every series here), so they never enter the metrics. Training windows are
those lying entirely inside the training part (int(0.15 n) - W + 1 of them).

Methods (higher score = more anomalous for all):

* ``vae-anomaly`` -- the product's sliding-window feature: ``vae-anomaly fit train.csv --window W``
  (train.csv = the training part as ``timestamp,value``) then ``vae-anomaly score series.csv -m m.onnx
  -o out.csv``, both with ``--time-order as-read`` (4 series repeat an hour at a DST change or step
  back; their rows are taken in file order); rows with an empty score get the lowest score. Reported
  "not available" while ``vae-anomaly fit --help`` has no ``--window``. With ``--slices`` the series is
  also scored one calendar day a slice, each slice continuing the one before through ``score --state``
  (:func:`score_slices`, in this process); the run records whether the sliced scores equal the one
  file's byte for byte (``slices_equal_scores``, and the flags: ``slices_equal_flags``) and reports
  the sliced flags.
* ``vae-windows`` -- the same idea with today's product: the window matrix is built here and saved as
  .npy, ``vae-anomaly fit train.npy -o m.onnx --seed S --val-fraction F`` then ``vae-anomaly score
  all.npy -m m.onnx -o s.csv --score SCORE`` (once per ``--scores`` entry, one fit). F = 0.2 (the
  default) unless that leaves fewer than 110 calibration windows, then up to 0.5, so that the
  conformal threshold at alpha = 0.01 can flag at all (it needs >= 99 calibration rows).
  ``--options`` adds fit variants: ``default`` (no extra flags), ``small`` (``--hidden 128,128
  --prior-max-rows 0``), ``h128`` (``--hidden 128,128``), ``prior0`` (``--prior-max-rows 0``).
* ``knn`` -- PyOD ``KNN()`` (distance to the 5th neighbour; scikit-learn NearestNeighbors(5) if PyOD
  is absent) and ``iforest`` -- ``IsolationForest(random_state=S)``, fitted on the same training
  windows (all of them: no calibration hold-out) and scoring every window.
* ``nab:<detector>`` -- the published NAB detectors' point-wise ROC-AUC / AP from
  ``detectors_pointwise.json``, averaged over the same series (no other metric is available for them).

Metrics per series, on the points after the training part: ROC-AUC and average precision
(scikit-learn); best F1 over all thresholds, without and with point adjustment (PA: a labelled window
counts as wholly detected when any of its points is flagged, so each window's points take the
window's maximum score; Kim et al., AAAI 2022 -- PA inflates F1 and is reported for comparison with
the literature only). For the VAE methods, at the product's ``--threshold auto`` (``is_anomaly``,
conformal p-value <= alpha = 0.01): event recall (share of windows with at least one flag), detection
delay (points from the window's start -- or from the end of the training part if later -- to the
first flag, over detected windows) and the realised false-alarm rate (share of normal test points
flagged). Means over series (delay: over series with a detection). NAB's own time-weighted score is
not computed here.

Run times: wall seconds of each ``fit``/``score`` command (interpreter start-up, torch import and
ONNX export included); baselines in process. Subprocesses run with OMP_NUM_THREADS=1, ``--jobs`` at
a time. Intermediate files go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from provenance import git_state, source_cli  # benchmarks/provenance.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "nab"
RESULT = ROOT / "benchmarks" / "results" / "nab.json"
METHODS = ["vae-anomaly", "vae-windows", "knn", "iforest"]
SCORES = ["neg-elbo", "recon-prob", "iwae"]
OPTIONS = {"default": [], "small": ["--hidden", "128,128", "--prior-max-rows", "0"],
           "h128": ["--hidden", "128,128"], "prior0": ["--prior-max-rows", "0"]}
PROBATION = 0.15
MIN_CAL = 110
METRICS = ["roc_auc", "ap", "best_f1", "best_f1_pa", "event_recall", "delay", "far"]


# ---------------------------------------------------------------------------------------------- data
def load_series(key: str, windows: list) -> dict:
    df = pd.read_csv(DATA / key)
    ts = pd.to_datetime(df["timestamp"])
    values = df["value"].to_numpy(dtype=float)
    n = len(df)
    n_train = int(PROBATION * n)
    dt = ts.diff().dropna()
    step = dt.median()
    labels = np.zeros(n, dtype=bool)
    segs = []  # index ranges [a, b] of the windows, clipped to the test part
    for a, b in windows:
        inside = ((ts >= pd.Timestamp(a)) & (ts <= pd.Timestamp(b))).to_numpy()
        labels |= inside
        idx = np.flatnonzero(inside)
        idx = idx[idx >= n_train]
        if len(idx):
            segs.append((int(idx[0]), int(idx[-1])))
    mu, sd = values[:n_train].mean(), values[:n_train].std()
    z = (values - mu) / (sd if sd > 0 else 1.0)
    return {"key": key, "ts": ts, "values": values, "z": z.astype(np.float32), "n": n, "n_train": n_train,
            "labels": labels, "segs": segs, "step_s": step.total_seconds(),
            "gaps": int((dt > step).sum()), "n_windows_labelled": len(windows)}


def window_matrix(z: np.ndarray, w: int) -> np.ndarray:
    """Row j = z[j .. j+w-1], the window ending at t = j + w - 1."""
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(z, w), dtype=np.float32)


def expand(win_scores: np.ndarray, n: int, w: int) -> np.ndarray:
    """Per-timestamp scores: window ending at t; the first w-1 points get the lowest score."""
    s = np.asarray(win_scores, dtype=float)
    finite = s[np.isfinite(s)]
    low = finite.min() if len(finite) else 0.0
    s = np.where(np.isnan(s), low, s)
    return np.concatenate([np.full(w - 1, low), s])


# ------------------------------------------------------------------------------------------- metrics
def best_f1(y: np.ndarray, s: np.ndarray) -> float:
    p, r, _ = precision_recall_curve(y, s)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return float(f.max())


def evaluate(ser: dict, score: np.ndarray, flags: np.ndarray | None) -> dict:
    n_train = ser["n_train"]
    y = ser["labels"][n_train:].astype(int)
    s = np.asarray(score, dtype=float)[n_train:]
    s = np.where(np.isposinf(s), np.finfo(float).max, s)
    out = {"roc_auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)),
           "best_f1": best_f1(y, s)}
    adj = s.copy()
    for a, b in ser["segs"]:
        adj[a - n_train:b - n_train + 1] = s[a - n_train:b - n_train + 1].max()
    out["best_f1_pa"] = best_f1(y, adj)
    if flags is not None:
        f = np.asarray(flags, dtype=bool)
        detected, delays = 0, []
        for a, b in ser["segs"]:
            hit = np.flatnonzero(f[a:b + 1])
            if len(hit):
                detected += 1
                delays.append(int(hit[0]))
        out["event_recall"] = detected / len(ser["segs"])
        out["delay"] = float(np.mean(delays)) if delays else None
        normal = ~ser["labels"][n_train:]
        out["far"] = float(f[n_train:][normal].mean())
        out["flags_test"] = int(f[n_train:].sum())
    return out


# ------------------------------------------------------------------------------------------------ CLI
# With --cli-root DIR (a snapshot of the repository, e.g. ``git archive HEAD | tar -x -C DIR``, so that
# edits in progress in the working tree cannot break a long run) the CLI runs from DIR, else from ROOT.
CLI_ROOT: Path | None = None


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``vae-anomaly ARGS`` with this interpreter; (wall seconds, completed process)."""
    root = CLI_ROOT or ROOT
    cmd, env = source_cli(root, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *args], cwd=root, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc


def _fail(what: str, proc: subprocess.CompletedProcess) -> RuntimeError:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return RuntimeError(f"{what} exited {proc.returncode}: {tail[0][:300]}")


def product_available() -> bool:
    _, proc = cli("fit", "--help")
    return proc.returncode == 0 and "--window" in proc.stdout


def read_score_csv(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    out = pd.read_csv(path).sort_values("row")
    if len(out) != n or not np.array_equal(out["row"].to_numpy(), np.arange(n)):
        raise RuntimeError(f"{path.name}: expected rows 0..{n - 1}, got {len(out)} rows")
    return out["score"].to_numpy(dtype=float), out["is_anomaly"].fillna(0).to_numpy().astype(bool)


def fit_vae_windows(ser: dict, w: int, opt: str, seed: int, scores: list[str], tmp: Path) -> dict:
    """One fit on the training windows, one score run per score kind; per-timestamp arrays."""
    tag = f"{re.sub(r'[^A-Za-z0-9]+', '_', ser['key'])}_W{w}_{opt}_s{seed}"
    X = window_matrix(ser["z"], w)
    n_tr_win = ser["n_train"] - w + 1
    vf = min(0.5, max(0.2, MIN_CAL / n_tr_win))
    np.save(tmp / f"{tag}_train.npy", X[:n_tr_win])
    np.save(tmp / f"{tag}_all.npy", X)
    model = tmp / f"{tag}.onnx"
    t_fit, proc = cli("fit", str(tmp / f"{tag}_train.npy"), "-o", str(model), "--seed", str(seed),
                      "--val-fraction", f"{vf:.4f}", *OPTIONS[opt])
    if proc.returncode != 0:
        raise _fail("fit", proc)
    m = re.search(r"(\d[\d,]*) training rows, (\d[\d,]*) calibration rows, best epoch (\d+)/(\d+)",
                  proc.stdout + proc.stderr)
    info = {"train_windows": n_tr_win, "val_fraction": vf, "fit_s": t_fit}
    if m:
        info.update(fit_rows=int(m[1].replace(",", "")), calibration_rows=int(m[2].replace(",", "")),
                    best_epoch=int(m[3]), epochs=int(m[4]))
    res = {}
    for sc in scores:
        out = tmp / f"{tag}_{sc}.csv"
        t_sc, proc = cli("score", str(tmp / f"{tag}_all.npy"), "-m", str(model), "-o", str(out), "--score", sc)
        if proc.returncode != 0:
            raise _fail(f"score --score {sc}", proc)
        s, flag = read_score_csv(out, len(X))
        res[sc] = {"score": expand(s, ser["n"], w),
                   "flags": np.concatenate([np.zeros(w - 1, bool), flag]),
                   "info": {**info, "score_s": t_sc}}
    return res


def contaminate(train: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The training part with ``share`` of its points (seeded, at random) replaced by spikes of ±6
    training standard deviations: unlabelled anomalies in the training period. Returns the frame and
    the 0/1 labels of the replaced points."""
    rng = np.random.default_rng(1000 + seed)
    v = train["value"].to_numpy(dtype=float).copy()
    hit = rng.choice(len(v), size=max(1, int(round(share * len(v)))), replace=False)
    v[hit] += rng.choice([-6.0, 6.0], size=hit.size) * (v.std() or 1.0)
    labels = np.zeros(len(v), dtype=np.int8)
    labels[hit] = 1
    return train.assign(value=v), labels


def score_slices(ser: dict, model: Path, tmp: Path, tag: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The series scored one calendar day a slice, as a monitoring job would: one CSV a day, each run
    continuing the one before through ``score --state`` (the library call behind the CLI, in this
    process: a thousand CLI start-ups would dominate the run). Returns (scores, flags, slices)."""
    import warnings

    from vae_anomaly import score_file

    df = pd.read_csv(DATA / ser["key"])
    day = pd.to_datetime(df["timestamp"]).dt.floor("D").to_numpy()
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    state, scores, flags = tmp / f"{tag}_state.json", [], []
    for a, b in zip(starts, np.r_[starts[1:], len(df)]):
        df.iloc[a:b].to_csv(tmp / f"{tag}_slice.csv", index=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = score_file(tmp / f"{tag}_slice.csv", model, tmp / f"{tag}_slice_out.csv", state=state,
                             time_order="as-read")
        scores.append(res.scores)
        flags.append(res.is_anomaly)
    return np.concatenate(scores), np.concatenate(flags), len(starts)


def fit_product(ser: dict, w: str, seed: int, tmp: Path, share: float = 0.0, labelled: bool = False,
                slices: bool = False, fit_args: tuple[str, ...] = ()) -> dict:
    """The product's --window path on the raw timestamp,value CSV; with ``share`` > 0 the training part
    is contaminated (:func:`contaminate`) and, with ``labelled``, the spikes are given to fit --labels;
    ``fit_args`` are further ``fit`` options (``--fit-args``)."""
    tag = f"{re.sub(r'[^A-Za-z0-9]+', '_', ser['key'])}_prod_W{w}_s{seed}_c{share}_{int(labelled)}"
    df = pd.read_csv(DATA / ser["key"])
    train = df.iloc[:ser["n_train"]]
    extra: list[str] = []
    if share > 0:
        train, labels = contaminate(train, share, seed)
        if labelled:
            np.save(tmp / f"{tag}_labels.npy", labels)
            extra = ["--labels", str(tmp / f"{tag}_labels.npy")]
    train.to_csv(tmp / f"{tag}_train.csv", index=False)
    model, out = tmp / f"{tag}.onnx", tmp / f"{tag}_out.csv"
    # as distributed: 4 series repeat an hour at a DST change or step back; they are taken in file order
    t_fit, proc = cli("fit", str(tmp / f"{tag}_train.csv"), "--window", str(w), "-o", str(model),
                      "--seed", str(seed), "--time-order", "as-read", "-q", *extra, *fit_args)
    if proc.returncode != 0:
        raise _fail("fit --window", proc)
    t_sc, proc = cli("score", str(DATA / ser["key"]), "-m", str(model), "-o", str(out), "--time-order", "as-read")
    if proc.returncode != 0:
        raise _fail("score", proc)
    res = pd.read_csv(out)
    if len(res) != ser["n"]:
        raise RuntimeError(f"score wrote {len(res)} rows for {ser['n']} timestamps")
    s = res["score"].to_numpy(dtype=float)
    flags = res["is_anomaly"].fillna(0).to_numpy().astype(bool)
    info = {"fit_s": t_fit, "score_s": t_sc, "empty_scores": int(np.isnan(s).sum()),
            "timestamp_carried": "timestamp" in res.columns}
    if slices:  # the same series a day at a time: the scores must equal the one file's, byte for byte
        sliced, sliced_flags, n = score_slices(ser, model, tmp, tag)
        one_file = res["score"].to_numpy(np.float32)
        info.update(slices=n, slices_equal_scores=bool(sliced.tobytes() == one_file.tobytes()),
                    slices_equal_flags=bool(np.array_equal(sliced_flags, flags)))
        flags = sliced_flags
    low = np.nanmin(s) if info["empty_scores"] < len(s) else 0.0
    return {"score": np.where(np.isnan(s), low, s), "flags": flags, "info": info}


# ------------------------------------------------------------------------------------------ baselines
def knn_scores(Xtr: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        from pyod.models.knn import KNN
        det = KNN().fit(Xtr)
        return det.decision_function(X), "pyod.models.knn.KNN()"
    except ImportError:
        from sklearn.neighbors import NearestNeighbors
        nn = NearestNeighbors(n_neighbors=5).fit(Xtr)
        return nn.kneighbors(X)[0][:, -1], "sklearn NearestNeighbors(5), 5th distance"


def iforest_scores(Xtr: np.ndarray, X: np.ndarray, seed: int) -> np.ndarray:
    return -IsolationForest(random_state=seed).fit(Xtr).score_samples(X)


# -------------------------------------------------------------------------------------------- report
def summarize(per_series: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Mean over series per method variant; None entries (no detection) left out of a mean."""
    variants = sorted({v for recs in per_series.values() for v in recs})
    out = {}
    for v in variants:
        recs = [recs[v] for recs in per_series.values() if v in recs and "error" not in recs[v]]
        errs = [k for k, recs_ in per_series.items() if v in recs_ and "error" in recs_[v]]
        row = {"n_series": len(recs), "failed": errs}
        for k in METRICS + ["fit_s"]:
            vals = [r[k] for r in recs if r.get(k) is not None]
            if vals:
                row[k] = float(np.mean(vals))
                if k == "delay":
                    row["delay_n_series"] = len(vals)
        out[v] = row
    return out


def wins(per_series: dict, a: str, b: str, metric: str = "roc_auc") -> tuple[int, int, int]:
    """(series where a > b, ties, a < b) on `metric`."""
    w = t = l = 0
    for recs in per_series.values():
        if a in recs and b in recs and metric in recs[a] and metric in recs[b]:
            d = recs[a][metric] - recs[b][metric]
            w, t, l = w + (d > 1e-12), t + (abs(d) <= 1e-12), l + (d < -1e-12)
    return w, t, l


def paired(per_series: dict, a: str, b: str, metric: str = "roc_auc") -> tuple[float, float]:
    """(mean of a − b over the series both have, two-sided Wilcoxon signed-rank p-value)."""
    from scipy.stats import wilcoxon

    d = np.array([recs[a][metric] - recs[b][metric] for recs in per_series.values()
                  if a in recs and b in recs and metric in recs[a] and metric in recs[b]])
    return float(d.mean()), float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0


def best_counts(per_series: dict, variants: list[str], metric: str = "roc_auc") -> dict[str, int]:
    """How many series each variant is the best of `variants` on (ties split to all tied)."""
    cnt = {v: 0 for v in variants}
    for recs in per_series.values():
        vals = {v: recs[v][metric] for v in variants if v in recs and metric in recs[v]}
        if len(vals) == len(variants):
            top = max(vals.values())
            for v, x in vals.items():
                cnt[v] += x >= top - 1e-12
    return cnt


def markdown(summary: dict, peers: dict) -> str:
    lines = ["| method | series | ROC-AUC | AP | best F1 | best F1 (PA) | event recall | delay (pts) | FAR @0.01 | fit s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x, fmt=".3f"):
        return "" if x is None else format(x, fmt)

    for v, r in summary.items():
        if "status" in r:
            lines.append(f"| {v} | {r['status']} | | | | | | | | |")
            continue
        lines.append(f"| {v} | {r['n_series']} | {f(r.get('roc_auc'))} | {f(r.get('ap'))} | {f(r.get('best_f1'))} "
                     f"| {f(r.get('best_f1_pa'))} | {f(r.get('event_recall'))} | {f(r.get('delay'), '.0f')} "
                     f"| {f(r.get('far'), '.4f')} | {f(r.get('fit_s'), '.1f')} |")
    for d, r in peers.items():
        lines.append(f"| nab:{d} (published) | {r['n_series']} | {r['roc_auc']:.3f} | {r['ap']:.3f} | | | | | | |")
    return "\n".join(lines)


def plot(ser: dict, curves: dict[str, tuple[np.ndarray, np.ndarray | None]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1 + len(curves), 1, figsize=(14, 2.2 * (1 + len(curves))), sharex=True)
    axes = np.atleast_1d(axes)
    x = np.arange(ser["n"])
    axes[0].plot(x, ser["values"], lw=0.6, color="k")
    axes[0].set_title(ser["key"], fontsize=9)
    for name, (s, flags), ax in zip(curves, curves.values(), axes[1:]):
        ax.plot(x, s, lw=0.6)
        if flags is not None and flags.any():
            ax.scatter(x[flags], s[flags], s=6, color="r", zorder=3, label="is_anomaly")
            ax.legend(loc="upper left", fontsize=7)
        ax.set_ylabel(name, fontsize=7)
    for ax in axes:
        ax.axvspan(0, ser["n_train"], color="0.85", lw=0)
        lab = np.flatnonzero(ser["labels"])
        if len(lab):
            starts = lab[np.r_[True, np.diff(lab) > 1]]
            ends = lab[np.r_[np.diff(lab) > 1, True]]
            for a, b in zip(starts, ends):
                ax.axvspan(a, b, color="orange", alpha=0.3, lw=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency: a 64-colour palette makes the file 3-4 times smaller

    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[1:8]))
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)} (default: all)")
    ap.add_argument("--window", default="64", help="comma-separated window widths W (default 64); "
                    "vae-anomaly also accepts 'auto'")
    ap.add_argument("--scores", default="neg-elbo", help=f"vae-windows score kinds, subset of {','.join(SCORES)} "
                    "(default neg-elbo; one fit serves all)")
    ap.add_argument("--options", default="default", help=f"vae-windows fit variants, subset of {','.join(OPTIONS)}")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--series", default="*", help="glob on category/name.csv (default: all 29 with windows)")
    ap.add_argument("--jobs", type=int, default=2, help="CLI fits run at a time (default 2)")
    ap.add_argument("--cli-root", type=Path, help="run the CLI from this snapshot of the repository "
                    "instead of the working tree (default: `python -m vae_anomaly.cli.main`, the installed package)")
    ap.add_argument("--contaminate", type=float, default=0.0,
                    help="vae-anomaly only: replace this share of the training points by ±6 std spikes, fitted "
                         "without and with --labels (default 0: clean)")
    ap.add_argument("--fit-args", default="[]", help="further `vae-anomaly fit` options of the vae-anomaly "
                    "method, a JSON list, e.g. [\"--seasons\", \"auto\"]")
    ap.add_argument("--slices", action="store_true",
                    help="vae-anomaly: also score each series one day a slice through score --state, check the "
                         "scores equal the one file's, and report the sliced flags")
    ap.add_argument("--png", type=Path, help="write one PNG per series (first seed) into this folder")
    ap.add_argument("--write", nargs="?", const=str(RESULT), default=None,
                    help=f"write the JSON results (default path {RESULT.relative_to(ROOT)})")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(methods) - set(METHODS):
        ap.error(f"unknown method(s): {set(methods) - set(METHODS)}")
    windows_arg = [w.strip() for w in args.window.split(",") if w.strip()]
    int_windows = [int(w) for w in windows_arg if w != "auto"]
    scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    opts = [o.strip() for o in args.options.split(",") if o.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if set(scores) - set(SCORES) or set(opts) - set(OPTIONS):
        ap.error("unknown --scores or --options entry")
    os.environ["OMP_NUM_THREADS"] = "1"
    global CLI_ROOT
    CLI_ROOT = args.cli_root.resolve() if args.cli_root else None

    t_start = time.perf_counter()
    all_windows = json.loads((DATA / "combined_windows.json").read_text())
    published = json.loads((DATA / "detectors_pointwise.json").read_text())
    keys = [k for k, v in all_windows.items() if v and fnmatch.fnmatch(k, args.series)]
    series = {k: load_series(k, all_windows[k]) for k in keys}
    print(f"{len(series)} series with anomaly windows; {sum(s['gaps'] > 0 for s in series.values())} with gaps "
          f"(rows treated as consecutive)", flush=True)

    per_series: dict[str, dict[str, dict]] = {k: {} for k in keys}
    curves: dict[str, dict] = {k: {} for k in keys}
    status: dict[str, dict] = {}
    knn_impl = None

    def record(key: str, variant: str, seed: int, score, flags, info: dict | None = None) -> None:
        r = evaluate(series[key], score, flags)
        if info:
            r.update({k: v for k, v in info.items()})
        per_series[key].setdefault(f"{variant} seed{seed}" if len(seeds) > 1 else variant, r)
        if seed == seeds[0] and variant.split(" ")[0] not in {c.split(" ")[0] for c in curves[key]}:
            curves[key][variant] = (np.asarray(score, float), None if flags is None else np.asarray(flags, bool))

    with tempfile.TemporaryDirectory(prefix="nab_") as tmp:
        tmp = Path(tmp)
        # baselines (in process, fast)
        for k, ser in series.items():
            for w in int_windows:
                X = window_matrix(ser["z"], w)
                Xtr = X[:ser["n_train"] - w + 1]
                for seed in seeds:
                    if "knn" in methods and seed == seeds[0]:
                        t0 = time.perf_counter()
                        s, knn_impl = knn_scores(Xtr, X)
                        record(k, f"knn W={w}", seed, expand(s, ser["n"], w), None,
                               {"fit_s": time.perf_counter() - t0})
                    if "iforest" in methods:
                        t0 = time.perf_counter()
                        s = iforest_scores(Xtr, X, seed)
                        record(k, f"iforest W={w}", seed, expand(s, ser["n"], w), None,
                               {"fit_s": time.perf_counter() - t0})
        if "knn" in methods or "iforest" in methods:
            print(f"baselines done, {time.perf_counter() - t_start:.0f} s", flush=True)

        # the product's --window path
        if "vae-anomaly" in methods:
            if not product_available():
                status["vae-anomaly"] = {"status": "not available",
                                         "reason": "`vae-anomaly fit --help` has no --window"}
                print("vae-anomaly: not available (`vae-anomaly fit --help` has no --window)", flush=True)
            else:
                variants = [(0.0, False)] if args.contaminate == 0 else [(args.contaminate, False),
                                                                         (args.contaminate, True)]
                jobs = [(k, w, seed, v) for k in keys for w in windows_arg for seed in seeds for v in variants]
                with ThreadPoolExecutor(args.jobs) as pool:
                    futs = {pool.submit(fit_product, series[k], w, seed, tmp, *v, slices=args.slices,
                                        fit_args=tuple(json.loads(args.fit_args))): (k, w, seed, v)
                            for k, w, seed, v in jobs}
                    for fut, (k, w, seed, (share, labelled)) in futs.items():
                        name = f"vae-anomaly W={w}" + (f" contaminated {share:g}" + (" labelled" if labelled else "")
                                                       if share else "")
                        try:
                            r = fut.result()
                            record(k, name, seed, r["score"], r["flags"], r["info"])
                            rr = evaluate(series[k], r["score"], r["flags"])
                            print(f"[{time.perf_counter() - t_start:.0f}s] {k} {name} s{seed}: ROC-AUC "
                                  f"{rr['roc_auc']:.3f} AP {rr['ap']:.3f}  fit {r['info']['fit_s']:.1f}s", flush=True)
                        except Exception as e:  # noqa: BLE001 -- one failure must not end the run
                            per_series[k][name] = {"error": str(e)}
                            print(f"{k} {name}: {e}", flush=True)

        # vae-windows: one fit per (series, W, options, seed), scored with every score kind
        if "vae-windows" in methods:
            jobs = [(k, w, o, seed) for w in int_windows for o in opts for seed in seeds for k in keys]
            done = 0
            with ThreadPoolExecutor(args.jobs) as pool:
                futs = {pool.submit(fit_vae_windows, series[k], w, o, seed, scores, tmp): (k, w, o, seed)
                        for k, w, o, seed in jobs}
                for fut, (k, w, o, seed) in futs.items():
                    done += 1
                    try:
                        res = fut.result()
                        for sc, r in res.items():
                            record(k, f"vae-windows W={w} {sc} {o}", seed, r["score"], r["flags"], r["info"])
                        first = res[scores[0]]
                        rr = per_series[k][f"vae-windows W={w} {scores[0]} {o}" + (f" seed{seed}" if len(seeds) > 1 else "")]
                        print(f"[{done}/{len(jobs)} {time.perf_counter() - t_start:.0f}s] {k} W={w} {o} s{seed}: "
                              f"ROC-AUC {rr['roc_auc']:.3f} AP {rr['ap']:.3f}  fit {first['info']['fit_s']:.1f}s "
                              f"cal {first['info'].get('calibration_rows')}", flush=True)
                    except Exception as e:  # noqa: BLE001
                        for sc in scores:
                            per_series[k][f"vae-windows W={w} {sc} {o}"] = {"error": str(e)}
                        print(f"{k} vae-windows W={w} {o}: {e}", flush=True)

        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            for k, ser in series.items():
                plot(ser, curves[k], args.png / (re.sub(r"[^A-Za-z0-9]+", "_", k.removesuffix(".csv")) + ".png"))
            print(f"wrote {len(series)} PNGs to {args.png}", flush=True)

    summary = {**status, **summarize(per_series)}
    peers = {}
    for d in sorted({d for k in keys for d in published.get(k, {})}):
        vals = np.array([published[k][d] for k in keys if d in published.get(k, {})])
        peers[d] = {"n_series": len(vals), "roc_auc": float(vals[:, 0].mean()), "ap": float(vals[:, 1].mean())}
    wall = time.perf_counter() - t_start

    # per-series comparisons: best-of counts among the vae-windows variants, and each vs knn / iforest
    vae_vars = [v for v in summary if v.startswith("vae-windows") and "n_series" in summary[v]]
    comparisons = {}
    if len(vae_vars) > 1:
        comparisons["best_of_vae_windows_roc_auc"] = best_counts(per_series, vae_vars)
        comparisons["best_of_vae_windows_ap"] = best_counts(per_series, vae_vars, "ap")
    product_vars = [v for v in summary if v.startswith("vae-anomaly W=") and "n_series" in summary[v]]
    for v in vae_vars + product_vars:
        for base in ("knn", "iforest"):
            w = re.search(r"W=(\d+)", v)[1]
            b = f"{base} W={w}"
            if b in summary:
                for metric in ("roc_auc", "ap"):
                    comparisons[f"{v} vs {b} ({metric} win/tie/loss)"] = wins(per_series, v, b, metric)
                    comparisons[f"{v} vs {b} ({metric} mean difference, Wilcoxon p)"] = paired(per_series, v, b,
                                                                                               metric)

    print()
    print(markdown(summary, peers))
    for k, v in comparisons.items():
        print(f"{k}: {v}")
    print(f"\nwall time {wall:.0f} s")

    if args.write:
        import onnxruntime

        path = Path(args.write)
        if not path.is_absolute():
            path = (ROOT / "benchmarks" / path) if path.parts[0] == "results" else (ROOT / path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/nab.py", *sys.argv[1:]]),
            **git_state(ROOT),
            "cli_root": str(CLI_ROOT or ROOT),
            "data": str(DATA.relative_to(ROOT.parent)),
            "protocol": "train on the first int(0.15 n) points (windows inside it), score every point, evaluate "
                        "after it; labels = points inside combined_windows; standardized with the training part; "
                        "score of t = score of the window ending at t",
            "knn": knn_impl, "windows": windows_arg, "scores": scores, "options": {o: OPTIONS[o] for o in opts},
            "seeds": seeds,
            "series": {k: {"n": s["n"], "n_train": s["n_train"], "step_s": s["step_s"], "gaps": s["gaps"],
                           "windows": s["n_windows_labelled"], "windows_in_test": len(s["segs"])}
                       for k, s in series.items()},
            "summary": summary, "published_pointwise": peers, "comparisons": comparisons,
            "per_series": per_series, "wall_s": wall,
            "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "OMP_NUM_THREADS": "1", "jobs": args.jobs, "loadavg_end": os.getloadavg(),
                            "numpy": np.__version__, "pandas": pd.__version__, "sklearn": sklearn.__version__,
                            "onnxruntime": onnxruntime.__version__},
        }, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n")
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
