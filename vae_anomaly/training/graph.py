"""The exported score graph: the trained VAE, the L fixed noise vectors and the scores' latent prior.

A model with at most ``TrainConfig.prior_max_rows`` training rows scores with the training rows'
aggregate posterior as the latent prior (:func:`aggregate_posterior`); above that, and for a
conditional VAE, the training prior (N(0, I), or p(z|c)).
"""

from __future__ import annotations

import torch

from .loop import full_float32
from .model import VAE
from .scores import LatentMixture, ScoreGraph


@torch.no_grad()
def aggregate_posterior(vae: VAE, xs: torch.Tensor, chunk: int = 8192) -> LatentMixture:
    """The scores' latent prior: the aggregate posterior of the training rows.

    The ELBO's best prior for a trained encoder is its aggregate posterior,
    q(z) = (1/N) Σ_i q(z|x_i) over the training rows (Hoffman & Johnson 2016, "ELBO surgery: yet
    another way to carve up the variational evidence lower bound", NIPS Workshop on Advances in
    Approximate Bayesian Inference, §2; Tomczak & Welling 2018, "VAE with a VampPrior", AISTATS,
    eq. 7). N(0, I) only approximates it: where the training rows' posteriors leave a gap, a row
    the encoder maps there pays little KL under N(0, I), and much under q(z). This is that mixture
    of the N rows' Gaussian posteriors N(μ(x_i), diag σ²(x_i)), with equal weights.

    Parameters
    ----------
    vae : the trained VAE (eval mode).
    xs : (N, d) float32 standardized training rows, on the VAE's device (with NaN for the missing
        values of a masked model, which the encoder sees as 0).

    Returns
    -------
    LatentMixture with N components, on the CPU (the encoder runs in full float32, no TF32).
    """
    with full_float32():
        chunks = [xs[start : start + chunk] for start in range(0, xs.shape[0], chunk)]
        if vae.arch.masked:  # the rows the encoder sees: a missing value (NaN) as 0
            chunks = [vae.observed(c)[0] for c in chunks]
        parts = [vae.encode(c) for c in chunks]
    mu = torch.cat([p[0] for p in parts]).double().cpu()
    var = torch.exp(torch.cat([p[1] for p in parts]).double().cpu())
    return LatentMixture(mu, var)


def build_score_graph(vae: VAE, eps: torch.Tensor, xt: torch.Tensor, *, prior_max_rows: int,
                      conditional: bool) -> tuple[ScoreGraph, dict]:
    """The exported ScoreGraph (on the CPU, eval mode) and its ``latent_prior`` metadata entry.

    Parameters
    ----------
    vae : the trained VAE, eval mode, holding its best state.
    eps : (L, k) the fixed noise vectors of the scores.
    xt : (N, d) standardized training rows, on the VAE's device.
    prior_max_rows : the aggregate posterior is the prior when N <= this (and not ``conditional``).
    """
    n = int(xt.shape[0])
    prior, info = None, {"kind": "conditional-normal" if conditional else "standard-normal"}
    if n <= prior_max_rows and not conditional:
        prior = aggregate_posterior(vae, xt)
        info = {"kind": "aggregate-posterior", "components": n}
    return ScoreGraph(vae.cpu(), eps, prior).eval(), info
