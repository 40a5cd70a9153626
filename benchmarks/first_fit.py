"""A first fit in a fresh process: our default fit against PyOD's VAE, after the same imports.

Each run is a new Python process that imports torch, torch._dynamo, PyOD's VAE and vae-anomaly's
``fit_file`` (so that both pay the same start-up), then fits once: ours with ``fit_file`` and the
defaults (read the .npy, train, export, calibrate, write the model), or PyOD's ``VAE()`` with its
defaults on the same rows. A third kind of run only imports, to show what the start-up costs. The
kinds alternate (ours, PyOD, imports, ours, ...) --pairs times, so that a drift of the machine's
speed hits both; wall seconds of each whole process, the medians, and ours / PyOD pair by pair.
This is the in-process comparison without the warm-up that a best-of-3 in one process gives
PyOD's VAE (benchmarks/README.md, "Speed and memory").

    python benchmarks/first_fit.py [--data ../shared/datasets/6_cardio.npz] [--pairs 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vae_anomaly.evaluation.datasets import load_labelled

ROOT = Path(__file__).resolve().parents[1]
CHILD = """import sys
import numpy as np
import torch, torch._dynamo  # noqa: F401
from pyod.models.vae import VAE
from vae_anomaly.training.config import TrainConfig
from vae_anomaly.training.fit import fit_file
kind, data, model = sys.argv[1:4]
if kind == "ours":
    fit_file(data, model, config=TrainConfig(seed=0))
elif kind == "pyod":
    VAE(random_state=0, device="cpu", verbose=0).fit(np.load(data))
"""


def wall(kind: str, data: Path, model: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, kind, str(data), str(model)], check=True, cwd=ROOT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "6_cardio.npz",
                    help=".npz with X and y; both fit its y == 0 rows")
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    X, y = load_labelled(args.data)
    with tempfile.TemporaryDirectory() as folder:
        data, model = Path(folder) / "normals.npy", Path(folder) / "model.onnx"
        np.save(data, X[y == 0].astype(np.float32))
        wall("imports", data, model)  # warm the file cache
        runs = {"ours": [], "pyod": [], "imports": []}
        for i in range(args.pairs):
            for kind in runs:
                runs[kind].append(wall(kind, data, model))
            print(f"pair {i + 1}: ours {runs['ours'][-1]:.1f} s, PyOD's VAE {runs['pyod'][-1]:.1f} s, "
                  f"imports alone {runs['imports'][-1]:.1f} s", file=sys.stderr)
    ratios = [a / b for a, b in zip(runs["ours"], runs["pyod"])]
    print(f"{args.data.stem}, {int((y == 0).sum()):,} normal rows x {X.shape[1]}: median wall s (whole process, "
          f"{args.pairs} alternated runs): ours {statistics.median(runs['ours']):.1f}, PyOD's VAE "
          f"{statistics.median(runs['pyod']):.1f}, the imports alone {statistics.median(runs['imports']):.1f}; "
          f"ours / PyOD median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
