"""A visual report of a scored batch: PNG or self-contained HTML (matplotlib, extra ``[plot]``)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from ..deploy.io import atomic_write, check_output_folder, read_matrix, read_rows
from ..deploy.monitoring import top_features
from ..deploy.scorer import Scorer
from ..deploy.series import read_windows, refuse_condition
from ..errors import InputValidationError, OutputWriteError


def latent_projection(means: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D coordinates of latent means (n, k) and the axes' name: the means themselves when k <= 2,
    else their first two principal components (scikit-learn PCA, fitted on these rows)."""
    if means.shape[1] <= 2:
        return np.pad(means, ((0, 0), (0, 2 - means.shape[1]))), "z"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(means), "principal component of μ(x)"


def _figure(scorer: Scorer, result, labels, top_rows, top_feats, title: str, latent=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 + (labels is not None) + (latent is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    ax = axes[0]
    cal = np.asarray(scorer.metadata["calibration"][result.score_name])
    finite = result.scores[np.isfinite(result.scores)]
    hi = np.quantile(np.r_[cal, finite], 0.995)
    bins = np.linspace(min(cal.min(), finite.min()), hi, 50)
    ax.hist(cal, bins=bins, density=True, alpha=0.5, label=f"calibration rows (n={cal.size})")
    ax.hist(np.clip(finite, None, hi), bins=bins, density=True, alpha=0.5, label=f"this batch (n={finite.size})")
    if np.isfinite(result.threshold):
        ax.axvline(result.threshold, color="k", linestyle="--", label=f"threshold {result.threshold:.3g}")
    ax.set_xlabel(f"{result.score_name} (nats, higher = more anomalous)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"{int(result.is_anomaly.sum())} of {result.scores.size} rows flagged", fontsize=10)
    ax = axes[1]
    ax.axis("off")
    lines = ["row      score    p-value  top features"] + [
        f"{r:<6d} {result.scores[r]:>9.3g} {result.p_values[r]:>9.3g}  {', '.join(top_feats[i])}"
        for i, r in enumerate(top_rows)]
    ax.text(0, 1, "\n".join(lines), family="monospace", fontsize=8, va="top")
    ax.set_title("most anomalous rows", fontsize=10)
    if labels is not None:
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(labels, result.scores)
        ax = axes[2]
        ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(labels, result.scores):.3f}")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_xlabel("false-alarm rate")
        ax.set_ylabel("recall")
        ax.legend(loc="lower right")
        ax.set_title("ROC curve", fontsize=10)
    if latent is not None:
        coords, axis = latent
        ax = axes[-1]
        shown = np.clip(result.scores, None, np.quantile(result.scores[np.isfinite(result.scores)], 0.99))
        points = ax.scatter(coords[:, 0], coords[:, 1], c=shown, s=8, cmap="viridis")
        flagged = result.is_anomaly
        ax.scatter(coords[flagged, 0], coords[flagged, 1], s=30, facecolors="none", edgecolors="red",
                   linewidths=0.8, label=f"flagged ({int(flagged.sum())})")
        fig.colorbar(points, ax=ax, label=f"{result.score_name} (clipped at the 99th percentile)")
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
        ax.legend(fontsize=8, loc="best")
        ax.set_title("latent means, coloured by score", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def write_report(scorer: Scorer, x: np.ndarray, path: str | os.PathLike, *, labels=None, top: int = 10,
                 title: str = "vae-anomaly report", condition=None, latent: bool = False) -> None:
    """Write a report for rows ``x`` (float32, (n, d)) as ``.png`` or ``.html`` (PNG embedded).

    Panels: the batch's score histogram against the calibration scores with the threshold; the
    ``top`` most anomalous rows with their 3 most anomalous features; the ROC curve when ``labels``
    (0/1 per row) are given; with ``latent``, a 2-D projection of the rows' latent means
    (:func:`latent_projection`) coloured by score, flagged rows circled. ``condition``: a
    conditional model's conditions, one per row.

    Raises
    ------
    InputValidationError : no rows, bad labels. OutputWriteError : unknown suffix or unwritable.
    """
    import matplotlib.pyplot as plt

    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".html"):
        raise OutputWriteError(f"{path}: unknown report type {suffix!r}; expected .png or .html.")
    if x.shape[0] == 0:
        raise InputValidationError("report: no rows to report on.")
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if labels.shape[0] != x.shape[0] or not np.isin(labels, (0, 1)).all() or np.unique(labels).size < 2:
            raise InputValidationError(
                f"--labels: expected {x.shape[0]} labels of 0 and 1 with both classes present.")
    result = scorer.predict(x, feature_terms=True, condition=condition)
    top_rows = np.argsort(-result.scores, kind="stable")[: max(1, top)]
    names = scorer.feature_names
    top_feats = [[names[j] if names else str(j) for j in t]
                 for t in top_features(result.feature_terms[top_rows], 3).tolist()]
    projection = latent_projection(scorer.latent_means(x, condition=condition)) if latent else None
    fig = _figure(scorer, result, labels, top_rows, top_feats, title, projection)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    if suffix == ".png":
        with atomic_write(path) as f:
            f.write(png)
        return
    rows = "".join(f"<tr><td>{r}</td><td>{result.scores[r]:.6g}</td><td>{result.p_values[r]:.4g}</td>"
                   f"<td>{int(result.is_anomaly[r])}</td><td>{html.escape(', '.join(t))}</td></tr>"
                   for r, t in zip(top_rows, top_feats))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>model {scorer.model_id}, score {result.score_name}, "
            f"{int(result.is_anomaly.sum())} of {result.scores.size} rows flagged.</p>"
            f"<img alt='report' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            "<h2>Most anomalous rows</h2><table border='1'><tr><th>row</th><th>score</th><th>p-value</th>"
            f"<th>is_anomaly</th><th>top features</th></tr>{rows}</table></body></html>")
    with atomic_write(path, "w") as f:
        f.write(page)


def report_file(new_file: str | os.PathLike, model: str | os.PathLike, output: str | os.PathLike, *,
                labels: str | os.PathLike | None = None, top: int = 10, latent: bool = False,
                condition: str | os.PathLike | None = None) -> None:
    """:func:`write_report` for rows read from a file: the library call behind ``vae-anomaly report``.

    ``labels`` (0/1 per row) and ``condition`` (one per row) are files too. Raises as
    :func:`write_report`, plus ModelArtifactError for a bad model and InputValidationError for
    rows the model cannot score.
    """
    check_output_folder(output)
    scorer = Scorer(model)
    y = read_matrix(labels).ravel() if labels is not None else None
    conds = read_matrix(condition) if condition is not None else None
    if scorer.series is not None:  # a window model: the series' full windows, as calibrate reads them
        refuse_condition(conds, f"--condition {condition}")
        rows, y, conds = read_windows(new_file, scorer.series, labels=y)
    else:
        rows = read_rows(new_file, table=scorer.table)
    x = scorer.check_rows(rows, name=str(new_file), allow_nonfinite=scorer.masked)
    write_report(scorer, x, output, labels=y, top=top, title=str(new_file), latent=latent, condition=conds)
