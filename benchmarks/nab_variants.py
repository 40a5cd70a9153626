"""NAB window scores, variant by variant: one fit per series, scored several ways, beside KNN and IsolationForest.

    python benchmarks/nab_variants.py --write results/nab_variants_W64.json                  # the defaults
    python benchmarks/nab_variants.py --fit-args '["--latent-dim", "4"]' --write results/nab_variants_k4.json
    python benchmarks/nab_variants.py --input diff --write results/nab_variants_diff.json      # first differences
    python benchmarks/nab_variants.py --conv --write results/nab_variants_conv.json           # convolutional VAE

Same data, protocol, windows and metrics as ``nab.py`` (its functions are used): per series, the
window matrix of the standardized values (or, with ``--input diff``, of the standardized first
differences), ``vae-anomaly fit`` on the windows inside the first 15% (``--val-fraction`` as in
``nab.py``'s ``vae-windows``), then, in process, the model's negative ELBO and per-feature terms of every
window. Variants of the score of timestamp t (the window ending at t):

* ``neg-elbo``: the window's negative ELBO (the product's score); ``recon``: the sum of its terms;
* ``last1``, ``last4``, ``last8``, ``last16``: the terms of the last 1, 4, 8, 16 steps (``last1`` is
  Donut's score: the reconstruction term of the window's last point);
* ``max``: the largest term of the window; ``ne+last1``: neg-elbo / W + the last step's term;
* ``soft10``, ``soft30``, ``cap10``, ``cap30`` (issue 32, item 4: one extreme slot does not dominate):
  the negative ELBO with each window slot's term t bounded at c = 10 or 30 nats, softly
  (c + log(1 + t − c) above c: slope 1 at c, logarithmic beyond) or by a cap (min(t, c));
* ``knnz5``, ``ne+knnz5``, ``recon+knnz5`` (issue 29's latent density, on windows): k log r₅(μ), the
  latent kNN density's −log p̂(μ) up to a constant (Loftsgaarden & Quesenberry 1965), r₅ the
  distance from the window's posterior mean μ to the 5th nearest training window's; alone, in place
  of the KL's ½|μ|² in the negative ELBO, or added to the reconstruction term (``recon``);
* ``knn`` and ``iforest`` on the same windows, fitted on all training windows.

``--conv`` fits the convolutional VAE (``--arch conv``) on windows shaped (1, 1, W): 3×3 kernels,
stride 2, over time (the image network of ``model.py`` with one row).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import nab  # benchmarks/nab.py, beside this script

VARIANTS = ["neg-elbo", "recon", "last1", "last4", "last8", "last16", "max", "ne+last1", "soft10", "soft30", "cap10",
            "cap30", "knnz5", "ne+knnz5", "recon+knnz5", "knn", "iforest"]


def bounded(terms: np.ndarray, c: float, soft: bool) -> np.ndarray:
    """Each per-feature term t (nats) bounded at c: c + log(1 + t − c) above c (``soft``), or min(t, c)."""
    if soft:
        return np.where(terms <= c, terms, c + np.log1p(np.maximum(terms - c, 0.0)))
    return np.minimum(terms, c)


def latent_knn(mu: np.ndarray, n_tr: int) -> np.ndarray:
    """k log r₅ (n,): k latent dimensions, r₅ the distance from each row of ``mu`` (n, k) to its 5th
    nearest neighbour among the first ``n_tr`` rows (a training row counts itself, as ``nab.knn_scores``)."""
    from sklearn.neighbors import NearestNeighbors

    r = NearestNeighbors(n_neighbors=5).fit(mu[:n_tr]).kneighbors(mu)[0][:, -1]
    return mu.shape[1] * np.log(np.maximum(r, 1e-12))


def one(key: str, windows: list, w: int, fit_args: list[str], inp: str, conv: bool, seed: int, tmp: Path) -> dict:
    from vae_anomaly.deploy.model_file import ModelFile

    ser = nab.load_series(key, windows)
    z = ser["z"]
    if inp == "diff":
        d = np.diff(ser["values"], prepend=ser["values"][0])
        train = d[:ser["n_train"]]
        z = ((d - train.mean()) / (train.std() or 1.0)).astype(np.float32)
    X = nab.window_matrix(z, w)
    n_tr = ser["n_train"] - w + 1
    vf = min(0.5, max(0.2, nab.MIN_CAL / n_tr))
    shape = (-1, 1, 1, w) if conv else (-1, w)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", key)
    np.save(tmp / f"{tag}_train.npy", X[:n_tr].reshape(shape))
    t_fit, proc = nab.cli("fit", str(tmp / f"{tag}_train.npy"), "-o", str(tmp / f"{tag}.onnx"), "--seed", str(seed),
                          "--val-fraction", f"{vf:.4f}", "-q", *(["--arch", "conv"] if conv else []), *fit_args)
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout)[-300:]}
    model = ModelFile(tmp / f"{tag}.onnx", intra_op_threads=1)
    ne = model.score_samples(X.reshape(shape))
    ft = model.feature_terms(X.reshape(shape))
    mu = model.latent_means(X.reshape(shape))
    lk = latent_knn(mu, n_tr)
    scores = {"neg-elbo": ne, "recon": ft.sum(1), "last1": ft[:, -1], "last4": ft[:, -4:].sum(1),
              "last8": ft[:, -8:].sum(1), "last16": ft[:, -16:].sum(1), "max": ft.max(1),
              "ne+last1": ne / w + ft[:, -1],
              **{f"{kind}{c}": ne - ft.sum(1) + bounded(ft, c, kind == "soft").sum(1)
                 for kind in ("soft", "cap") for c in (10, 30)},
              "knnz5": lk, "ne+knnz5": ne - 0.5 * (mu.astype(np.float64) ** 2).sum(1) + lk, "recon+knnz5": ft.sum(1) + lk,
              "knn": nab.knn_scores(X[:n_tr], X)[0],
              "iforest": nab.iforest_scores(X[:n_tr], X, seed)}
    out = {v: nab.evaluate(ser, nab.expand(s, ser["n"], w), None) for v, s in scores.items()}
    out["fit_s"] = t_fit
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=64, help="W (default 64)")
    ap.add_argument("--fit-args", default="[]", help="extra `vae-anomaly fit` arguments, a JSON list")
    ap.add_argument("--input", choices=["values", "diff"], default="values", help="window the values or their "
                    "first differences (default: values)")
    ap.add_argument("--conv", action="store_true", help="fit --arch conv on windows shaped (1, 1, W)")
    ap.add_argument("--seed", type=int, default=0, help="fit --seed (and IsolationForest's; default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="fits at a time (default 2)")
    ap.add_argument("--cli-root", type=Path, help="run the CLI from this snapshot (as nab.py)")
    ap.add_argument("--write", help="write the per-series figures and means (JSON) here")
    args = ap.parse_args()
    nab.CLI_ROOT = args.cli_root.resolve() if args.cli_root else None
    fit_args = json.loads(args.fit_args)
    all_windows = json.loads((nab.DATA / "combined_windows.json").read_text())
    keys = sorted(k for k, v in all_windows.items() if v)
    with tempfile.TemporaryDirectory(prefix="nab_variants_") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futs = {k: pool.submit(one, k, all_windows[k], args.window, fit_args, args.input, args.conv, args.seed,
                               Path(tmp))
                for k in keys}
        per_series = {}
        for k, fut in futs.items():
            per_series[k] = fut.result()
            r = per_series[k]
            print(k, "error: " + r["error"] if "error" in r else
                  " ".join(f"{v} {r[v]['roc_auc']:.3f}/{r[v]['ap']:.3f}" for v in VARIANTS), flush=True)
    ok = [r for r in per_series.values() if "error" not in r]
    means = {v: {m: float(np.mean([r[v][m] for r in ok])) for m in ("roc_auc", "ap", "best_f1")} for v in VARIANTS}
    print(f"\n{len(ok)} of {len(keys)} series; mean ROC-AUC / AP / best F1")
    for v, m in means.items():
        print(f"{v:9s} {m['roc_auc']:.4f} {m['ap']:.4f} {m['best_f1']:.4f}")
    if args.write:
        path = Path(args.write)
        if not path.is_absolute():
            path = nab.ROOT / "benchmarks" / path
        path.write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/nab_variants.py", *sys.argv[1:]]),
            **nab.git_state(nab.ROOT), "means": means, "per_series": per_series}, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
