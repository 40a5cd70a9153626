"""The benchmark protocol: the VAE against the detectors people use today, on labelled datasets.

Semi-supervised protocol after Livernoche et al., "On Diffusion Modeling for Anomaly Detection",
ICLR 2024, Table 1, with two differences stated in benchmarks/README.md ("Benchmark"): the split is random (seeded), not
in file order, and small datasets are not bootstrapped. Per dataset and seed:

1. subsample to ``max_rows`` rows (seeded) when larger;
2. train = a seeded random 50% of the normal rows; test = the other normals + all anomalies;
3. each method fits its preprocessing on the training rows only (the baselines standardize with
   the training rows' mean and standard deviation; the VAE standardizes inside its graph and takes
   its validation rows from the training rows);
4. test labels are used only to compute ROC-AUC and average precision on continuous scores
   (higher = more anomalous), and, for the VAE, the false-alarm rate on test normals and the recall
   on anomalies at ``--threshold auto``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from ..deploy.artifact import SCORE_OUTPUTS
from ..errors import InputValidationError
from .datasets import load_labelled, semi_supervised_split

#: the scikit-learn baselines, each on standardized inputs
BASELINES = ("iforest", "knn", "lof", "ocsvm")
#: the VAE's variants: "vae" is the default score; "vae-<score>" names a specific score
VAE_METHODS = ("vae", *(f"vae-{s}" for s in SCORE_OUTPUTS))
PYOD_VAE = "pyod-vae"
DEFAULT_METHODS = ("vae", *BASELINES)
#: published mean ROC-AUC (%) on ADBench's classical datasets, DTE paper (Livernoche et al. 2024) Table 1
PUBLISHED_MEANS = {"KNN": 83.42, "IForest": 78.21, "OCSVM": 78.83, "LOF": 80.29, "VAE": 76.90, "DTE-NP": 83.88}


class Baseline:
    """A scikit-learn detector on standardized inputs; score = −score_samples (higher = more anomalous)."""

    def __init__(self, method: str, seed: int):
        self.method, self.seed = method, seed

    def fit(self, X: np.ndarray) -> "Baseline":
        self.scaler = StandardScaler().fit(X)
        Z = self.scaler.transform(X)
        if self.method == "knn":  # distance to the 5th nearest training row (Ramaswamy et al. 2000)
            self.model = NearestNeighbors(n_neighbors=min(5, len(Z))).fit(Z)
        elif self.method == "iforest":
            self.model = IsolationForest(random_state=self.seed).fit(Z)
        elif self.method == "lof":
            self.model = LocalOutlierFactor(novelty=True, n_neighbors=min(20, len(Z) - 1)).fit(Z)
        else:
            self.model = OneClassSVM().fit(Z)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler.transform(X)
        if self.method == "knn":
            return self.model.kneighbors(Z)[0][:, -1]
        return -self.model.score_samples(Z)


class _PyodVAE:
    """PyOD's VAE with its defaults (optional peer; needs ``pip install pyod``)."""

    def __init__(self, seed: int):
        from pyod.models.vae import VAE

        self.model = VAE(random_state=seed, verbose=0)

    def fit(self, X: np.ndarray) -> "_PyodVAE":
        self.scaler = StandardScaler().fit(X)
        self.model.fit(self.scaler.transform(X))
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.model.decision_function(self.scaler.transform(X))


def find_datasets(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Expand folders (their ``*.npz``, sorted) and files into (name, path) pairs.

    Raises InputValidationError for a missing path or a folder without ``.npz`` files.
    """
    found: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(p.glob("*.npz"))
            if not files:
                raise InputValidationError(f"{p}: folder holds no .npz files; expected datasets with X and y.")
            found += [(f.stem, f) for f in files]
        elif p.is_file():
            found.append((p.stem, p))
        else:
            raise InputValidationError(f"{p}: not found; expected an .npz file or a folder of them.")
    return found


def check_methods(methods: Iterable[str]) -> list[str]:
    """Validate method names; InputValidationError lists the known ones."""
    methods = list(methods)
    known = (*VAE_METHODS, *BASELINES, PYOD_VAE)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise InputValidationError(f"--methods: unknown {unknown}; expected a comma-separated subset of {', '.join(known)}.")
    if PYOD_VAE in methods:
        try:
            import pyod  # noqa: F401
        except ImportError:
            raise InputValidationError("--methods: pyod-vae needs PyOD; pip install pyod.") from None
    return methods


def split(y: np.ndarray, seed: int, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) into the full arrays: subsample to max_rows, then the 50% normal split."""
    rows = np.arange(len(y))
    if len(y) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), size=max_rows, replace=False))
    train, test = semi_supervised_split(y[rows], seed)
    return rows[train], rows[test]


def _metrics(y: np.ndarray, scores: np.ndarray) -> dict:
    return {"roc_auc": float(roc_auc_score(y, scores)), "average_precision": float(average_precision_score(y, scores))}


def _run_vae(vae_methods: list[str], default_score: str, X_tr, X_te, y_te, seed: int,
             epochs: int | None, threads: int | None) -> list[dict]:
    import torch

    from ..deploy.scorer import Scorer
    from ..training.export import build_model
    from ..training.train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    t = time.perf_counter()
    with warnings.catch_warnings():  # small calibration sets: recorded as n_calibration instead
        warnings.simplefilter("ignore", UserWarning)
        data, _ = build_model(train(X_tr, config=TrainConfig(seed=seed, epochs=epochs)))
        fit_seconds = time.perf_counter() - t
        scorer = Scorer.from_bytes(data, intra_op_threads=threads)
        out = []
        for method in vae_methods:
            score = default_score if method == "vae" else method[len("vae-"):]
            t = time.perf_counter()
            res = scorer.predict(X_te, score=score)
            out.append({"method": method, **_metrics(y_te, res.scores), "fit_seconds": fit_seconds,
                        "score_seconds": time.perf_counter() - t,
                        "fpr_at_threshold": float(res.is_anomaly[y_te == 0].mean()),
                        "recall_at_threshold": float(res.is_anomaly[y_te == 1].mean()),
                        "n_calibration": int(scorer.metadata["n_calibration"])})
    return out


def _run_task(name: str, path: Path, seed: int, methods: list[str], max_rows: int, score: str,
              epochs: int | None, threads: int | None = None) -> list[dict]:
    """Every method's records for one (dataset, seed); ``threads``: math threads (None = the libraries' own)."""
    X, y = load_labelled(path)
    tr, te = split(y, seed, max_rows)
    X_tr, X_te, y_te = X[tr], X[te], y[te]
    common = {"dataset": name, "seed": seed, "n_train": int(len(tr)), "n_test": int(len(te)),
              "n_anomalies": int(y_te.sum())}
    vae_methods = [m for m in methods if m in VAE_METHODS]
    results = []
    if vae_methods:
        results += [{**common, **rec} for rec in _run_vae(vae_methods, score, X_tr, X_te, y_te, seed, epochs, threads)]
    for method in (m for m in methods if m not in VAE_METHODS):
        t = time.perf_counter()
        det = (_PyodVAE(seed) if method == PYOD_VAE else Baseline(method, seed)).fit(X_tr)
        fit_seconds = time.perf_counter() - t
        t = time.perf_counter()
        s = det.score(X_te)
        results.append({**common, "method": method, **_metrics(y_te, s), "fit_seconds": fit_seconds,
                        "score_seconds": time.perf_counter() - t})
    return results


def _one_thread() -> None:
    """Worker initializer: one BLAS/OpenMP thread per process (torch and onnxruntime: ``threads``)."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    threadpool_limits(1)  # stays in force: the limiter only restores on __exit__


def run_benchmark(datasets: list[tuple[str, Path]], *, methods: Iterable[str] = DEFAULT_METHODS, seeds: int = 3,
                  max_rows: int = 50_000, score: str = "neg-elbo", epochs: int | None = None, jobs: int = 1,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Run every (dataset, seed, method); return ``{"protocol": {...}, "results": [records]}``.

    Each record: dataset, method, seed, roc_auc, average_precision, fit_seconds, score_seconds,
    n_train, n_test, n_anomalies, and for the VAE fpr_at_threshold, recall_at_threshold.
    ``jobs`` > 1 runs the (dataset, seed) pairs in that many worker processes with one math thread
    each (the records keep the serial order; floating-point sums on one thread instead of several
    can move a ROC-AUC in its last digits). ``progress`` is called with a short label after each
    (dataset, seed).

    Raises InputValidationError for unknown methods, bad settings or unreadable datasets.
    """
    methods = check_methods(methods)
    if seeds < 1 or max_rows < 10 or jobs < 1:
        raise InputValidationError(f"--seeds {seeds} / --max-rows {max_rows} / --jobs {jobs}: expected seeds >= 1, "
                                   "max-rows >= 10 and jobs >= 1.")
    if score not in SCORE_OUTPUTS:
        raise InputValidationError(f"--score: got {score!r}; expected one of {', '.join(SCORE_OUTPUTS)}.")
    for _, path in datasets:  # a bad file fails before any work starts
        load_labelled(path)
    tasks = [(name, path, seed, methods, max_rows, score, epochs) for name, path in datasets for seed in range(seeds)]
    done: dict[int, list[dict]] = {}
    if jobs == 1:
        for i, task in enumerate(tasks):
            done[i] = _run_task(*task)
            if progress:
                progress(f"{task[0]} seed {task[2]}")
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = {pool.submit(_run_task, *task, 1): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                i = futures[future]
                done[i] = future.result()
                if progress:
                    progress(f"{tasks[i][0]} seed {tasks[i][2]}")
    results = [rec for i in range(len(tasks)) for rec in done[i]]
    protocol = {
        "setting": "semi-supervised (train on normal rows only); Livernoche et al. ICLR 2024, Table 1",
        "train": "seeded random 50% of the normal rows (after subsampling)",
        "test": "the other normal rows + all anomalies",
        "split": "random per seed, not file order; no bootstrap",
        "max_rows": max_rows, "seeds": seeds, "jobs": jobs, "methods": methods, "vae_score": score, "vae_epochs": epochs,
        "baseline_preprocessing": "StandardScaler fitted on the training rows",
        "vae": "default configuration; validation rows (20%) taken from the training rows",
        "datasets": [name for name, _ in datasets],
    }
    return {"protocol": protocol, "results": results}


def summary_table(results: list[dict]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(datasets, methods, mean ROC-AUC [d, m], std [d, m]) over seeds, in first-seen order."""
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    mean = np.full((len(datasets), len(methods)), np.nan)
    std = np.full_like(mean, np.nan)
    for i, d in enumerate(datasets):
        for j, m in enumerate(methods):
            v = [r["roc_auc"] for r in results if r["dataset"] == d and r["method"] == m]
            if v:
                mean[i, j], std[i, j] = np.mean(v), np.std(v)
    return datasets, methods, mean, std


def mean_ranks(mean: np.ndarray) -> np.ndarray:
    """Mean over datasets of each method's rank by mean ROC-AUC (1 = best, ties averaged)."""
    from scipy.stats import rankdata

    return np.mean([rankdata(-row) for row in mean], axis=0)


def to_markdown(report: dict) -> str:
    """The dataset × method table of ROC-AUC mean ± std over seeds, the mean and the mean rank."""
    datasets, methods, mean, std = summary_table(report["results"])
    lines = [f"ROC-AUC, mean ± std over {report['protocol']['seeds']} seed(s); protocol in benchmark.json.", "",
             "| dataset | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for i, d in enumerate(datasets):
        best = np.nanmax(mean[i])
        cells = [(f"**{mean[i, j]:.3f}**" if mean[i, j] == best else f"{mean[i, j]:.3f}") + f" ± {std[i, j]:.3f}"
                 for j in range(len(methods))]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{v:.4f}**" for v in np.nanmean(mean, axis=0)) + " |")
    lines.append("| **mean rank** | " + " | ".join(f"{v:.2f}" for v in mean_ranks(mean)) + " |")
    vae = [r for r in report["results"] if "fpr_at_threshold" in r]
    if vae:
        by = {}
        for r in vae:
            by.setdefault(r["method"], []).append(r)
        lines += ["", "At `--threshold auto` (α = 0.01), mean over datasets and seeds:", "",
                  "| method | false-alarm rate on test normals | recall on anomalies | fit s (mean) |", "|---|---:|---:|---:|"]
        for m, rs in by.items():
            lines.append(f"| {m} | {np.mean([r['fpr_at_threshold'] for r in rs]):.4f} | "
                         f"{np.mean([r['recall_at_threshold'] for r in rs]):.4f} | "
                         f"{np.mean([r['fit_seconds'] for r in rs]):.1f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | os.PathLike) -> None:
    """A PNG: ROC-AUC per dataset (x) and method (marker), mean over seeds. Needs matplotlib ([plot])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..deploy.io import atomic_write

    datasets, methods, mean, _ = summary_table(report["results"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(datasets) + 2), 4.5))
    x = np.arange(len(datasets))
    for j, m in enumerate(methods):
        ax.plot(x, mean[:, j], marker="os^vDP*X"[j % 8], linestyle="none", markersize=7 if m.startswith("vae") else 5,
                label=f"{m} (mean {np.nanmean(mean[:, j]):.3f})")
    ax.set_xticks(x, datasets, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("ROC-AUC (mean over seeds)")
    ax.set_ylim(min(0.4, float(np.nanmin(mean)) - 0.02), 1.01)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("ROC-AUC per dataset (train on a random 50% of normals)", fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def benchmark_to_folder(data: Iterable[str | os.PathLike] | None, out_dir: str | os.PathLike, *,
                        methods: Iterable[str] = DEFAULT_METHODS, seeds: int = 3, max_rows: int = 50_000,
                        score: str = "neg-elbo", epochs: int | None = None, jobs: int = 1,
                        progress: Callable[[str], None] | None = None) -> tuple[dict, str]:
    """Run :func:`run_benchmark` and write benchmark.json, benchmark.md and benchmark.png to ``out_dir``.

    The library call behind ``vae-anomaly benchmark``. ``data``: folders of, or single, labelled
    .npz files (None = the bundled datasets). Returns (the report, the Markdown table). The PNG is
    skipped with a warning when matplotlib is not installed.

    Raises
    ------
    InputValidationError : unknown methods, bad settings, unreadable or missing datasets.
    OutputWriteError : ``out_dir`` cannot be written.
    """
    from ..deploy.io import atomic_write
    from .datasets import BUNDLED, bundled_path

    methods = check_methods(methods)  # before anything is written
    datasets = find_datasets(data) if data else [(n, bundled_path(n)) for n in BUNDLED]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = run_benchmark(datasets, methods=methods, seeds=seeds, max_rows=max_rows, score=score, epochs=epochs,
                           jobs=jobs, progress=progress)
    report["protocol"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_write(out / "benchmark.json", "w") as f:
        json.dump(report, f, indent=1)
    table = to_markdown(report)
    with atomic_write(out / "benchmark.md", "w") as f:
        f.write(table)
    try:
        plot(report, out / "benchmark.png")
    except ImportError:
        warnings.warn("matplotlib is not installed, so benchmark.png was not drawn: pip install 'vae-anomaly[plot]'.")
    return report, table
