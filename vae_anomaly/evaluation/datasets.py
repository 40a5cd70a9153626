"""Labelled datasets: the small real ones bundled in the package, and the train/test protocol.

The bundled files are ADBench "Classical" datasets (Han et al., NeurIPS 2022); provenance,
citations and licences are in ``vae_anomaly/data/README.md``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InputValidationError

#: bundled dataset name -> file in vae_anomaly/data, fewest training rows first (so the quickest fits
#: come first). The nine were chosen to represent the 32-dataset benchmark (stratified by the VAE's
#: ROC-AUC gap to IsolationForest, matched on its gap to KNN); how and why: vae_anomaly/data/README.md.
BUNDLED = {"hepatitis": "hepatitis.npz", "wine": "wine.npz", "vertebral": "vertebral.npz",
           "ionosphere": "ionosphere.npz", "breastw": "breastw.npz", "letter": "letter.npz",
           "cardio": "cardio.npz", "spambase": "spambase.npz", "thyroid": "thyroid.npz"}


def bundled_path(name: str) -> Path:
    """Path of a bundled dataset; InputValidationError for an unknown name."""
    if name not in BUNDLED:
        raise InputValidationError(
            f"dataset: got {name!r}; expected one of the bundled datasets {', '.join(BUNDLED)}."
        )
    return Path(str(resources.files("vae_anomaly") / "data" / BUNDLED[name]))


def load_labelled(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load an ``.npz`` holding ``X`` (n, d) numeric and ``y`` (n,) with 1 = anomaly, 0 = normal.

    Raises
    ------
    InputValidationError : missing keys, mismatched lengths, labels outside {0, 1}.
    """
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"{p}: file not found; expected an .npz with arrays X and y.")
    try:
        with np.load(p, allow_pickle=False) as d:
            X, y = d["X"], d["y"]
    except (KeyError, ValueError, OSError) as e:
        raise InputValidationError(f"{p}: expected an .npz with numeric arrays X and y ({e}).") from None
    y = np.asarray(y).ravel()
    if X.ndim != 2 or len(X) != len(y) or not np.isin(y, (0, 1)).all():
        raise InputValidationError(
            f"{p}: X has shape {X.shape} and y {y.shape}; expected X (n, d) and y (n,) of 0/1 labels."
        )
    return X, y.astype(np.int64)


def semi_supervised_split(y: np.ndarray, seed: int, train_fraction: float = 0.5
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Train on a seeded random share of the normal rows; test on the other normals + all anomalies.

    The semi-supervised protocol of Livernoche et al., ICLR 2024 (Table 1), with a random rather
    than a file-order split (some files are grouped by class). Returns sorted (train, test) indices.
    """
    normals = np.flatnonzero(y == 0)
    perm = np.random.default_rng(seed).permutation(normals)
    train = np.sort(perm[: int(round(train_fraction * len(normals)))])
    test = np.setdiff1d(np.arange(len(y)), train)
    return train, test
