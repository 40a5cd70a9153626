"""Scoring cost of the aggregate-posterior latent prior, beside the same model scored with N(0, I).

A model fitted on at most ``TrainConfig.prior_max_rows`` (256) training rows scores with the
aggregate posterior of its N training rows as the latent prior: N Gaussian terms per row (in
float64) on top of the encoder and the decoder pass. For each N, one VAE is trained (random rows,
--features features, the default architecture, 3 epochs: the cost does not depend on the weights)
and exported twice, with the aggregate posterior (``prior_max_rows=N``) and with N(0, I)
(``prior_max_rows=0``; training is identical, the prior is built after it); both are timed through
the Scorer on the same rows, the best of 5. The default 21 features are the width of
``bench_speed.py``'s cardio case, where the prior's share of the work is largest.

    python benchmarks/bench_prior.py [--rows 50000] [--features 21] [--train-rows 128,256,512,1024]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
from bench_speed import rate

from vae_anomaly import Scorer
from vae_anomaly.training.export import export_model
from vae_anomaly.training.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000, help="rows scored")
    ap.add_argument("--features", type=int, default=21)
    ap.add_argument("--train-rows", default="128,256,512,1024", help="training rows N (after the 20%% hold-out)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.features), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp())
    print("| training rows N | latent k | Scorer rows/s, prior N(0, I) | Scorer rows/s, aggregate posterior "
          "| ratio |\n|---:|---:|---:|---:|---:|")
    for n_train in (int(v) for v in args.train_rows.split(",")):
        fit_rows = rng.standard_normal((n_train * 5 // 4, args.features), dtype=np.float32)
        rates = []
        for prior_max_rows in (0, n_train):
            result = train(fit_rows, config=TrainConfig(epochs=3, seed=0, device="cpu",
                                                         prior_max_rows=prior_max_rows))
            assert result.summary["n_train"] == n_train, result.summary["n_train"]
            export_model(result, tmp / "model.onnx")
            scorer = Scorer(tmp / "model.onnx")
            rates.append(rate(lambda: scorer.score_samples(X), len(X), 5))
        print(f"| {n_train:,} | {result.graph.vae.arch.latent_dim} | {rates[0]:,.0f} | {rates[1]:,.0f} | "
              f"{rates[1] / rates[0]:.2f} |")


if __name__ == "__main__":
    main()
