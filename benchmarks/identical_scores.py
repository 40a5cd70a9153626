"""Scores bit-identical across a refactor: fit and score each bundled dataset through the CLI.

    python benchmarks/identical_scores.py record REF.json   # before the change
    python benchmarks/identical_scores.py check REF.json    # after: exits 1 on any difference

For each dataset bundled in ``vae_anomaly/data`` (seed 0 split from ``semi_supervised_split``):
``vae-anomaly fit normal.npy --epochs 5 --seed 0`` then ``vae-anomaly score test.npy --score S -o s.npy``
for every score S, and the default CSV (scores, p-values, flags); the SHA-256 of each is recorded
or compared (``check`` covers the datasets the record holds). Training on the CPU is
deterministic, so any difference is a change in what the code computes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "vae_anomaly" / "data"
SCORES = ("neg-elbo", "recon-prob", "iwae")


def _split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half of the normal rows to fit on; the rest and every anomaly to score (as the demo does)."""
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    half = len(normal) // 2
    return np.sort(normal[:half]), np.sort(np.concatenate([normal[half:], np.flatnonzero(y == 1)]))


def digests(names: set[str] | None = None) -> dict[str, str]:
    """SHA-256 of each score vector (and of the default ``score`` CSV) per bundled dataset."""
    out = {}
    for path in sorted(DATA.glob("*.npz")):
        if names is not None and path.stem not in names:
            continue
        with np.load(path, allow_pickle=False) as z:
            X, y = z["X"].astype(np.float32), z["y"].astype(int)
        tr, te = _split(y)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            np.save(tmp / "normal.npy", X[tr])
            np.save(tmp / "test.npy", X[te])
            subprocess.run(["vae-anomaly", "fit", str(tmp / "normal.npy"), "-o", str(tmp / "m.onnx"),
                            "--epochs", "5", "--seed", "0", "--quiet"], check=True)
            for s in SCORES:
                subprocess.run(["vae-anomaly", "score", str(tmp / "test.npy"), "-m", str(tmp / "m.onnx"),
                                "--score", s, "-o", str(tmp / "s.npy")], check=True)
                scores = np.load(tmp / "s.npy", allow_pickle=False)
                out[f"{path.stem}/{s}"] = hashlib.sha256(scores.tobytes()).hexdigest()
                print(f"{path.stem:12s} {s:10s} {out[f'{path.stem}/{s}'][:16]}", flush=True)
            csv = subprocess.run(["vae-anomaly", "score", str(tmp / "test.npy"), "-m", str(tmp / "m.onnx")],
                                 check=True, capture_output=True).stdout
            out[f"{path.stem}/csv"] = hashlib.sha256(csv).hexdigest()
    return out


def main() -> int:
    mode, ref = sys.argv[1], Path(sys.argv[2])
    before = json.loads(ref.read_text()) if mode == "check" else {}
    now = digests({k.split("/")[0] for k in before} if before else None)
    if mode == "record":
        ref.write_text(json.dumps(now, indent=1) + "\n")
        return 0
    diff = [k for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)]
    print(f"{len(now) - len(diff)} of {len(before)} score vectors bit-identical; differ: {diff or 'none'}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
