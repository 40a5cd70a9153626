"""Per bundled dataset: ROC-AUC of each VAE score beside IsolationForest, fit seconds, scoring rows/s.

Protocol: a seeded random 50% of the normal rows to train on (the VAE holds 20% of those out for
early stopping and calibration); test = the other normals + all anomalies. IsolationForest
(scikit-learn defaults) is fitted on the same standardized training rows. Scoring speed is
measured on the test rows tiled to at least 200,000 rows, for the VAE Scorer (onnxruntime) and for
IsolationForest.score_samples, in the same run on the same machine.

    python benchmarks/bundled.py [--seeds 3] [--datasets cardio,thyroid,breastw,ionosphere]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from vae_anomaly import Scorer
from vae_anomaly.evaluation.datasets import BUNDLED, bundled_path, load_labelled, semi_supervised_split
from vae_anomaly.training.export import export_model
from vae_anomaly.training.train import TrainConfig, train


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
    print("| dataset | seeds | neg-elbo | recon-prob | iwae | IsolationForest | FAR@auto | fit s | VAE rows/s | IForest rows/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
                scaler = StandardScaler().fit(X[tr])
                forest = IsolationForest(random_state=seed).fit(scaler.transform(X[tr]))
                auc.setdefault("iforest", []).append(
                    roc_auc_score(y[te], -forest.score_samples(scaler.transform(X[te]))))
                big = np.tile(X[te], (int(np.ceil(200_000 / len(te))), 1)).astype(np.float32)
                speed_vae.append(rows_per_second(scorer.score_samples, big))
                speed_if.append(rows_per_second(lambda a: forest.score_samples(scaler.transform(a)), big))
            m = {k: f"{np.mean(v):.4f}" for k, v in auc.items()}
            print(f"| {name} | {args.seeds} | {m['neg-elbo']} | {m['recon-prob']} | {m['iwae']} | {m['iforest']} | "
                  f"{np.mean(fars):.4f} | {np.mean(fits):.1f} | {np.mean(speed_vae):,.0f} | {np.mean(speed_if):,.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
