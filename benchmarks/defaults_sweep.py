"""How the defaults were chosen: ROC-AUC of VAE variants beside IsolationForest and KNN.

One seed, datasets subsampled to --max-rows (3,000 by default, to keep a sweep under ~10 minutes
per variant on 2 cores), the benchmark's split (vae_anomaly.evaluation.benchmark.split). Each variant is a
JSON object of TrainConfig fields; the first line of output per dataset is the baselines.

    python benchmarks/defaults_sweep.py ../shared/datasets \\
        --variant '{"decoder_variance": "row"}' --variant '{}' --variant '{"min_variance": 0.1}'
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vae_anomaly.evaluation.benchmark import Baseline, find_datasets, split
from vae_anomaly.evaluation.datasets import load_labelled
from vae_anomaly.training.train import TrainConfig, train

SUBSET = ("1_ALOI,6_cardio,14_glass,18_Ionosphere,20_letter,22_magic.gamma,24_mnist,26_optdigits,29_Pima,"
          "30_satellite,31_satimage-2,33_skin,38_thyroid,41_Waveform,45_wine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--variant", action="append", default=None, help="JSON of TrainConfig fields")
    ap.add_argument("--datasets", default=SUBSET)
    ap.add_argument("--max-rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    variants = [json.loads(v) for v in (args.variant or ["{}"])]
    wanted = set(args.datasets.split(","))
    datasets = [(n, p) for n, p in find_datasets(args.data) if n in wanted]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    names = ["iforest", "knn"] + [json.dumps(v) for v in variants]
    print("| dataset | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    table, seconds = [], np.zeros(len(variants))
    for name, path in datasets:
        X, y = load_labelled(path)
        tr, te = split(y, args.seed, args.max_rows)
        row = [float(roc_auc_score(y[te], Baseline(m, args.seed).fit(X[tr]).score(X[te])))
               for m in ("iforest", "knn")]
        for i, v in enumerate(variants):
            t = time.perf_counter()
            graph = train(X[tr], config=TrainConfig(seed=args.seed, **v)).graph
            seconds[i] += time.perf_counter() - t
            with torch.no_grad():
                s = graph(torch.as_tensor(X[te], dtype=torch.float32))[0].numpy()
            row.append(float(roc_auc_score(y[te], s)))
        table.append(row)
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in row) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"**{a:.3f}**" for a in np.mean(table, axis=0)) + " |")
    print("\nfit seconds per variant (sum over datasets):", ", ".join(f"{s:.0f}" for s in seconds))


if __name__ == "__main__":
    main()
