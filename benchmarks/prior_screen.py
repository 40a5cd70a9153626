"""Screen latent priors for the scores on the same trained models (README, "How the defaults were chosen").

For each (dataset, seed): the benchmark's split, one default VAE trained with N(0, I) as the scores'
prior (``prior_max_rows=0``; the prior never changes training), then the test rows' negative ELBO
under each prior, from the same encoder, decoder and noise vectors, so that the differences are
the priors' alone:

* ``standard-normal``: N(0, I), closed-form KL (what the model was exported with);
* ``aggregate-posterior``: the mixture of all training rows' posteriors (the default up to 4,096 rows);
* ``sample-M``: the same from a seeded sample of M training rows;
* ``gmm-K``: a K-component full-covariance Gaussian mixture fitted by EM to one draw z ~ q(z|x_i)
  per training row (scikit-learn), ex post as in Ghosh et al., ICLR 2020, §4.

Prints one line per (dataset, seed) with each prior's ROC-AUC minus the standard-normal one's.

    python benchmarks/prior_screen.py ../shared/datasets --datasets 14_glass,6_cardio --seeds 1 \\
        --priors aggregate-posterior,sample-1024,gmm-64
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from vae_anomaly.evaluation.benchmark import find_datasets, split
from vae_anomaly.evaluation.datasets import load_labelled
from vae_anomaly.training.data import split_rows
from vae_anomaly.training.graph import aggregate_posterior
from vae_anomaly.training.scores import ScoreGraph
from vae_anomaly.training.train import TrainConfig, train


def gmm_prior(vae, xs: torch.Tensor, components: int, seed: int) -> torch.nn.Module:
    """A Gaussian mixture fitted to one posterior draw per row; called like a LatentMixture."""
    with torch.no_grad():
        mu, logvar = vae.encode(xs)
        z = vae.reparameterize(mu, logvar, torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed)))
    gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(z.double().numpy())
    return _GaussianMixture(gmm)


class _GaussianMixture(torch.nn.Module):
    """log p(z) of a fitted scikit-learn GaussianMixture (float64 inside scikit-learn)."""

    def __init__(self, gmm: GaussianMixture):
        super().__init__()
        self.gmm = gmm

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1]).double().numpy()
        return torch.as_tensor(self.gmm.score_samples(flat), dtype=torch.float32).reshape(z.shape[:-1])


def prior_module(name: str, vae, xs: torch.Tensor, seed: int):
    if name == "aggregate-posterior":
        return aggregate_posterior(vae, xs)
    if name.startswith("sample-"):
        m = int(name.split("-")[1])
        keep = np.sort(np.random.default_rng(seed).choice(xs.shape[0], min(m, xs.shape[0]), replace=False))
        return aggregate_posterior(vae, xs[torch.as_tensor(keep)])
    if name.startswith("gmm-"):
        return gmm_prior(vae, xs, min(int(name.split("-")[1]), max(1, xs.shape[0] // 5)), seed)
    raise SystemExit(f"--priors: unknown prior {name!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--datasets", default=None, help="comma-separated dataset names (default: all)")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--priors", default="aggregate-posterior,sample-2048,gmm-64")
    ap.add_argument("--max-rows", type=int, default=50_000)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    wanted = None if args.datasets is None else set(args.datasets.split(","))
    priors = args.priors.split(",")
    for name, path in find_datasets(args.data):
        if wanted is not None and name not in wanted:
            continue
        X, y = load_labelled(path)
        for seed in (int(s) for s in args.seeds.split(",")):
            tr, te = split(y, seed, args.max_rows)
            cfg = TrainConfig(seed=seed, prior_max_rows=0)
            result = train(X[tr], config=cfg)
            vae, eps = result.graph.vae, result.graph.eps
            rows, _ = split_rows(len(tr), cfg.val_fraction, cfg.seed)
            xs = vae.standardize(torch.as_tensor(X[tr][rows], dtype=torch.float32))
            x_te = torch.as_tensor(X[te], dtype=torch.float32)
            graphs = {"standard-normal": result.graph}
            graphs.update({p: ScoreGraph(vae, eps, prior_module(p, vae, xs, seed)).eval() for p in priors})
            auc = {}
            with torch.no_grad():
                for p, graph in graphs.items():
                    scores = torch.cat([graph(x_te[i : i + 64])[0] for i in range(0, len(x_te), 64)])
                    auc[p] = roc_auc_score(y[te], scores.double().numpy())
            base = auc["standard-normal"]
            print(f"{name} seed {seed}: standard-normal {base:.4f} "
                  + " ".join(f"{p} {auc[p] - base:+.4f}" for p in priors), flush=True)


if __name__ == "__main__":
    main()
