"""Fit time of the default VAE on whole datasets (no row cap), where the step cap sets the budget.

The benchmark's split (seeded random 50% of the normal rows for training, the rest and every
anomaly for testing) without its 50,000-row subsample; `train` with the defaults on --threads
threads; prints the epochs, the seconds, the seconds per epoch (so the cost of an uncapped budget
of min_epochs is visible) and the test ROC-AUC of the negative ELBO (higher = more anomalous).

    python benchmarks/fit_large.py ../shared/datasets/16_http.npz ../shared/datasets/10_cover.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vae_anomaly.evaluation.benchmark import split
from vae_anomaly.evaluation.datasets import load_labelled
from vae_anomaly.training.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", help=".npz datasets with X and y")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.data:
        X, y = load_labelled(Path(path))
        tr, te = split(y, args.seed, len(y))
        ends: list[float] = []
        result = train(X[tr], config=TrainConfig(seed=args.seed), progress=lambda *_: ends.append(time.perf_counter()))
        s = result.summary
        x_test = torch.as_tensor(X[te], dtype=torch.float32)
        with torch.no_grad():
            scores = np.concatenate([result.graph(x_test[i:i + 65536])[0].numpy() for i in range(0, len(te), 65536)])
        per_epoch = float(np.diff(ends).mean()) if len(ends) > 1 else s["seconds"]
        print(json.dumps({"dataset": Path(path).stem, "rows": len(X), "n_train": s["n_train"],
                          "epochs_run": s["epochs_run"], "max_epochs": s["max_epochs"], "best_epoch": s["best_epoch"],
                          "fit_seconds": s["seconds"], "seconds_per_epoch": round(per_epoch, 2),
                          "roc_auc": round(float(roc_auc_score(y[te], scores)), 4)}), flush=True)


if __name__ == "__main__":
    main()
