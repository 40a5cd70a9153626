"""Training checkpoints: tensors and plain values only, written atomically, loaded weights-only."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import torch

from ..deploy.io import atomic_write
from ..errors import InputValidationError, ModelArtifactError
from .config import TrainConfig

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


def resumed_config(state: dict, cfg: TrainConfig) -> TrainConfig:
    """The checkpoint's settings, with ``cfg.device`` and (when not None) ``cfg.epochs`` taking over."""
    saved = json.loads(state["config"])
    saved.pop("val_samples", None)  # older checkpoints: the criterion now decodes the posterior mean
    return TrainConfig(**{**saved, "device": cfg.device, **({"epochs": cfg.epochs} if cfg.epochs is not None else {})})


def resumed_categories(state: dict, categories: tuple[int, ...], resume) -> tuple[int, ...]:
    """The categorical columns' sizes (K_1, ..., K_C) to resume with: the checkpoint's (written by
    the fit loop as the JSON list ``"categories"``; () for checkpoints without it). ``categories``
    given by the caller must be () or equal them.

    Raises
    ------
    InputValidationError : ``categories`` that differ from the checkpoint's.
    """
    saved = tuple(int(k) for k in json.loads(state.get("categories", "[]")))
    given = tuple(int(k) for k in categories)
    if given and given != saved:
        raise InputValidationError(
            f"categories: got {given}, but the checkpoint {resume} was written for {saved or 'all-numeric columns'}; "
            "resume with the same encoding, or fit from scratch."
        )
    return saved


def resumed_missing(state: dict, missing: bool, resume) -> bool:
    """Whether the resumed model masks missing values: the checkpoint's (written by the fit loop as
    ``"masked": "true"`` for such a model only; False for checkpoints without it). ``missing=True``
    given by the caller must agree.

    Raises
    ------
    InputValidationError : ``missing=True`` for a checkpoint of a model without missing values.
    """
    saved = state.get("masked") == "true"
    if missing and not saved:
        raise InputValidationError(
            f"missing: got True, but the checkpoint {resume} was written for a model without missing values; "
            "resume with the same settings, or fit from scratch.")
    return saved
