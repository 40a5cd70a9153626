"""Training, end to end: check the settings, prepare the data, run the fit loop, build the graph.

Each step is its own module: :mod:`~vae_anomaly.training.config` (settings and their checks),
:mod:`~vae_anomaly.training.data` (validation, split, standardization),
:mod:`~vae_anomaly.training.loop` (the fit loop, with :mod:`~vae_anomaly.training.checkpoint`) and
:mod:`~vae_anomaly.training.graph` (the exported score graph and its latent prior).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..deploy import conditions
from ..errors import InputValidationError
from .checkpoint import load_checkpoint, resumed_categories, resumed_config, resumed_missing
from .config import ProgressCallback, TrainConfig, check_config
from .data import observed_standardization, one_hot_standardization, prepare, standardization
from .graph import build_score_graph
from .loop import fit_loop
from .model import VAE, Architecture, default_architecture
from .scores import ScoreGraph


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
    return torch.device(device)


def train(X, *, X_val=None, condition=None, condition_val=None, condition_kind: str = "auto",
          config: TrainConfig | None = None, progress: ProgressCallback | None = None,
          name: str = "X", checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 10,
          resume: str | os.PathLike | None = None, categories: tuple[int, ...] = (),
          missing: bool = False, slot_columns: list[str] | None = None) -> TrainResult:
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
    categories : (K_1, ..., K_C): X's last Σ (K_c + 1) columns are one-hot blocks of categorical
        columns (K_c training categories + an always-0 "unseen" slot each; the first columns are
        numeric), modelled by a categorical likelihood with a floor (HI-VAE, Nazábal et al. 2020;
        :class:`~vae_anomaly.training.model.Architecture`); () = all columns numeric. A resumed fit
        takes the checkpoint's.
    missing : X and X_val may hold NaN, missing values (a gap in a metric series, the first W − 1
        steps of a window, a known anomaly), left out of the likelihood log p(x|z) instead of
        refusing the row (Donut's modified ELBO, Xu et al. 2018, §3.2; ``Architecture.masked``):
        the standardization uses each column's observed values, the encoder sees a missing entry
        as 0 (the training mean), and the exported graph masks NaN itself. Training rows with every
        entry missing are dropped (summary ``"missing"``); ±inf is still refused; all-numeric
        columns only. A resumed fit takes the checkpoint's.
    slot_columns : the input column of each of X's columns (a categorical block's slots, a metric's
        window slots share one), naming the columns that hold one value in every row in a warning;
        None = by position.

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
        cfg = resumed_config(state, cfg)
        categories = resumed_categories(state, categories, resume)
        missing = resumed_missing(state, missing, resume)
    if checkpoint_every < 1:
        raise InputValidationError(f"--checkpoint-every: got {checkpoint_every}; expected an integer >= 1.")
    check_config(cfg)
    data = prepare(X, cfg, X_val=X_val, condition=condition, condition_val=condition_val,
                   condition_kind=condition_kind, name=name, categories=categories, missing=missing,
                   slot_columns=slot_columns)
    if state is not None and state["data_sha256"] != data.fingerprint:
        raise InputValidationError(
            f"{name}: differs from the data the checkpoint {resume} was written for; resume with the "
            "same normal rows, or fit from scratch."
        )
    device = resolve_device(cfg.device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    loc, scale = observed_standardization(data.x_train) if missing else standardization(data.x_train)
    arch: Architecture = default_architecture(data.x_train.shape[1], cfg.latent_dim, min_variance=cfg.min_variance,
                                              decoder_variance=cfg.decoder_variance, image_shape=data.image_shape,
                                              condition_dim=conditions.width(data.spec), hidden=cfg.hidden,
                                              categories=tuple(categories), masked=missing)
    if arch.categories:
        loc, scale = one_hot_standardization(loc, scale, arch.categories)
    c_loc = c_scale = None
    if data.spec is not None and data.spec["kind"] == "numeric":
        c_loc, c_scale = standardization(data.c_train)
    vae = VAE(arch, loc, scale, c_loc, c_scale)
    eps = torch.randn((cfg.n_samples, arch.latent_dim), generator=torch.Generator().manual_seed(cfg.seed + 1))
    val_graph = ScoreGraph(vae, eps).to(device)  # early stopping: its negative ELBO (no samples)

    xt = vae.standardize(torch.as_tensor(data.x_train).to(device))
    ct = None if data.c_train is None else vae.condition(torch.as_tensor(data.c_train).to(device))
    outcome = fit_loop(vae, cfg, xt=xt, ct=ct, xv=torch.as_tensor(data.x_val).to(device),
                       cv=None if data.c_val is None else torch.as_tensor(data.c_val).to(device),
                       val_graph=val_graph, gen=gen, device=device, bf16=bf16, fingerprint=data.fingerprint,
                       state=state, progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    graph, prior_info = build_score_graph(vae, eps, xt, prior_max_rows=cfg.prior_max_rows,
                                          conditional=data.spec is not None)
    summary = {
        "n_rows": data.n_rows,
        "n_train": int(xt.shape[0]),
        "n_val": int(data.x_val.shape[0]),
        "epochs_run": outcome.epochs_run,
        "max_epochs": outcome.max_epochs,
        "best_epoch": outcome.best_epoch,
        "best_val_neg_elbo": outcome.best,
        "seconds": round(outcome.seconds, 3),
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "config": asdict(cfg),
        "architecture": asdict(arch),
        "data_sha256": data.fingerprint,
        "resumed_from_epoch": None if state is None else outcome.first_epoch - 1,
        "input_shape": list(data.row_shape),
        "condition": data.spec,
        "latent_prior": prior_info,
    }
    if missing:
        summary["missing"] = {"n_train_dropped": data.n_dropped,
                              "train_fraction": float(np.isnan(data.x_train).mean()),
                              "val_fraction": float(np.isnan(data.x_val).mean())}
    return TrainResult(graph=graph, x_val=data.x_val, summary=summary, c_val=data.c_val)
