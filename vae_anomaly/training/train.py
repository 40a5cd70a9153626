"""Training: split, standardize, fit the VAE with early stopping on validation negative ELBO, then
build the latent prior of the scores.

The data live on the device as one tensor sliced per batch (no DataLoader). The best state by
validation negative ELBO (computed with the first ``val_samples`` of the fixed noise vectors the
exported graph uses, under the training prior N(0, I)) is kept. The exported scores then use
the training rows' aggregate posterior as the latent prior when there are at most
``TrainConfig.prior_max_rows`` of them (:func:`aggregate_posterior`), else N(0, I).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..deploy import conditions
from ..errors import InputValidationError, ModelArtifactError, TrainingError
from ..deploy.io import atomic_write
from .model import VAE, Architecture, default_architecture
from .scores import LatentMixture, ScoreGraph, training_loss
from ..deploy.validation import check_array, flatten_rows

#: the fewest validation (calibration) rows fit accepts
MIN_CALIBRATION_ROWS = 5


@dataclass
class TrainConfig:
    """Training settings; defaults were measured on ../shared/datasets (README).

    Attributes
    ----------
    epochs : maximum epochs; None = auto, enough epochs for about ``target_steps`` gradient steps
        (at least ``min_epochs``, at most 2000, and no more than needed to pass ``max_steps``).
    latent_dim : latent size k; None = ceil(d/4) within [2, 16].
    hidden : widths of the encoder's hidden layers, e.g. (256, 256, 256) (the decoder mirrors
        them); None = the default rule of :func:`~vae_anomaly.training.model.default_architecture`.
    batch_size : rows per gradient step.
    lr : Adam learning rate.
    weight_decay : AdamW decoupled weight decay.
    beta : weight of the KL term (β-VAE, Higgins et al. 2017); 1 = the ELBO.
    kl_warmup : epochs over which β rises linearly from 0 (Bowman et al. 2016); 0 = off.
    free_bits : λ nats per latent dimension below which its batch-mean KL is not penalized
        (Kingma et al. 2016); 0 = off.
    arch : "auto" (convolutional for image input (n, H, W) or (n, C, H, W), else MLP), "mlp"
        (images are flattened) or "conv".
    patience : epochs without a better validation loss before stopping; None = auto (a quarter of
        the epochs, at least 10).
    val_fraction : share of the rows held out for early stopping and calibration.
    n_samples : L, latent samples per row in the scores.
    val_samples : latent samples per validation row in the early-stopping criterion: the first
        ``val_samples`` of the L fixed noise vectors of the scores (at most L). Validation runs
        every epoch; 4 of 16 samples cut its cost, the decoder over n_val·L rows, by 4x (README,
        "How the defaults were chosen").
    seed : seeds the split, the initialization, the batches and the score noise.
    device : "auto" (CUDA when available), "cpu" or "cuda".
    min_variance : floor of the decoder variance σ_x² on the standardized scale.
    decoder_variance : "feature" (one learned variance per feature) or "row" (predicted from z).
    precision : "auto" (bf16 autocast on CUDA, float32 on the CPU), "fp32", or "bf16" (autocast
        of the training forward pass on either device). Validation, early stopping and the exported
        graph are always float32.
    compile : run the training step through ``torch.compile`` (pays a one-off compile, tens of
        seconds, for faster steps on large data; needs a C++ compiler on the CPU).
    prior_max_rows : the exported scores' latent prior is the aggregate posterior of the training
        rows (:func:`aggregate_posterior`, a mixture of their N posteriors q(z|x_i)) when N is at
        most this, else the training prior N(0, I); 0 = always N(0, I). It bounds the scoring
        cost of the prior, L·N Gaussian terms per row (README, "How the defaults were chosen").
        A conditional VAE's scores keep p(z|c).
    target_steps, min_epochs, max_steps : the auto epoch budget (see ``auto_epochs``). With 100
        epochs at the least, training sets of more than ~10,000 rows get more than 8,000 steps, which
        raised the largest benchmark datasets' ROC-AUC (README, "How the defaults were chosen");
        ``max_steps`` stops that floor from growing with the data: training sets of more than
        25,600 rows (batch 128) get fewer than 100 epochs, about 20,000 steps in all.
    """

    epochs: int | None = None
    latent_dim: int | None = None
    hidden: tuple[int, ...] | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0
    arch: str = "auto"
    patience: int | None = None
    val_fraction: float = 0.2
    n_samples: int = 16
    val_samples: int = 4
    seed: int = 0
    device: str = "auto"
    min_variance: float = 0.01
    decoder_variance: str = "feature"
    precision: str = "auto"
    compile: bool = False
    prior_max_rows: int = 4096
    target_steps: int = 8000
    min_epochs: int = 100
    max_steps: int = 20000


@dataclass
class TrainResult:
    """A trained model and what is needed to export and calibrate it.

    Attributes
    ----------
    graph : ScoreGraph on the CPU, eval mode (the module that is exported).
    x_val : float32 (n_val, d), the validation rows (calibration rows for the conformal p-values).
    summary : plain-JSON training summary stored in the model metadata (with ``input_shape``, the
        shape of one input row as given, and ``condition``, the condition spec or None).
    c_val : float32 (n_val, m), the validation rows' encoded conditions, or None.
    """

    graph: ScoreGraph
    x_val: np.ndarray
    summary: dict = field(default_factory=dict)
    c_val: np.ndarray | None = None


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without CUDA is an InputValidationError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputValidationError("--device: cuda requested but CUDA is not available; use auto or cpu.")
    if device not in ("cpu", "cuda"):
        raise InputValidationError(f"--device: got {device!r}; expected auto, cpu or cuda.")
    return torch.device(device)


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of row indices into (train, val); val has ceil(fraction·n) rows, >= 5."""
    if not 0.0 < val_fraction < 1.0:
        raise InputValidationError(f"--val-fraction: got {val_fraction}; expected 0 < F < 1, e.g. 0.2.")
    n_val = max(MIN_CALIBRATION_ROWS, math.ceil(val_fraction * n))
    if n - n_val < 1:
        raise InputValidationError(
            f"X has {n} rows; expected at least {MIN_CALIBRATION_ROWS + 1} (one to train on and "
            f"{MIN_CALIBRATION_ROWS} to calibrate on). Provide more normal rows."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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
    xs : (N, d) float32 standardized training rows, on the VAE's device.

    Returns
    -------
    LatentMixture with N components, on the CPU.
    """
    parts = [vae.encode(xs[start : start + chunk]) for start in range(0, xs.shape[0], chunk)]
    mu = torch.cat([p[0] for p in parts]).double().cpu()
    var = torch.exp(torch.cat([p[1] for p in parts]).double().cpu())
    return LatentMixture(mu, var)


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64) of training rows; zero std -> 1."""
    loc = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[~(scale > 1e-12)] = 1.0
    return loc, scale


def auto_epochs(n_train: int, cfg: TrainConfig) -> int:
    """Epochs for about cfg.target_steps gradient steps, at least cfg.min_epochs, at most 2000.

    The floor of min_epochs gives large training sets more steps than target_steps, but no more
    epochs than the fewest that reach cfg.max_steps steps, so the budget stops growing with the
    rows (at least one epoch).
    """
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    epochs = max(cfg.min_epochs, math.ceil(cfg.target_steps / steps_per_epoch))
    return int(min(2000, epochs, max(1, math.ceil(cfg.max_steps / steps_per_epoch))))


@torch.no_grad()
def _mean_neg_elbo(graph: ScoreGraph, x: torch.Tensor, c: torch.Tensor | None, chunk: int = 8192) -> float:
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        cc = None if c is None else c[start : start + chunk]
        total += float(graph(x[start : start + chunk], cc)[0].sum())
    return total / x.shape[0]


def _image_shape(shape: tuple[int, ...], arch: str, name: str) -> tuple[int, int, int] | None:
    """(C, H, W) for a convolutional model of rows of ``shape``, or None for an MLP."""
    if arch not in ("auto", "mlp", "conv"):
        raise InputValidationError(f"--arch: got {arch!r}; expected auto, mlp or conv.")
    if arch == "mlp" or (arch == "auto" and len(shape) <= 1):
        return None
    if len(shape) not in (2, 3):
        raise InputValidationError(f"{name}: --arch conv needs images, (n, H, W) or (n, C, H, W); got rows of "
                                   f"shape {shape}. Reshape the data, or use --arch mlp.")
    return (1, *shape) if len(shape) == 2 else tuple(shape)


ProgressCallback = Callable[[int, int, float, float], None]


CHECKPOINT_FORMAT = "vae-anomaly-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint (tensors and plain values only) atomically with torch.save.

    In the main thread, SIGINT and SIGTERM that arrive during the write are held and re-raised
    after it: raised inside torch.save's zip writer they surface as a RuntimeError, not as the
    interrupt they are.
    """
    held: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in signals if signal.getsignal(sig) is not None}
    try:
        with atomic_write(path) as f:
            torch.save(state, f)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held:
        signal.raise_signal(held[0])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: nothing but tensors and plain values.

    Raises
    ------
    ModelArtifactError : missing file, not loadable as weights only, or not a vae-anomaly checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelArtifactError(f"{p}: checkpoint not found; expected a file written by 'fit --checkpoint'.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ModelArtifactError(
            f"{p}: not loadable as a weights-only checkpoint ({str(e).splitlines()[0][:120]}); "
            "expected a file written by 'fit --checkpoint'."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelArtifactError(f"{p}: not a {CHECKPOINT_FORMAT} checkpoint.")
    return state


def train(X, *, X_val=None, condition=None, condition_val=None, condition_kind: str = "auto",
          config: TrainConfig | None = None, progress: ProgressCallback | None = None,
          name: str = "X", checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 10,
          resume: str | os.PathLike | None = None) -> TrainResult:
    """Fit a VAE on normal rows.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features) normal rows (any numeric dtype), or images of shape
        (n_rows, H, W) or (n_rows, C, H, W).
    X_val : optional separate validation rows; None = a seeded ``config.val_fraction`` of X.
    condition, condition_val : optional conditions of X's and X_val's rows, which makes the model a
        conditional VAE: integer ids (n,), one-hot rows (n, K) or numeric context (n, m); see
        :mod:`vae_anomaly.deploy.conditions`. ``condition_kind``: "auto", "categorical" or "numeric".
    config : TrainConfig; None = defaults.
    progress : called after each epoch as progress(epoch, max_epochs, train_loss, val_loss).
    name : how X is named in errors.
    checkpoint : write a checkpoint here every ``checkpoint_every`` epochs (atomically).
    resume : continue from this checkpoint, written for the same X: the model, optimizer, best
        state and random-number states are restored, so the result equals an uninterrupted run on
        the CPU. The checkpoint's settings are used; only ``config.epochs`` (when not None) and
        ``config.device`` override them.

    Returns
    -------
    TrainResult with the best state by validation negative ELBO.

    Raises
    ------
    InputValidationError : bad X / X_val, too few rows, bad settings, a checkpoint for other data.
    ModelArtifactError : an unreadable or foreign checkpoint.
    TrainingError : the loss became NaN or infinite.
    """
    cfg = config or TrainConfig()
    state = load_checkpoint(resume) if resume is not None else None
    if state is not None:
        saved = json.loads(state["config"])
        saved.setdefault("val_samples", saved["n_samples"])  # older checkpoints validated on all L samples
        cfg = TrainConfig(**{**saved, "device": cfg.device,
                             **({"epochs": cfg.epochs} if cfg.epochs is not None else {})})
    if checkpoint_every < 1:
        raise InputValidationError(f"--checkpoint-every: got {checkpoint_every}; expected an integer >= 1.")
    row_shape = tuple(int(v) for v in np.shape(X)[1:])
    image_shape = _image_shape(row_shape, cfg.arch, name)
    x_all = check_array(flatten_rows(X, row_shape, name=name), name=name, min_rows=1)
    spec = None if condition is None else conditions.fit_spec(condition, len(x_all), condition_kind)
    c_all = conditions.encode(condition, spec, len(x_all))
    fingerprint = hashlib.sha256(x_all.tobytes() + (b"" if c_all is None else c_all.tobytes())).hexdigest()
    if state is not None and state["data_sha256"] != fingerprint:
        raise InputValidationError(
            f"{name}: differs from the data the checkpoint {resume} was written for; resume with the "
            "same normal rows, or fit from scratch."
        )
    if X_val is None:
        if condition_val is not None:
            raise InputValidationError("validation conditions were given without validation rows (--val).")
        tr, va = split_rows(x_all.shape[0], cfg.val_fraction, cfg.seed)
        x_train, x_val = x_all[tr], x_all[va]
        c_train, c_val = (None, None) if c_all is None else (c_all[tr], c_all[va])
    else:
        x_train, c_train = x_all, c_all
        x_val = check_array(flatten_rows(X_val, row_shape, name="validation data"), name="validation data",
                            n_features=x_all.shape[1], min_rows=MIN_CALIBRATION_ROWS)
        c_val = conditions.encode(condition_val, spec, len(x_val), "validation conditions")
    if cfg.hidden is not None and (len(cfg.hidden) == 0 or any(int(h) != h or h < 1 for h in cfg.hidden)):
        raise InputValidationError(f"hidden: got {cfg.hidden!r}; expected layer widths >= 1, e.g. (256, 256).")
    if not (cfg.free_bits >= 0 and math.isfinite(cfg.free_bits)):
        raise InputValidationError(f"--free-bits: got {cfg.free_bits}; expected a number of nats >= 0, e.g. 0.1.")
    for label, value in (("epochs", cfg.epochs), ("latent_dim", cfg.latent_dim), ("batch_size", cfg.batch_size)):
        if value is not None and value < 1:
            raise InputValidationError(f"--{label.replace('_', '-')}: got {value}; expected an integer >= 1.")
    if cfg.prior_max_rows < 0:
        raise InputValidationError(f"--prior-max-rows: got {cfg.prior_max_rows}; expected an integer >= 0 "
                                   "(0 = the N(0, I) prior), e.g. 4096.")
    if not 1 <= cfg.val_samples <= cfg.n_samples:
        raise InputValidationError(f"val_samples: got {cfg.val_samples} with n_samples {cfg.n_samples}; "
                                   "expected 1 <= val_samples <= n_samples, e.g. 4 of 16.")
    device = resolve_device(cfg.device)
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise InputValidationError(f"--precision: got {cfg.precision!r}; expected auto, fp32 or bf16.")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    step_loss = torch.compile(training_loss) if cfg.compile else training_loss
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    loc, scale = standardization(x_train)
    arch: Architecture = default_architecture(x_all.shape[1], cfg.latent_dim, min_variance=cfg.min_variance,
                                              decoder_variance=cfg.decoder_variance, image_shape=image_shape,
                                              condition_dim=conditions.width(spec), hidden=cfg.hidden)
    c_loc = c_scale = None
    if spec is not None and spec["kind"] == "numeric":
        c_loc, c_scale = standardization(c_train)
    vae = VAE(arch, loc, scale, c_loc, c_scale)
    eps = torch.randn((cfg.n_samples, arch.latent_dim), generator=torch.Generator().manual_seed(cfg.seed + 1))
    val_graph = ScoreGraph(vae, eps[: cfg.val_samples]).to(device)  # early stopping: the first noise vectors

    xt = vae.standardize(torch.as_tensor(x_train).to(device))
    xv = torch.as_tensor(x_val).to(device)
    ct = None if c_train is None else vae.condition(torch.as_tensor(c_train).to(device))
    cv = None if c_val is None else torch.as_tensor(c_val).to(device)
    n = xt.shape[0]
    max_epochs = cfg.epochs if cfg.epochs is not None else auto_epochs(n, cfg)
    patience = cfg.patience if cfg.patience is not None else max(10, max_epochs // 4)
    # the fused kernel (one pass over each parameter) halves the optimizer's share of a step on the CPU
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))

    best, best_epoch, best_state, first_epoch = math.inf, 0, None, 1
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best, best_epoch, best_state = state["best"], state["best_epoch"], state["best_state"]
        torch.set_rng_state(state["torch_rng"])
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
                loss = step_loss(vae, batch, beta, None if ct is None else ct[idx], cfg.free_bits)
            opt.zero_grad(set_to_none=True)
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
        val = _mean_neg_elbo(val_graph, xv, cv)
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
                "data_sha256": fingerprint, "model": {k: v.cpu() for k, v in vae.state_dict().items()},
                "optimizer": opt.state_dict(), "best": best, "best_epoch": best_epoch,
                "best_state": {k: v.cpu() for k, v in best_state.items()},
                "torch_rng": torch.get_rng_state(), "batch_rng": gen.get_state(),
            })
        if epoch - best_epoch >= patience:
            break
    vae.load_state_dict(best_state)
    vae.eval()
    prior, prior_info = None, {"kind": "standard-normal" if spec is None else "conditional-normal"}
    if n <= cfg.prior_max_rows and spec is None:
        prior = aggregate_posterior(vae, xt)
        prior_info = {"kind": "aggregate-posterior", "components": int(n)}
    graph = ScoreGraph(vae.cpu(), eps, prior).eval()  # the exported graph: all L noise vectors
    summary = {
        "n_rows": int(x_all.shape[0] + (0 if X_val is None else x_val.shape[0])),
        "n_train": int(n),
        "n_val": int(x_val.shape[0]),
        "epochs_run": int(epoch),
        "max_epochs": int(max_epochs),
        "best_epoch": int(best_epoch),
        "best_val_neg_elbo": float(best),
        "seconds": round(time.perf_counter() - t0, 3),
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "config": asdict(cfg),
        "architecture": asdict(arch),
        "data_sha256": fingerprint,
        "resumed_from_epoch": None if state is None else first_epoch - 1,
        "input_shape": list(row_shape),
        "condition": spec,
        "latent_prior": prior_info,
    }
    return TrainResult(graph=graph, x_val=x_val, summary=summary, c_val=c_val)
