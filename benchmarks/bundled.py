"""Per bundled dataset: ROC-AUC of each VAE score beside IsolationForest and KNN, fit seconds, scoring rows/s.

Protocol: a seeded random 50% of the normal rows to train on (the VAE holds 20% of those out for
early stopping and calibration); test = the other normals + all anomalies. IsolationForest
(scikit-learn defaults) and KNN (distance to the 5th nearest training row) are fitted on the same
standardized training rows (``Baseline`` of vae_anomaly.evaluation.benchmark). Scoring speed is
measured on the test rows tiled to at least 200,000 rows, for the VAE Scorer (onnxruntime) and for
IsolationForest.score_samples, in the same run on the same machine.

    python benchmarks/bundled.py [--seeds 3] [--datasets cardio,letter]   # default: every bundled dataset

The bundled datasets (vae_anomaly/data/README.md says how they were chosen) are
hepatitis, wine, vertebral, ionosphere, breastw, letter, cardio, spambase and thyroid; the last line of
the table is the mean over the datasets run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from vae_anomaly import Scorer
from vae_anomaly.evaluation.benchmark import Baseline
from vae_anomaly.evaluation.datasets import (
    BUNDLED,
    bundled_path,
    load_labelled,
    semi_supervised_split,
)
from vae_anomaly.training.config import TrainConfig
from vae_anomaly.training.export import export_model
from vae_anomaly.training.train import train


def rows_per_second(fn, X: np.ndarray) -> float:
    fn(X[:1000])  # warm-up
    t = time.perf_counter()
    fn(X)
    return len(X) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", default=",".join(BUNDLED))
    args = ap.parse_args()
    print("| dataset | seeds | neg-elbo | recon-prob | iwae | IsolationForest | KNN | FAR@auto | fit s | VAE rows/s "
          "| IForest rows/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    means: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            X, y = load_labelled(bundled_path(name))
            auc: dict[str, list[float]] = {}
            fars, fits, speed_vae, speed_if = [], [], [], []
            for seed in range(args.seeds):
                tr, te = semi_supervised_split(y, seed)
                t = time.perf_counter()
                result = train(X[tr], config=TrainConfig(seed=seed))
                path = Path(tmp) / f"{name}-{seed}.onnx"
                export_model(result, path)
                fits.append(time.perf_counter() - t)
                scorer = Scorer(path)
                for s in scorer.score_names:
                    auc.setdefault(s, []).append(roc_auc_score(y[te], scorer.score_samples(X[te], score=s)))
                fars.append(scorer.predict(X[te]).is_anomaly[y[te] == 0].mean())
                baselines = {m: Baseline(m, seed).fit(X[tr]) for m in ("iforest", "knn")}
                for m, det in baselines.items():
                    auc.setdefault(m, []).append(roc_auc_score(y[te], det.score(X[te])))
                big = np.tile(X[te], (int(np.ceil(200_000 / len(te))), 1)).astype(np.float32)
                speed_vae.append(rows_per_second(scorer.score_samples, big))
                speed_if.append(rows_per_second(baselines["iforest"].score, big))
            row = [*(np.mean(auc[k]) for k in ("neg-elbo", "recon-prob", "iwae", "iforest", "knn")), np.mean(fars),
                   np.mean(fits), np.mean(speed_vae), np.mean(speed_if)]
            means.append(row)
            print(f"| {name} | {args.seeds} | " + " | ".join(f"{v:.4f}" for v in row[:6])
                  + f" | {row[6]:.1f} | {row[7]:,.0f} | {row[8]:,.0f} |", flush=True)
    m = np.mean(means, axis=0)
    print(f"| mean | {args.seeds} | " + " | ".join(f"{v:.4f}" for v in m[:6]) + f" | {m[6]:.1f} | {m[7]:,.0f} | {m[8]:,.0f} |")


if __name__ == "__main__":
    main()
