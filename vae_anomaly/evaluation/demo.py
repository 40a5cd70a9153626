"""The demo: fit and score the bundled real datasets as a user would, beside two baselines.

For each of the bundled datasets it runs (by default :data:`DEMO_DATASETS`, the four of
``vae_anomaly/data`` whose calibration sets can flag; see its README for how they stand against the
32-dataset benchmark) the semi-supervised protocol of the benchmark is run once: fit on a seeded random half of
the normal rows, test on the other normal rows and every anomaly. The VAE goes through the same
library calls as ``vae-anomaly fit`` and ``vae-anomaly score``; IsolationForest and KNN are fitted on
the same training rows, standardized (:class:`~vae_anomaly.evaluation.benchmark.Baseline`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..deploy.io import atomic_write
from ..errors import InputValidationError, OutputWriteError
from ..training.config import TrainConfig
from .datasets import BUNDLED, bundled_path, load_labelled, semi_supervised_split

if TYPE_CHECKING:
    from rich.table import Table

#: the false-alarm rate stored in the demo's models (``--alpha``, the CLI's default)
DEMO_ALPHA = 0.01
#: the datasets of ``vae-anomaly demo`` without names: the bundled ones whose calibration set (20% of
#: the half of the normal rows fitted on) has at least 1/alpha - 1 = 99 rows, so that
#: ``--threshold auto`` can flag a row; fewest rows first. Their mean ROC-AUC gaps to IsolationForest
#: and KNN in the published benchmark are within 0.015 of the 32 datasets' (vae_anomaly/data/README.md)
DEMO_DATASETS = ("letter", "cardio", "spambase", "thyroid")
#: the demo's training budget, in gradient steps of the default batch: a fifth of ``fit``'s default
#: (``TrainConfig.target_steps``), so that the whole demo takes under 3 minutes of CPU on 2 cores
#: (benchmarks/README.md, "The demo": what the shorter budget changes there)
DEMO_STEPS = TrainConfig.target_steps // 5
#: torch's intra-op threads during the demo's fits: batches of 128 rows of a 256-wide network gain
#: little from a second thread but pay for it in CPU time (benchmarks/README.md, "The demo")
DEMO_THREADS = 1


def demo_epochs(n_fit_rows: int, seed: int = 0) -> int:
    """The epochs of the demo's budget (:data:`DEMO_STEPS`) for a fit on ``n_fit_rows`` rows, as
    ``fit --epochs`` takes them: the same epochs, and so the same early-stopping patience, that the
    automatic budget gives with ``target_steps=DEMO_STEPS``."""
    from ..training.config import auto_epochs
    from ..training.data import split_rows

    cfg = TrainConfig(seed=seed, target_steps=DEMO_STEPS)
    train_rows, _ = split_rows(n_fit_rows, cfg.val_fraction, seed)
    return auto_epochs(len(train_rows), cfg)


def _check_names(names: list[str] | None) -> list[str]:
    if names is None:
        return list(DEMO_DATASETS)
    names = list(names)
    unknown = [n for n in names if n not in BUNDLED]
    if unknown or not names:
        raise InputValidationError(
            f"dataset: got {', '.join(map(repr, unknown)) if unknown else 'none'}; expected one or more of the "
            f"bundled datasets {', '.join(BUNDLED)}.")
    return names


def _save(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, arr, allow_pickle=False)


def run_demo(names: list[str] | None, out_dir: Path, *, seed: int = 0, epochs: int | None = None,
             quiet: bool = False, say: Callable[[str], None] = print) -> list[dict]:
    """Fit the VAE on bundled real datasets, score held-out rows, and compare with two baselines.

    Per dataset ``name`` (in the order given, or :data:`DEMO_DATASETS`):

    1. split with :func:`~vae_anomaly.evaluation.datasets.semi_supervised_split` ``(y, seed)``: train on
       a random half of the normal rows; test on the other normal rows and all anomalies;
    2. write, atomically, ``out_dir/<name>/normal.npy`` (training rows, shape (n_train, d)),
       ``test.npy`` (shape (n_test, d)) and ``test_labels.npy`` (int64, shape (n_test,), 1 = anomaly);
    3. fit the VAE with :func:`~vae_anomaly.training.fit.fit_file` (``alpha`` 0.01, the default
       configuration but for ``seed`` and ``epochs``: by default the demo's budget,
       :func:`demo_epochs`) to ``model.onnx``, and score ``test.npy`` with
       :func:`~vae_anomaly.deploy.batch.score_file` at ``--threshold auto`` to ``scores.csv``; the
       equivalent ``vae-anomaly fit`` / ``vae-anomaly score`` commands are passed to ``say``;
    4. fit IsolationForest (scikit-learn defaults, ``random_state=seed``) and KNN (distance to the 5th
       nearest training row) on the standardized training rows, as the benchmark does.

    Parameters
    ----------
    names : bundled dataset names; None = :data:`DEMO_DATASETS`.
    out_dir : folder for the files (created if missing; one subfolder per dataset).
    seed : seed of the split, of training and of IsolationForest.
    epochs : maximum training epochs; None = the demo's budget of :data:`DEMO_STEPS` steps
        (:func:`demo_epochs`), a fifth of ``fit``'s.
    quiet : no training progress bar (otherwise one per fit, on stderr).
    say : called with each line of narration (the dataset, the commands, notes such as a
        calibration set too small for ``alpha``), without rich markup.

    Returns
    -------
    list of dict, one per dataset, in order, with keys ``dataset``; ``n_train``, ``n_test``,
    ``n_anomalies`` (row counts; the anomalies are all in the test rows); ``vae_roc_auc``,
    ``vae_average_precision``, ``iforest_roc_auc``, ``knn_roc_auc`` (in [0, 1], on the test rows, from
    continuous scores where higher = more anomalous; 0.5 = chance); ``false_alarm_rate`` (share of
    test normal rows flagged) and ``recall`` (share of anomalies flagged) at ``--threshold auto``;
    ``n_calibration`` (the model's calibration rows: with fewer than 1/alpha - 1 = 99 of them
    ``--threshold auto`` flags nothing, so both rates are 0); ``fit_seconds`` (VAE training, wall
    seconds, from the model's metadata).

    Raises
    ------
    InputValidationError : an unknown dataset name (the message lists the bundled ones), or an
        empty list; checked before anything is written.
    OutputWriteError : ``out_dir`` cannot be created or written.
    TrainingError : training diverged (from ``fit_file``).
    """
    import torch

    chosen = _check_names(names)
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(DEMO_THREADS)
    try:
        return [_run_one(name, out_dir, seed, epochs, quiet, say) for name in chosen]
    finally:
        torch.set_num_threads(threads)


def _run_one(name: str, out_dir: Path, seed: int, epochs: int | None, quiet: bool,
             say: Callable[[str], None]) -> dict:
    """:func:`run_demo`'s steps 1-4 for one bundled dataset: its row of the table."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ..deploy.batch import score_file
    from ..training.fit import fit_file
    from .benchmark import Baseline

    X, y = load_labelled(bundled_path(name))
    train_idx, test_idx = semi_supervised_split(y, seed)
    folder = out_dir / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputWriteError(f"{folder}: cannot create the folder ({e.strerror}); expected a writable "
                               "place for the demo's files. Pass another output folder.") from None
    paths = {k: folder / f"{k}.npy" for k in ("normal", "test", "test_labels")}
    y_test = y[test_idx]
    for key, arr in (("normal", X[train_idx]), ("test", X[test_idx]), ("test_labels", y_test)):
        _save(paths[key], arr)
    model_path, scores_path = folder / "model.onnx", folder / "scores.csv"
    say(f"{name}: {len(train_idx)} normal rows to fit on; {len(test_idx)} test rows "
        f"({int(y_test.sum())} anomalies)")
    n_epochs = demo_epochs(len(train_idx), seed) if epochs is None else epochs
    options = (f" --seed {seed}" if seed else "") + f" --epochs {n_epochs}"
    say(f"$ vae-anomaly fit {paths['normal']} -o {model_path}{options}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        meta = fit_file(paths["normal"], model_path, alpha=DEMO_ALPHA, progress=not quiet,
                        config=TrainConfig(seed=seed, epochs=n_epochs))
        say(f"$ vae-anomaly score {paths['test']} -m {model_path} --threshold auto -o {scores_path}")
        res = score_file(paths["test"], model_path, scores_path)
    for message in dict.fromkeys(str(w.message) for w in caught):  # once each, in order
        say(f"note: {message}")
    normal, anomalous = y_test == 0, y_test == 1
    baseline_auc = {m: float(roc_auc_score(y_test, Baseline(m, seed).fit(X[train_idx]).score(X[test_idx])))
                    for m in ("iforest", "knn")}
    return {
        "dataset": name, "n_train": len(train_idx), "n_test": len(test_idx),
        "n_anomalies": int(anomalous.sum()),
        "vae_roc_auc": float(roc_auc_score(y_test, res.scores)),
        "vae_average_precision": float(average_precision_score(y_test, res.scores)),
        "false_alarm_rate": float(res.is_anomaly[normal].mean()),
        "recall": float(res.is_anomaly[anomalous].mean()),
        "iforest_roc_auc": baseline_auc["iforest"], "knn_roc_auc": baseline_auc["knn"],
        "n_calibration": int(meta["n_calibration"]),
        "fit_seconds": float(meta.get("training", {}).get("seconds", float("nan"))),
    }


#: (column title, row key) of :func:`demo_table`
TABLE_COLUMNS = (("dataset", "dataset"), ("VAE\nROC-AUC", "vae_roc_auc"),
                 ("IForest\nROC-AUC", "iforest_roc_auc"), ("KNN\nROC-AUC", "knn_roc_auc"),
                 ("VAE avg\nprecision", "vae_average_precision"), ("false-alarm\nrate", "false_alarm_rate"),
                 ("recall", "recall"))


def demo_table(rows: list[dict]) -> Table:
    """One table of :func:`run_demo`'s rows: a line per dataset, then a ``mean`` line.

    Columns: dataset, VAE ROC-AUC, IsolationForest ROC-AUC, KNN ROC-AUC, VAE average precision, and
    the VAE's false-alarm rate and recall at ``--threshold auto``; numbers to 4 decimals. The mean
    line is the unweighted mean over the datasets of each column. A dataset whose calibration set is
    too small for any row to be flagged at alpha 0.01 (fewer than 99 rows) shows "n/a" for both
    rates, named in the caption and left out of their means. The caption counts the datasets on
    which the VAE's ROC-AUC is above each baseline's, and ends with the next step: the commands that
    fit and score one's own rows, with the demo's mean false-alarm rate and ROC-AUC beside KNN's.

    Raises
    ------
    InputValidationError : ``rows`` is empty.
    """
    from rich.table import Table

    if not rows:
        raise InputValidationError("rows: got none; expected run_demo's result, one dict per dataset.")
    n = len(rows)
    wins_if = sum(r["vae_roc_auc"] > r["iforest_roc_auc"] for r in rows)
    wins_knn = sum(r["vae_roc_auc"] > r["knn_roc_auc"] for r in rows)
    limit = 1.0 / DEMO_ALPHA - 1.0
    can_flag = [not ("n_calibration" in r and r["n_calibration"] < limit) for r in rows]
    caption = (f"Held-out rows of each dataset (test = the normal rows not fitted on + all anomalies); ROC-AUC "
               f"and average precision from continuous scores, higher = more anomalous. VAE ROC-AUC above "
               f"IsolationForest on {wins_if} of {n} datasets, above KNN on {wins_knn} of {n}. False-alarm "
               f"rate and recall: the VAE at --threshold auto (alpha={DEMO_ALPHA}).")
    small = [r["dataset"] for r, ok in zip(rows, can_flag) if not ok]
    if small:
        caption += (f" {', '.join(small)}: fewer than {limit:.0f} calibration rows, so --threshold auto can flag "
                    f"no row at alpha={DEMO_ALPHA} (rates n/a).")
    flaggable = [r for r, ok in zip(rows, can_flag) if ok]
    rate = (f"{np.mean([r['false_alarm_rate'] for r in flaggable]):.1%} of held-out normal rows were flagged at "
            f"alpha={DEMO_ALPHA}, and " if flaggable else "")
    caption += (f" Next, on your own data: 'vae-anomaly fit normal.csv -o model.onnx' on rows you believe normal, "
                f"then 'vae-anomaly score new.csv -m model.onnx' flags new rows at a known false-alarm rate (here "
                f"{rate}the VAE's mean ROC-AUC was {np.mean([r['vae_roc_auc'] for r in rows]):.3f} against KNN's "
                f"{np.mean([r['knn_roc_auc'] for r in rows]):.3f}).")
    table = Table(title="vae-anomaly demo: the VAE beside IsolationForest (IForest) and KNN", caption=caption,
                  caption_justify="left")
    for title, _ in TABLE_COLUMNS:
        table.add_column(title, justify="left" if title == "dataset" else "right")
    rates = ("false_alarm_rate", "recall")

    def cell(r: dict, key: str, ok: bool) -> str:
        return f"{r[key]:.4f}" if ok or key not in rates else "n/a"

    for i, (r, ok) in enumerate(zip(rows, can_flag)):
        table.add_row(str(r["dataset"]), *(cell(r, key, ok) for _, key in TABLE_COLUMNS[1:]), end_section=i == n - 1)
    means = [(f"{np.mean([r[key] for r in (flaggable if key in rates else rows)]):.4f}"
              if flaggable or key not in rates else "n/a") for _, key in TABLE_COLUMNS[1:]]
    table.add_row("mean", *means)
    return table
