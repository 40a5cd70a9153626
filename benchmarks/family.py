"""The VAE family, measured: conv vs MLP VAE vs KNN on images, and the training options' effect.

1. One-vs-rest on scikit-learn's bundled 8x8 digits: for each digit, train on a seeded random half
   of its images, test on the other half (normal) plus every image of the other nine digits
   (anomalies); ROC-AUC of the convolutional VAE (``--arch conv``, the default for images), the
   MLP VAE on the flattened pixels (``--arch mlp``) and KNN (distance to the 5th nearest training
   row, standardized pixels), each fitted on the same rows.
2. The training options ``--beta``, ``--kl-warmup`` and ``--free-bits`` against the default, on the
   bundled tabular datasets (benchmark protocol: train on a seeded random 50% of the normal rows,
   test on the other normals + all anomalies), ROC-AUC of the default score (negative ELBO).

    python benchmarks/family.py [--seeds 1] [--part digits|options|all]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from vae_anomaly import Scorer
from vae_anomaly.evaluation.benchmark import Baseline
from vae_anomaly.evaluation.datasets import (
    BUNDLED,
    bundled_path,
    load_labelled,
    semi_supervised_split,
)
from vae_anomaly.training.export import build_model
from vae_anomaly.training.train import TrainConfig, train

OPTIONS = {
    "default (β 1)": {},
    "β 0.5": {"beta": 0.5},
    "β 2": {"beta": 2.0},
    "KL warm-up 20 epochs": {"kl_warmup": 20},
    "free bits 0.1": {"free_bits": 0.1},
    "free bits 0.5": {"free_bits": 0.5},
}


def vae_auc(X_tr, X_te, y_te, seed: int, **options) -> tuple[float, float]:
    """ROC-AUC of the default score and fit seconds of a VAE trained with ``options``."""
    t = time.perf_counter()
    data, _ = build_model(train(X_tr, config=TrainConfig(seed=seed, **options)))
    fit = time.perf_counter() - t
    return roc_auc_score(y_te, Scorer.from_bytes(data).score_samples(X_te)), fit


def digits(seeds: int) -> None:
    d = load_digits()
    images, target = d.images.astype(np.float32), d.target
    print("\n| normal digit | conv VAE | MLP VAE | KNN | conv fit s | MLP fit s |\n|---|---:|---:|---:|---:|---:|")
    rows = []
    for digit in range(10):
        res = {"conv": [], "mlp": [], "knn": [], "conv_s": [], "mlp_s": []}
        for seed in range(seeds):
            own = np.flatnonzero(target == digit)
            tr = np.sort(np.random.default_rng(seed).permutation(own)[: len(own) // 2])
            te = np.setdiff1d(np.arange(len(target)), tr)
            y = (target[te] != digit).astype(int)
            for arch in ("conv", "mlp"):
                auc, fit = vae_auc(images[tr], images[te], y, seed, arch=arch)
                res[arch].append(auc)
                res[f"{arch}_s"].append(fit)
            flat = images.reshape(len(images), -1)
            res["knn"].append(roc_auc_score(y, Baseline("knn", seed).fit(flat[tr]).score(flat[te])))
        means = {k: float(np.mean(v)) for k, v in res.items()}
        rows.append(means)
        print(f"| {digit} | {means['conv']:.4f} | {means['mlp']:.4f} | {means['knn']:.4f} | "
              f"{means['conv_s']:.1f} | {means['mlp_s']:.1f} |", flush=True)
    mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    print(f"| **mean** | **{mean['conv']:.4f}** | **{mean['mlp']:.4f}** | **{mean['knn']:.4f}** | "
          f"{mean['conv_s']:.1f} | {mean['mlp_s']:.1f} |")


def options(seeds: int) -> None:
    data = {name: load_labelled(bundled_path(name)) for name in BUNDLED}
    print(f"\n| option | {' | '.join(BUNDLED)} | mean | fit s (mean) |\n|---|{'---:|' * (len(BUNDLED) + 2)}")
    for label, opts in OPTIONS.items():
        aucs, fits = [], []
        for name in BUNDLED:
            X, y = data[name]
            per_seed = []
            for seed in range(seeds):
                tr, te = semi_supervised_split(y, seed)
                auc, fit = vae_auc(X[tr], X[te], y[te], seed, **opts)
                per_seed.append(auc)
                fits.append(fit)
            aucs.append(float(np.mean(per_seed)))
        print(f"| {label} | {' | '.join(f'{a:.4f}' for a in aucs)} | {np.mean(aucs):.4f} | {np.mean(fits):.1f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--part", choices=("digits", "options", "all"), default="all")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # small calibration sets warn that alpha=0.01 cannot flag
    t = time.perf_counter()
    if args.part in ("digits", "all"):
        digits(args.seeds)
    if args.part in ("options", "all"):
        options(args.seeds)
    print(f"\n{args.seeds} seed(s), {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
