"""The fit loop: AdamW (:class:`~vae_anomaly.training.optim.FlatAdamW`) on the negative ELBO, early
stopping on the validation negative ELBO, checkpoints every few epochs, resume from one.

The data live on the device as one tensor sliced per batch (no DataLoader); the training loss is
summed on the device, with no host sync per step. The best state by the validation criterion
(the exported graph's negative ELBO, under the training prior N(0, I)) is loaded back into the model at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import TrainingError
from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .config import ProgressCallback, TrainConfig, auto_epochs
from .model import VAE
from .optim import FlatAdamW
from .scores import ScoreGraph, training_loss


@dataclass
class LoopOutcome:
    """How the fit loop ended: the best validation criterion and its epoch, epochs run, seconds."""

    best: float
    best_epoch: int
    epochs_run: int
    max_epochs: int
    seconds: float
    first_epoch: int


@contextlib.contextmanager
def full_float32():
    """Float32 matmuls and convolutions in IEEE precision, without TF32, inside the block.

    On CUDA, cuDNN convolutions default to TF32 (10 bits of mantissa) and a user may have allowed
    it for matmuls; the early-stopping criterion and the scores' latent prior must be computed as
    the exported float32 graph computes them. Restores the previous settings on exit (a no-op on
    the CPU, which has no TF32).
    """
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    saved = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "ieee"
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


@torch.no_grad()
def mean_neg_elbo(graph: ScoreGraph, x: torch.Tensor, c: torch.Tensor | None, chunk: int = 8192) -> float:
    """Mean negative ELBO (nats) of rows ``x`` (float32, (n, d), raw scale) under ``graph``, in
    chunks, in full float32 (:func:`full_float32`)."""
    total = 0.0
    with full_float32():
        for start in range(0, x.shape[0], chunk):
            cc = None if c is None else c[start : start + chunk]
            total += float(graph.neg_elbo(x[start : start + chunk], cc).sum())
    return total / x.shape[0]


def fit_loop(vae: VAE, cfg: TrainConfig, *, xt: torch.Tensor, ct: torch.Tensor | None, xv: torch.Tensor,
             cv: torch.Tensor | None, val_graph: ScoreGraph, gen: torch.Generator, device: torch.device,
             bf16: bool, fingerprint: str, state: dict | None = None, progress: ProgressCallback | None = None,
             checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 10) -> LoopOutcome:
    """Train ``vae`` in place and leave it holding its best state (eval mode).

    Parameters
    ----------
    xt, ct : standardized training rows (n, d) and their conditions, on ``device``.
    xv, cv : raw validation rows and their encoded conditions, on ``device``.
    val_graph : the early-stopping criterion's ScoreGraph (its negative ELBO, :meth:`ScoreGraph.neg_elbo`).
    gen : the seeded generator of the batch order.
    bf16 : bf16 autocast of the training forward pass.
    fingerprint : the data's SHA-256, stored in checkpoints.
    state : a loaded checkpoint to resume from (model, optimizer, best state, RNG states), or None.

    Raises
    ------
    TrainingError : the training loss or the validation negative ELBO became NaN or infinite.
    """
    step_loss = torch.compile(training_loss) if cfg.compile else training_loss
    n = xt.shape[0]
    missing = bool(vae.arch.masked and torch.isnan(xt).any())  # no NaN: the mask is all ones, skip it
    max_epochs = cfg.epochs if cfg.epochs is not None else auto_epochs(n, cfg)
    patience = cfg.patience if cfg.patience is not None else max(10, max_epochs // 4)
    opt = FlatAdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    best, best_epoch, best_state, first_epoch = math.inf, 0, None, 1
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best, best_epoch, best_state = state["best"], state["best_epoch"], state["best_state"]
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:  # the training noise ε is drawn on the device
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        gen.set_state(state["batch_rng"])
        first_epoch = state["epoch"] + 1
    t0 = time.perf_counter()
    epoch = first_epoch - 1
    for epoch in range(first_epoch, max_epochs + 1):
        vae.train()
        beta = cfg.beta * (min(1.0, epoch / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0)
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            batch = xt[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_loss(vae, batch, beta, None if ct is None else ct[idx], cfg.free_bits, missing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach().float() * batch.shape[0]
        total = float(total)
        if not math.isfinite(total):
            raise TrainingError(
                f"training loss became {total} in epoch {epoch}; no model was written. "
                "Check the data for extreme values or lower the learning rate."
            )
        vae.eval()
        val = mean_neg_elbo(val_graph, xv, cv)
        if not math.isfinite(val):
            raise TrainingError(
                f"validation negative ELBO became {val} at epoch {epoch}; no model was written. "
                "Check the validation rows for extreme values."
            )
        if val < best:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
        if progress is not None:
            progress(epoch, max_epochs, total / n, val)
        if checkpoint is not None and epoch % checkpoint_every == 0:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "config": json.dumps(asdict(cfg)),
                "data_sha256": fingerprint, "categories": json.dumps(list(vae.arch.categories)),
                **({"masked": "true"} if vae.arch.masked else {}),
                "model": {k: v.cpu() for k, v in vae.state_dict().items()},
                "optimizer": opt.state_dict(), "best": best, "best_epoch": best_epoch,
                "best_state": {k: v.cpu() for k, v in best_state.items()},
                "torch_rng": torch.get_rng_state(), "batch_rng": gen.get_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            })
        if epoch - best_epoch >= patience:
            break
    vae.load_state_dict(best_state)
    vae.eval()
    return LoopOutcome(best=float(best), best_epoch=int(best_epoch), epochs_run=int(epoch),
                       max_epochs=int(max_epochs), seconds=time.perf_counter() - t0, first_epoch=first_epoch)
