"""The ``vae-anomaly`` command line (Typer): thin commands over the library, one error funnel.

Exit codes (DESIGN.md §6): 0 success, 1 internal error, 2 usage, 3 invalid input data,
4 invalid or incompatible model, 5 output cannot be written, 130 SIGINT, 143 SIGTERM. Errors are
one line on stderr; ``--debug`` shows the traceback. Only ``fit``, ``demo`` and ``benchmark``
import torch; ``serve`` needs the [serve] extra.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import numpy as np
import typer

from vae_anomaly import Scorer, ScoreResult, __version__
from vae_anomaly.deploy import conditions
from vae_anomaly.deploy.calibration import check_alpha
from vae_anomaly.errors import InputValidationError, OutputWriteError, VaeAnomalyError
from vae_anomaly.deploy.io import (ScoreWriter, atomic_write, check_output_folder, iter_matrix_chunks, output_format,
                            read_matrix)

app = typer.Typer(
    name="vae-anomaly",
    help="Train a VAE anomaly detector on normal data, export it to one ONNX file, score new data.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@functools.cache
def _err():
    """The stderr console for progress and messages (rich is imported only when something is said)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Arch(str, Enum):
    auto = "auto"
    mlp = "mlp"
    conv = "conv"


class ConditionKind(str, Enum):
    auto = "auto"
    categorical = "categorical"
    numeric = "numeric"


class ScoreName(str, Enum):
    neg_elbo = "neg-elbo"
    recon_prob = "recon-prob"
    iwae = "iwae"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler so that cleanup (temporary files) runs before exit 143."""


def _on_sigterm(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _errors(on_signal: str = "the output file was left as it was") -> Iterator[None]:
    """The one error funnel: VaeAnomalyError -> one line + its exit code; anything else -> exit 1.

    SIGINT exits 130 and SIGTERM 143, after atomic writes have removed their temporary files: an
    existing model is never touched by an interrupted command.
    """
    warnings.showwarning = _one_line_warning
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except KeyboardInterrupt:
        print(f"error: interrupted (SIGINT); {on_signal}.", file=sys.stderr)
        raise typer.Exit(130) from None
    except _Terminated:
        print(f"error: terminated (SIGTERM); {on_signal}.", file=sys.stderr)
        raise typer.Exit(143) from None
    except VaeAnomalyError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise  # click prints usage errors itself, with exit code 2
    except Exception as e:
        if _state["debug"]:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """vae-anomaly: honest, deterministic, calibrated VAE anomaly scores from one ONNX file.

    Exit codes: 0 ok, 1 internal error, 2 usage, 3 invalid input data, 4 invalid model,
    5 output cannot be written, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    _state["debug"] = debug


def _parse_threshold(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; expected 'auto' or a number.") from None


def _widths(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """'128,128' -> (128, 128); None -> None. Raises InputValidationError for anything else."""
    if text is None:
        return None
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise InputValidationError(f"--hidden: got {text!r}; expected comma-separated layer widths, "
                                   "e.g. 128,128.") from None


def fit_file(normal_file: Path, output: Path, *, val: Optional[Path], alpha: float, quiet: bool,
             checkpoint: Optional[Path] = None, checkpoint_every: int = 10, resume: Optional[Path] = None,
             condition: Optional[Path] = None, val_condition: Optional[Path] = None, condition_kind: str = "auto",
             **config) -> dict:
    """Read, train with a progress bar on stderr, export; return the metadata."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    check_output_folder(output)  # fail before training, not after
    check_alpha(alpha)
    X = read_matrix(normal_file)
    X_val = read_matrix(val) if val is not None else None
    C = read_matrix(condition) if condition is not None else None
    C_val = read_matrix(val_condition) if val_condition is not None else None
    if (C is None) != (C_val is None) and X_val is not None:
        raise InputValidationError("--val-condition: a conditional fit with --val needs the validation rows' "
                                   "conditions too (and only then).")
    cfg = TrainConfig(**{k: v for k, v in config.items() if v is not None})
    bar = Progress(TextColumn("[bold]fit[/] epoch {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("train {task.fields[train]:.3f}  val neg-ELBO {task.fields[val]:.3f}"),
                   TimeElapsedColumn(), console=_err(), disable=quiet)
    task = bar.add_task("fit", total=None, train=float("nan"), val=float("nan"))

    def progress(epoch: int, max_epochs: int, train_loss: float, val_loss: float) -> None:
        if not bar.live.is_started:  # started by the first epoch: input errors print no empty bar
            bar.start()
        bar.update(task, completed=epoch, total=max_epochs, train=train_loss, val=val_loss)

    try:
        result = train(X, X_val=X_val, condition=C, condition_val=C_val, condition_kind=condition_kind,
                       config=cfg, progress=progress, name=str(normal_file),
                       checkpoint=checkpoint if checkpoint is not None else resume,
                       checkpoint_every=checkpoint_every, resume=resume)
    finally:
        bar.stop()
    meta = export_model(result, output, alpha=alpha)
    if not quiet:
        s = meta["training"]
        _err().print(f"wrote {output}: {s['n_train']} training rows, {s['n_val']} calibration rows, "
                  f"best epoch {s['best_epoch']}/{s['epochs_run']}, {s['seconds']:.1f} s on {s['device']}")
    return meta


@app.command()
def fit(
    normal_file: Annotated[Path, typer.Argument(
        help="Normal rows: .npy (rows, or images (N, H, W) / (N, C, H, W)), .npz (array X), .csv or .parquet.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the model.")] = Path("model.onnx"),
    val: Annotated[Optional[Path], typer.Option("--val", help="Separate validation/calibration rows.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of rows held out for early stopping and calibration.")] = 0.2,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (default: auto from the data size).")] = None,
    latent_dim: Annotated[Optional[int], typer.Option(help="Latent size (default: ceil(d/4) in [2, 16]).")] = None,
    hidden: Annotated[Optional[str], typer.Option(
        help="Hidden layer widths, comma-separated (default 256,256,256 for tables); smaller models, "
             "e.g. 128,128, score faster.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (split, initialization, batches, score noise).")] = 0,
    device: Annotated[Device, typer.Option(help="Training device.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(help="Rows per gradient step (larger suits a GPU).")] = 128,
    precision: Annotated[Precision, typer.Option(
        help="Training arithmetic: auto = bf16 autocast on CUDA, float32 on the CPU.")] = Precision.auto,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the training step.")] = False,
    alpha: Annotated[float, typer.Option(help="False-alarm rate of --threshold auto, stored in the model.")] = 0.01,
    beta: Annotated[float, typer.Option(help="Weight of the KL term (1 = the ELBO).")] = 1.0,
    kl_warmup: Annotated[int, typer.Option(help="Epochs of linear KL warm-up (0 = off).")] = 0,
    free_bits: Annotated[float, typer.Option(
        help="Nats per latent dimension of KL left unpenalized (free bits; 0 = off).")] = 0.0,
    arch: Annotated[Arch, typer.Option(
        help="auto = convolutional for images (N, H, W) / (N, C, H, W), else MLP.")] = Arch.auto,
    prior_max_rows: Annotated[int, typer.Option(
        help="Score with the training rows' aggregate posterior as the latent prior when there are at "
             "most this many training rows, else with N(0, I) (0 = always N(0, I)).")] = 4096,
    condition: Annotated[Optional[Path], typer.Option(
        help="Conditions of NORMAL_FILE's rows (ids, one-hot or numeric context): a conditional VAE.")] = None,
    condition_kind: Annotated[ConditionKind, typer.Option(
        help="auto = integer ids or one-hot rows are categorical, anything else numeric.")] = ConditionKind.auto,
    val_condition: Annotated[Optional[Path], typer.Option(help="Conditions of the --val rows.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Write a training checkpoint here every --checkpoint-every epochs.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Epochs between checkpoints.")] = 10,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue from a checkpoint written for the same NORMAL_FILE (keeps checkpointing to it).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Train a VAE on NORMAL_FILE, calibrate it on held-out rows, and write one ONNX model file."""
    with _errors():
        fit_file(normal_file, output, val=val, alpha=alpha, quiet=quiet, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, resume=resume, val_fraction=val_fraction,
                 epochs=epochs, latent_dim=latent_dim, hidden=_widths(hidden), seed=seed, device=device.value,
                 beta=beta, kl_warmup=kl_warmup, batch_size=batch_size, precision=precision.value, compile=compile_,
                 free_bits=free_bits, arch=arch.value, prior_max_rows=prior_max_rows, condition=condition,
                 val_condition=val_condition, condition_kind=condition_kind.value)


class NanPolicy(str, Enum):
    raise_ = "raise"
    flag = "flag"


def score_file(new_file: Path, model: Path, output: Optional[Path], *, threshold: str | float,
               alpha: Optional[float], score: Optional[str], nan_policy: str = "raise", fdr: Optional[float] = None,
               features: int = 0, summary_json: Optional[Path] = None, chunk_rows: int = 65536,
               condition: Optional[Path] = None) -> ScoreResult:
    """Stream NEW_FILE through the scorer in row chunks; write ``output`` (format by suffix) atomically,
    or CSV to stdout; return the whole file's ScoreResult (scores, p-values and flags only).
    ``condition``: a conditional model's condition file, one row per row of NEW_FILE (read whole:
    conditions are small next to the data)."""
    from vae_anomaly.deploy.calibration import benjamini_hochberg
    from vae_anomaly.deploy.monitoring import batch_summary, top_features

    scorer = Scorer(model)
    conds = read_matrix(condition) if condition is not None else None
    # a missing, needless or malformed condition file fails before any output is written
    conditions.encode(conds, scorer.condition, 0 if conds is None else len(conds), str(condition or new_file))
    fmt = output_format(output)
    for path in (output, summary_json):
        if path is not None:
            check_output_folder(path)
    parts: list[tuple] = []  # (ScoreResult, top features) per chunk
    feature_sum, finite_rows, done = np.zeros(scorer.n_features), 0, 0
    with contextlib.ExitStack() as stack:
        f = sys.stdout.buffer if output is None else stack.enter_context(atomic_write(output))
        writer = ScoreWriter(f, fmt, top_features=features > 0)
        for raw in iter_matrix_chunks(new_file, chunk_rows):
            x = scorer.check_rows(raw, name=str(new_file), allow_nonfinite=nan_policy == "flag", first_row=done)
            res = scorer.predict(x, score=score, threshold=threshold, alpha=alpha, name=str(new_file),
                                 nan_policy=nan_policy, feature_terms=features > 0,
                                 condition=None if conds is None else conds[done : done + x.shape[0]])
            top = top_features(res.feature_terms, features) if features > 0 else None
            ok = np.isfinite(x).all(axis=1)
            feature_sum += x[ok].sum(axis=0, dtype=np.float64)
            finite_rows += int(ok.sum())
            done += x.shape[0]
            if fdr is None:
                writer.write(res.scores, res.p_values, res.is_anomaly, top)
            parts.append((res, top) if fdr is not None else (res, None))
        if conds is not None and len(conds) != done:
            raise InputValidationError(f"{condition}: {len(conds)} condition rows for {done} rows in {new_file}; "
                                       "expected one condition per row, in the same order.")
        scores = np.concatenate([r.scores for r, _ in parts]) if parts else np.empty(0, np.float32)
        p_values = np.concatenate([r.p_values for r, _ in parts]) if parts else np.empty(0)
        flags = np.concatenate([r.is_anomaly for r, _ in parts]) if parts else np.empty(0, bool)
        t = parts[0][0].threshold if parts else float("nan")
        if fdr is not None:  # BH needs every p-value of the file before any flag
            flags, t = benjamini_hochberg(p_values, fdr) | (p_values == 0), float("nan")
            start = 0
            for res, top in parts:
                n = res.scores.shape[0]
                writer.write(res.scores, res.p_values, flags[start : start + n], top)
                start += n
        writer.close()
        if output is None:
            sys.stdout.flush()
    result = ScoreResult(scores=scores, p_values=p_values, is_anomaly=flags, threshold=t,
                         score_name=parts[0][0].score_name if parts else (score or scorer.default_score),
                         alpha=parts[0][0].alpha if parts and fdr is None else None)
    n_bad = int(np.count_nonzero(p_values == 0))  # only rows with NaN/inf get p = 0
    if n_bad:
        warnings.warn(f"{new_file}: {n_bad} rows hold NaN or infinite values; reported as anomalous "
                      "(score inf, p_value 0, is_anomaly 1).")
    if summary_json is not None:
        with atomic_write(summary_json, "w") as f:
            json.dump(batch_summary(result, feature_sum / finite_rows if finite_rows else None, scorer), f, indent=1)
    return result


@app.command()
def score(
    new_file: Annotated[Path, typer.Argument(help="Rows to score: .npy, .npz (array X) or .csv.")],
    model: Annotated[Path, typer.Option("-m", "--model", help="Model file from 'fit'.")] = Path("model.onnx"),
    threshold: Annotated[str, typer.Option(
        help="'auto' flags rows whose conformal p-value <= alpha; a number flags score > it.")] = "auto",
    alpha: Annotated[Optional[float], typer.Option(help="Override the model's alpha for --threshold auto.")] = None,
    score_name: Annotated[Optional[ScoreName], typer.Option("--score", help="Score type (default: the model's).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output file; .csv, .jsonl, .npy (scores) or .parquet (default: CSV on stdout).")] = None,
    nan_policy: Annotated[NanPolicy, typer.Option(
        help="'raise' refuses NaN/inf (exit 3); 'flag' scores the other rows and flags those as anomalous.")] = NanPolicy.raise_,
    fdr: Annotated[Optional[float], typer.Option(
        help="Flag by Benjamini-Hochberg at this false discovery rate over the file's p-values.")] = None,
    features: Annotated[int, typer.Option(
        help="Add a top_features column: each row's K most anomalous feature indices.")] = 0,
    summary_json: Annotated[Optional[Path], typer.Option(
        help="Write a monitoring summary (counts, rate, quantiles, drift, model id) as JSON.")] = None,
    fail_on_anomaly: Annotated[bool, typer.Option(
        "--fail-on-anomaly", help="Exit 6 when any row is flagged (after writing the outputs).")] = False,
    chunk_rows: Annotated[int, typer.Option(
        min=1, help="Rows read and scored at a time: sets peak memory, not the results.")] = 65536,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's conditions, one row per row of NEW_FILE.")] = None,
) -> None:
    """Score NEW_FILE with onnxruntime alone: CSV with row,score,p_value,is_anomaly (higher score = more anomalous)."""
    with _errors():
        result = score_file(new_file, model, output, threshold=_parse_threshold(threshold), alpha=alpha,
                            score=score_name.value if score_name else None, nan_policy=nan_policy.value,
                            fdr=fdr, features=features, summary_json=summary_json, chunk_rows=chunk_rows,
                            condition=condition)
    if fail_on_anomaly and result.is_anomaly.any():
        raise typer.Exit(6)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="Model file to recalibrate (rewritten atomically).")],
    val_file: Annotated[Path, typer.Argument(help="Validation rows: normal rows, or labelled with --labels.")],
    labels: Annotated[Optional[Path], typer.Option(help="0/1 label per row of VAL_FILE (1 = anomaly).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="New false-alarm rate for --threshold auto.")] = None,
    target: Annotated[str, typer.Option(help="fpr (conformal, needs no labels), f1 or recall (need --labels).")] = "fpr",
    recall: Annotated[float, typer.Option(help="Target recall for --target recall.")] = 0.9,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's conditions, one row per row of VAL_FILE.")] = None,
) -> None:
    """Recompute the calibration scores and threshold from new validation data, without retraining."""
    with _errors():
        from vae_anomaly.deploy.recalibration import recalibrate

        if target not in ("fpr", "f1", "recall"):
            raise typer.BadParameter(f"--target: got {target!r}; expected fpr, f1 or recall.")
        y = read_matrix(labels).ravel() if labels is not None else None
        report = recalibrate(model, read_matrix(val_file), labels=y, alpha=alpha, target=target, recall=recall,
                             name=str(val_file), condition=read_matrix(condition) if condition else None)
        print(json.dumps(report, indent=1))


@app.command()
def report(
    new_file: Annotated[Path, typer.Argument(help="Rows to report on: .npy, .npz or .csv.")],
    model: Annotated[Path, typer.Option("-m", "--model", help="Model file.")] = Path("model.onnx"),
    labels: Annotated[Optional[Path], typer.Option(help="0/1 label per row (adds the ROC curve).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="report.png or report.html.")] = Path("report.png"),
    top: Annotated[int, typer.Option(help="How many of the most anomalous rows to list.")] = 10,
    latent: Annotated[bool, typer.Option(
        "--latent", help="Add a 2-D projection of the latent means coloured by score.")] = False,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's conditions, one row per row of NEW_FILE.")] = None,
) -> None:
    """Score histogram against the calibration scores, top anomalous rows and features, ROC with labels."""
    with _errors():
        from vae_anomaly.evaluation.report import write_report

        check_output_folder(output)
        scorer = Scorer(model)
        x = scorer.check_rows(read_matrix(new_file), name=str(new_file))
        y = read_matrix(labels).ravel() if labels is not None else None
        write_report(scorer, x, output, labels=y, top=top, title=str(new_file), latent=latent,
                     condition=read_matrix(condition) if condition is not None else None)
        _err().print(f"wrote {output}")


@app.command()
def sample(
    model: Annotated[Path, typer.Option("-m", "--model", help="Model file.")] = Path("model.onnx"),
    n: Annotated[Optional[int], typer.Option("-n", help="Rows to draw (default: one per --condition row).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the .npy array.")] = Path("samples.npy"),
    seed: Annotated[int, typer.Option(help="Seed of the prior draws.")] = 0,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's condition for each row to draw.")] = None,
) -> None:
    """Draw rows from the prior through the decoder (onnxruntime alone): a .npy shaped like the training rows."""
    with _errors():
        if not str(output).lower().endswith(".npy"):
            raise OutputWriteError(f"{output}: sample writes a .npy array; expected a path ending in .npy.")
        check_output_folder(output)
        scorer = Scorer(model)
        conds = read_matrix(condition) if condition is not None else None
        if n is None:
            if conds is None:
                raise typer.BadParameter("-n: how many rows to draw? Give -n N (or --condition FILE, one row each).")
            n = len(conds)
        rows = scorer.sample(n, condition=conds, seed=seed)
        with atomic_write(output) as f:
            np.save(f, rows, allow_pickle=False)
        _err().print(f"wrote {output}: {n} rows of shape {tuple(rows.shape[1:])} drawn from the prior")


@app.command()
def info(model: Annotated[Path, typer.Argument(help="Model file.")] = Path("model.onnx")) -> None:
    """Print the model's metadata as JSON on stdout."""
    with _errors():
        print(json.dumps(Scorer(model).metadata, indent=2))


@app.command()
def demo(
    dataset: Annotated[str, typer.Argument(help="Bundled dataset: cardio, thyroid, breastw or ionosphere.")] = "cardio",
    out_dir: Annotated[Path, typer.Option(help="Folder for the split, the model and the scores.")] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 0,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (default: auto).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit on half of a bundled real dataset's normal rows, score the rest, print ROC-AUC vs IsolationForest."""
    with _errors():
        from rich.console import Console
        from rich.table import Table
        from sklearn.ensemble import IsolationForest
        from sklearn.metrics import average_precision_score, roc_auc_score
        from sklearn.preprocessing import StandardScaler

        from vae_anomaly.evaluation.datasets import bundled_path, load_labelled, semi_supervised_split

        X, y = load_labelled(bundled_path(dataset))
        train_idx, test_idx = semi_supervised_split(y, seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {k: out_dir / f"{k}.npy" for k in ("normal", "test", "test_labels")}
        for key, arr in (("normal", X[train_idx]), ("test", X[test_idx]), ("test_labels", y[test_idx])):
            with atomic_write(paths[key]) as f:
                np.save(f, arr, allow_pickle=False)
        model_path, scores_path = out_dir / "model.onnx", out_dir / "scores.csv"
        _err().print(f"[bold]{dataset}[/]: {len(train_idx)} normal rows to fit on; "
                  f"{len(test_idx)} test rows ({int(y[test_idx].sum())} anomalies)")
        _err().print(f"$ vae-anomaly fit {paths['normal']} -o {model_path}")
        fit_file(paths["normal"], model_path, val=None, alpha=0.01, quiet=quiet, seed=seed, epochs=epochs)
        _err().print(f"$ vae-anomaly score {paths['test']} -m {model_path} --threshold auto -o {scores_path}")
        y_test = y[test_idx]
        scorer = Scorer(model_path)
        table = Table(title=f"{dataset}: held-out rows, --threshold auto (alpha={scorer.alpha})")
        for col in ("detector", "ROC-AUC", "avg precision", "false-alarm rate", "recall"):
            table.add_column(col)
        results = {scorer.default_score: score_file(paths["test"], model_path, scores_path, threshold="auto",
                                                    alpha=None, score=None)}
        results.update({n: scorer.predict(X[test_idx], score=n) for n in scorer.score_names if n not in results})
        for name, r in results.items():
            table.add_row(f"vae {name}", f"{roc_auc_score(y_test, r.scores):.4f}",
                          f"{average_precision_score(y_test, r.scores):.4f}",
                          f"{r.is_anomaly[y_test == 0].mean():.4f}", f"{r.is_anomaly[y_test == 1].mean():.4f}")
        scaler = StandardScaler().fit(X[train_idx])
        forest = IsolationForest(random_state=seed).fit(scaler.transform(X[train_idx]))
        s_if = -forest.score_samples(scaler.transform(X[test_idx]))
        table.add_row("IsolationForest", f"{roc_auc_score(y_test, s_if):.4f}",
                      f"{average_precision_score(y_test, s_if):.4f}", "-", "-")
        Console().print(table)


@app.command()
def benchmark(
    data: Annotated[Optional[list[Path]], typer.Argument(
        help="Folders of, or single, .npz files with X (n, d) and y (1 = anomaly). Default: the bundled datasets.")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: vae, vae-neg-elbo, vae-recon-prob, vae-iwae, "
                                              "iforest, knn, lof, ocsvm, pyod-vae.")] = "vae,iforest,knn,lof,ocsvm",
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 (split, subsample and training).")] = 3,
    max_rows: Annotated[int, typer.Option(help="Subsample larger datasets to this many rows.")] = 50_000,
    out_dir: Annotated[Path, typer.Option(help="Where benchmark.json, benchmark.md and benchmark.png go.")] = Path("benchmark-out"),
    score_name: Annotated[ScoreName, typer.Option("--score", help="Score of the 'vae' method.")] = ScoreName.neg_elbo,
    epochs: Annotated[Optional[int], typer.Option(help="VAE maximum epochs (default: auto, as in fit).")] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes, one (dataset, seed) at a time each, one thread each; "
                                           "e.g. the number of cores.")] = 1,
) -> None:
    """ROC-AUC of the VAE against IsolationForest, KNN, LOF and OC-SVM on labelled datasets."""
    with _errors():
        from rich.console import Console
        from rich.markdown import Markdown
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from vae_anomaly.evaluation.benchmark import check_methods, find_datasets, plot, run_benchmark, to_markdown
        from vae_anomaly.evaluation.datasets import BUNDLED, bundled_path

        datasets = find_datasets(data) if data else [(n, bundled_path(n)) for n in BUNDLED]
        method_list = check_methods(m.strip() for m in methods.split(",") if m.strip())
        out_dir.mkdir(parents=True, exist_ok=True)
        total = len(datasets) * seeds
        t0 = time.perf_counter()
        with Progress(TextColumn("[bold]benchmark[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=_err()) as bar:
            task = bar.add_task("", total=total)

            def progress(label: str) -> None:
                bar.update(task, advance=1, description=label)
                if not _err().is_terminal:  # logs get one line per step instead of a live bar
                    _err().print(f"benchmark {int(bar.tasks[0].completed)}/{total} {label} "
                              f"({time.perf_counter() - t0:.0f} s)")

            report = run_benchmark(datasets, methods=method_list, seeds=seeds, max_rows=max_rows,
                                   score=score_name.value, epochs=epochs, jobs=jobs,
                                   progress=progress)
        report["protocol"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        with atomic_write(out_dir / "benchmark.json", "w") as f:
            json.dump(report, f, indent=1)
        table = to_markdown(report)
        with atomic_write(out_dir / "benchmark.md", "w") as f:
            f.write(table)
        try:
            plot(report, out_dir / "benchmark.png")
        except ImportError:
            warnings.warn("matplotlib is not installed, so benchmark.png was not drawn: pip install 'vae-anomaly[plot]'.")
        Console().print(Markdown(table))
        _err().print(f"wrote {out_dir}/benchmark.json, benchmark.md, benchmark.png in {report['protocol']['wall_seconds']:.0f} s")


@app.command()
def serve(
    model: Annotated[Path, typer.Option("-m", "--model", help="Model file to serve (hot-reloaded when replaced).")] = Path("model.onnx"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (one onnxruntime session each).")] = 1,
    max_rows: Annotated[int, typer.Option(help="Most rows in one request (else 413).")] = 100_000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB (else 413).")] = 64.0,
) -> None:
    """Serve the model over HTTP: POST /score, /reload; GET /healthz, /readyz, /model, /metrics, /docs."""
    with _errors(on_signal="the server shut down"):
        import uvicorn

        Scorer(model)  # refuse a bad model here, with exit 4, before binding the port
        os.environ.update(VAE_ANOMALY_MODEL=str(model.resolve()), VAE_ANOMALY_MAX_ROWS=str(max_rows),
                          VAE_ANOMALY_MAX_BYTES=str(int(max_body_mb * 1024 * 1024)))
        _err().print(f"serving {model} on http://{host}:{port} ({workers} worker(s)); docs at /docs")
        uvicorn.run("vae_anomaly.integrations.service:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
