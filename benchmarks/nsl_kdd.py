"""NSL-KDD, mixed column types: the product's categorical likelihood beside one-hot baselines.

    python benchmarks/nsl_kdd.py                    # seeds 0,1,2; prints a markdown table
    python benchmarks/nsl_kdd.py --seeds 0,1,2 --write   # also writes benchmarks/results/nsl_kdd.json
    python benchmarks/nsl_kdd.py --methods vae-onehot,knn,iforest   # a subset

Data: ``../shared/datasets/nsl-kdd/KDDTrain+_20Percent.csv`` (25,192 rows: 38 numeric columns,
3 categorical ones -- protocol_type, service, flag -- and the labels ``attack`` and ``difficulty``).

Protocol, per seed S: the ``normal`` rows are split at random (numpy ``default_rng(S)``) into a
training half and a test half. TRAIN.csv holds the training normal rows with every column as
distributed (labels included, header kept); TEST.csv the test normal rows plus every attack row.
Every method sees the same rows; test labels (``attack != "normal"``) are used only for the metrics.

Methods (higher score = more anomalous for all):

* ``vae-anomaly`` -- the product on the raw CSV, categorical columns modelled by their own likelihood:
  ``vae-anomaly fit TRAIN.csv --exclude attack,difficulty -o m.onnx --seed S -q`` then
  ``vae-anomaly score TEST.csv -m m.onnx -o s.csv``. Reported "not available" while
  ``vae-anomaly fit --help`` does not offer ``--exclude``.
* ``knn`` (PyOD ``KNN()`` defaults: distance to the 5th neighbour; scikit-learn NearestNeighbors
  when PyOD is absent) and ``iforest`` (scikit-learn ``IsolationForest(random_state=S)``), on a
  ``ColumnTransformer`` -- OneHotEncoder(handle_unknown="ignore") on the 3 categorical columns,
  StandardScaler on the 38 numeric ones -- fitted on the training normal rows only.
* ``vae-onehot`` -- ablation: our VAE without the categorical likelihood, on that same
  ColumnTransformer output (dense float32 .npy): ``vae-anomaly fit train.npy -o ab.onnx --seed S -q``
  then ``vae-anomaly score test.npy -m ab.onnx -o ab.csv``.

Metrics: ROC-AUC and average precision (scikit-learn), mean and std over seeds; fit seconds
(baselines: preprocessing + fit in process; CLI methods: wall time of the ``fit`` command, so
including interpreter start-up, torch import and ONNX export) and scoring rows/s (baselines:
transform + score; CLI methods: wall time of the ``score`` command on all of TEST.csv).

The CLI is run from this working tree (``python -c`` bootstrap below), not from whatever
``vae-anomaly`` happens to be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from provenance import git_state, source_cli  # benchmarks/provenance.py, beside this script
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "nsl-kdd" / "KDDTrain+_20Percent.csv"
RESULT = ROOT / "benchmarks" / "results" / "nsl_kdd.json"
CATEGORICAL = ["protocol_type", "service", "flag"]
LABELS = ["attack", "difficulty"]
METHODS = ["vae-anomaly", "vae-onehot", "knn", "iforest"]



def cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``vae-anomaly ARGS`` from this working tree; (wall seconds, completed process)."""
    cmd, env = source_cli(ROOT, COLUMNS="200")
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc


def product_available() -> bool:
    """Whether ``vae-anomaly fit`` offers ``--exclude`` (the categorical CSV path needs it here)."""
    _, proc = cli("fit", "--help")
    return proc.returncode == 0 and "--exclude" in proc.stdout


def split(df: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices: a seeded random half of the normal rows; the other normals and every attack."""
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(df["attack"].to_numpy() == "normal"))
    half = len(normal) // 2
    attacks = np.flatnonzero(df["attack"].to_numpy() != "normal")
    return np.sort(normal[:half]), np.sort(np.concatenate([normal[half:], attacks]))


def preprocessor(numeric: list[str]) -> ColumnTransformer:
    """One-hot on the categorical columns, standardized numeric ones; dense output."""
    return ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                              ("num", StandardScaler(), numeric)], sparse_threshold=0.0)


def knn_detector():
    """PyOD's KNN with its defaults when installed (largest = distance to the 5th neighbour), else None."""
    try:
        from pyod.models.knn import KNN
    except ImportError:
        return None
    return KNN()


def knn(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Distance to the 5th training neighbour; (scores, fit seconds, score seconds)."""
    t0 = time.perf_counter()
    det = knn_detector()
    if det is None:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=5).fit(Xtr)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        return nn.kneighbors(Xte)[0][:, -1], t_fit, time.perf_counter() - t0
    det.fit(Xtr)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    return det.decision_function(Xte), t_fit, time.perf_counter() - t0


def iforest(Xtr: np.ndarray, Xte: np.ndarray, seed: int) -> tuple[np.ndarray, float, float]:
    """IsolationForest defaults, minus score_samples; (scores, fit seconds, score seconds)."""
    t0 = time.perf_counter()
    forest = IsolationForest(random_state=seed).fit(Xtr)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    return -forest.score_samples(Xte), t_fit, time.perf_counter() - t0


def read_cli_scores(path: Path, n: int) -> np.ndarray:
    """Scores from a ``vae-anomaly score`` CSV, in row order."""
    out = pd.read_csv(path).sort_values("row")
    if len(out) != n or not np.array_equal(out["row"].to_numpy(), np.arange(n)):
        raise RuntimeError(f"{path.name}: expected rows 0..{n - 1}, got {len(out)} rows")
    return out["score"].to_numpy(dtype=float)


def run_cli_method(tmp: Path, train: str, test: str, fit_extra: list[str], tag: str, seed: int,
                   n_test: int) -> tuple[np.ndarray, float, float]:
    """fit then score through the CLI; (scores, fit seconds, score seconds)."""
    model, scores = tmp / f"{tag}.onnx", tmp / f"{tag}.csv"
    t_fit, proc = cli("fit", str(tmp / train), *fit_extra, "-o", str(model), "--seed", str(seed), "-q")
    if proc.returncode != 0:
        raise RuntimeError(f"fit exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    t_score, proc = cli("score", str(tmp / test), "-m", str(model), "-o", str(scores))
    if proc.returncode != 0:
        raise RuntimeError(f"score exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return read_cli_scores(scores, n_test), t_fit, t_score


def run_seed(df: pd.DataFrame, numeric: list[str], seed: int, methods: set[str]) -> dict[str, dict]:
    """Every method on one seed's split; {method: record}."""
    tr, te = split(df, seed)
    records: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nsl_kdd_") as tmp:
        tmp = Path(tmp)
        df.iloc[tr].to_csv(tmp / "TRAIN.csv", index=False)
        df.iloc[te].to_csv(tmp / "TEST.csv", index=False)
        train = pd.read_csv(tmp / "TRAIN.csv")
        test = pd.read_csv(tmp / "TEST.csv")
        y = (test["attack"] != "normal").to_numpy().astype(int)
        n = len(test)

        def record(name: str, scores: np.ndarray, fit_s: float, score_s: float) -> None:
            records[name] = {"roc_auc": float(roc_auc_score(y, scores)),
                             "ap": float(average_precision_score(y, scores)),
                             "fit_s": fit_s, "score_rows_per_s": n / score_s}
            r = records[name]
            print(f"seed {seed} {name:12s} ROC-AUC {r['roc_auc']:.4f}  AP {r['ap']:.4f}  "
                  f"fit {fit_s:.1f} s  score {r['score_rows_per_s']:,.0f} rows/s", flush=True)

        # 1. the product: raw CSV, categorical likelihood.
        if "vae-anomaly" in methods:
            try:
                s, f, sc = run_cli_method(tmp, "TRAIN.csv", "TEST.csv", ["--exclude", ",".join(LABELS)],
                                          "m", seed, n)
                record("vae-anomaly", s, f, sc)
            except RuntimeError as e:
                records["vae-anomaly"] = {"error": str(e)}
                print(f"seed {seed} vae-anomaly  failed: {e}", flush=True)

        # 2. baselines on one-hot + standardized features, preprocessing fitted on training rows only.
        feats = CATEGORICAL + numeric
        t0 = time.perf_counter()
        pre = preprocessor(numeric).fit(train[feats])
        Xtr = pre.transform(train[feats]).astype(np.float32)
        t_pre_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        Xte = pre.transform(test[feats]).astype(np.float32)
        t_pre_score = time.perf_counter() - t0

        if "knn" in methods:
            s, t_fit, t_score = knn(Xtr, Xte)
            record("knn", s, t_pre_fit + t_fit, t_pre_score + t_score)
        if "iforest" in methods:
            s, t_fit, t_score = iforest(Xtr, Xte, seed)
            record("iforest", s, t_pre_fit + t_fit, t_pre_score + t_score)

        # 3. ablation: our VAE on the one-hot matrix (no categorical likelihood).
        if "vae-onehot" in methods:
            np.save(tmp / "train.npy", Xtr)
            np.save(tmp / "test.npy", Xte)
            try:
                s, f, sc = run_cli_method(tmp, "train.npy", "test.npy", [], "ab", seed, n)
                record("vae-onehot", s, f, sc)
            except RuntimeError as e:
                records["vae-onehot"] = {"error": str(e)}
                print(f"seed {seed} vae-onehot   failed: {e}", flush=True)

        records["_split"] = {"train_rows": len(train), "test_rows": n, "test_attacks": int(y.sum()),
                             "onehot_columns": int(Xtr.shape[1])}
    return records


def summarize(per_seed: dict[int, dict], methods: set[str], available: bool) -> dict[str, dict]:
    """Mean and std over seeds per method (population std, ddof=0)."""
    out = {}
    for m in METHODS:
        if m not in methods:
            out[m] = {"status": "not run", "reason": "left out by --methods"}
            continue
        if m == "vae-anomaly" and not available:
            out[m] = {"status": "not available", "reason": "`vae-anomaly fit --help` has no --exclude"}
            continue
        recs = [r[m] for r in per_seed.values() if m in r]
        if not recs or any("error" in r for r in recs):
            out[m] = {"status": "failed", "errors": [r.get("error") for r in recs]}
            continue
        out[m] = {"status": "ok"}
        for k in ("roc_auc", "ap", "fit_s", "score_rows_per_s"):
            v = np.array([r[k] for r in recs])
            out[m][k] = {"mean": float(v.mean()), "std": float(v.std())}
    return out


def markdown(summary: dict[str, dict], n_seeds: int) -> str:
    lines = [f"| method | ROC-AUC (mean ± std, {n_seeds} seeds) | AP | fit s | score rows/s |",
             "|---|---:|---:|---:|---:|"]
    for m, s in summary.items():
        if s["status"] != "ok":
            lines.append(f"| {m} | {s['status']} | | | |")
            continue
        lines.append(f"| {m} | {s['roc_auc']['mean']:.4f} ± {s['roc_auc']['std']:.4f} "
                     f"| {s['ap']['mean']:.4f} ± {s['ap']['std']:.4f} | {s['fit_s']['mean']:.1f} "
                     f"| {s['score_rows_per_s']['mean']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    ap.add_argument("--write", action="store_true", help=f"write {RESULT.relative_to(ROOT)}")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    if methods - set(METHODS):
        ap.error(f"unknown method(s): {', '.join(sorted(methods - set(METHODS)))}")

    t_start = time.perf_counter()
    df = pd.read_csv(DATA)
    numeric = [c for c in df.columns if c not in CATEGORICAL + LABELS]
    assert len(numeric) == 38, numeric
    available = "vae-anomaly" in methods and product_available()
    if "vae-anomaly" in methods and not available:
        print("vae-anomaly (categorical CSV): not available -- `vae-anomaly fit --help` has no --exclude",
              flush=True)

    per_seed = {s: run_seed(df, numeric, s, methods - ({"vae-anomaly"} if not available else set()))
                for s in seeds}
    summary = summarize(per_seed, methods, available)
    wall = time.perf_counter() - t_start
    table = markdown(summary, len(seeds))
    print()
    print(table)
    print(f"\nwall time {wall:.0f} s")

    if args.write:
        import onnxruntime

        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/nsl_kdd.py", *sys.argv[1:]]),
            **git_state(ROOT),
            "data": str(DATA.relative_to(ROOT.parent)),
            "protocol": "per seed: random half of the normal rows to fit; other normals + all attacks to score; "
                        "baselines on OneHotEncoder(3 categorical) + StandardScaler(38 numeric) fitted on the "
                        "training rows; vae-onehot = the VAE on that matrix; vae-anomaly = the CLI on the raw CSV",
            "knn": "pyod.models.knn.KNN()" if knn_detector() is not None else "sklearn NearestNeighbors(5), 5th distance",
            "seeds": seeds,
            "summary": summary,
            "per_seed": {str(k): v for k, v in per_seed.items()},
            "wall_s": wall,
            "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                            "numpy": np.__version__, "pandas": pd.__version__, "sklearn": sklearn.__version__,
                            "onnxruntime": onnxruntime.__version__},
        }, indent=2) + "\n")
        print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
