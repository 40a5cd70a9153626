#!/usr/bin/env bash
# Reproduces the published ROC-AUC table (README, "Benchmark") on the shared ADBench/ODDS datasets:
# 32 datasets x 3 seeds x (3 VAE scores from one fitted model + 4 scikit-learn baselines).
# Run from the repository root with ../shared beside it; --jobs 2 = one (dataset, seed) per core. Writes benchmarks/results/benchmark.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
vae-anomaly benchmark ../shared/datasets \
  --methods vae,vae-recon-prob,vae-iwae,iforest,knn,lof,ocsvm \
  --seeds 3 --max-rows 50000 --jobs 2 --out-dir benchmarks/results
