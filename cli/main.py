"""The ``vae-anomaly`` command line (Typer): each command parses its arguments and makes one
library call; one error funnel turns errors into one line and an exit code.

Exit codes (docs/cli.md): 0 success, 1 internal error, 2 usage, 3 invalid input data,
4 invalid or incompatible model, 5 output cannot be written, 6 ``score --fail-on-anomaly`` flagged
a row, 130 SIGINT, 143 SIGTERM. Errors are one line on stderr; ``--debug`` shows the traceback.
Only ``fit``, ``demo`` and ``benchmark`` import torch; ``serve`` needs the [serve] extra.
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

import typer

from vae_anomaly import Scorer, __version__
from vae_anomaly.errors import VaeAnomalyError
from vae_anomaly.training.config import TrainConfig

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


class Target(str, Enum):
    fpr = "fpr"
    f1 = "f1"
    recall = "recall"


class ScoreName(str, Enum):
    neg_elbo = "neg-elbo"
    recon_prob = "recon-prob"
    iwae = "iwae"


class TimeOrder(str, Enum):
    strict = "strict"
    as_read = "as-read"


class Seasons(str, Enum):
    off = "off"
    auto = "auto"


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


NoHeader = Annotated[bool, typer.Option(
    "--no-header", help="The CSV has no header row: its columns are named f0, f1, ...")]
Delimiter = Annotated[Optional[str], typer.Option(
    help="The CSV's field separator (',', ';' or 'tab'; default: detected from the file).")]
TimeOrderOption = Annotated[TimeOrder, typer.Option(
    help="A series' rows whose timestamp repeats or goes back (a clock repeating an hour at a daylight-saving "
         "change): 'strict' refuses them (exit 3), 'as-read' takes each, in file order, as the next step.")]


def _csv_format(no_header: bool, delimiter: str | None):
    from vae_anomaly.deploy.tables import CsvFormat

    return CsvFormat(header=not no_header, delimiter="\t" if delimiter in ("tab", "\\t") else delimiter)


def _parse_window(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; expected 'auto' or a number of time steps.") from None


def _parse_threshold(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; expected 'auto' or a number.") from None


@app.command()
def fit(
    normal_file: Annotated[Path, typer.Argument(
        help="Normal rows: a table (.csv with a header, .parquet; numeric and categorical columns, matched "
             "by name when scoring) or a matrix (.npy rows or images (N, H, W) / (N, C, H, W), .npz array X).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the model.")] = Path("model.onnx"),
    val: Annotated[Optional[Path], typer.Option("--val", help="Separate validation/calibration rows.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of rows held out for early stopping and calibration.")] = TrainConfig.val_fraction,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (default: auto from the data size).")] = None,
    latent_dim: Annotated[Optional[int], typer.Option(help="Latent size (default: ceil(d/4) in [2, 16]).")] = None,
    hidden: Annotated[Optional[str], typer.Option(
        help="Hidden layer widths, comma-separated (default 256,256,256 for tables; 128,128,128 for a window "
             "of more than 256 values, W x metrics); smaller models, e.g. 128,128, score faster.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (split, initialization, batches, score noise).")] = TrainConfig.seed,
    device: Annotated[Device, typer.Option(help="Training device.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(help="Rows per gradient step (larger suits a GPU).")] = TrainConfig.batch_size,
    precision: Annotated[Precision, typer.Option(
        help="Training arithmetic: auto = bf16 autocast on CUDA, float32 on the CPU.")] = Precision.auto,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the training step.")] = False,
    alpha: Annotated[float, typer.Option(help="False-alarm rate of --threshold auto, stored in the model.")] = 0.01,
    beta: Annotated[float, typer.Option(help="Weight of the KL term (1 = the ELBO).")] = TrainConfig.beta,
    kl_warmup: Annotated[int, typer.Option(help="Epochs of linear KL warm-up (0 = off).")] = TrainConfig.kl_warmup,
    free_bits: Annotated[float, typer.Option(
        help="Nats per latent dimension of KL left unpenalized (free bits; 0 = off).")] = TrainConfig.free_bits,
    arch: Annotated[Arch, typer.Option(
        help="auto = convolutional for images (N, H, W) / (N, C, H, W), else MLP.")] = Arch.auto,
    prior_max_rows: Annotated[int, typer.Option(
        help="Score with the training rows' aggregate posterior as the latent prior when there are at "
             "most this many training rows, else with N(0, I) (0 = always N(0, I)). Costs that many "
             "Gaussian terms per row at scoring.")] = TrainConfig.prior_max_rows,
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
    exclude: Annotated[Optional[str], typer.Option(
        help="Columns to ignore at fit and at score, comma-separated (e.g. labels).")] = None,
    id_columns: Annotated[Optional[str], typer.Option(
        help="ID columns, comma-separated: never features; carried into the score output (timestamps, hosts).")] = None,
    categorical: Annotated[Optional[str], typer.Option(
        help="Integer columns to model as categories, comma-separated (text and boolean columns always are).")] = None,
    window: Annotated[Optional[str], typer.Option(
        help="A metric series: the model sees W consecutive time steps of the numeric columns and scores "
             "each timestamp by the window ending there ('auto' = 64 steps for up to 4 metrics, 32 up to 8, "
             "16 beyond).")] = None,
    time_column: Annotated[Optional[str], typer.Option(
        help="The series' time column (default: 'timestamp', 'time', or the one date/time column).")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="A series' known anomalous points, one 0/1 label per row: left out of the likelihood.")] = None,
    time_order: TimeOrderOption = TimeOrder.strict,
    time_unit: Annotated[Optional[str], typer.Option(
        help="A time column of epoch numbers: their unit, s, ms, us or ns (recorded in the model; numbers "
             "without it are refused).")] = None,
    seasons: Annotated[Seasons, typer.Option(
        help="A series' seasons: 'auto' conditions the model on the time of day when the training period spans "
             "2 days or more, and on the day of week from 14 (for series with daily or weekly patterns).")] = Seasons.off,
    no_header: NoHeader = False,
    delimiter: Delimiter = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Train a VAE on NORMAL_FILE, calibrate it on held-out rows, and write one ONNX model file."""
    with _errors():
        from vae_anomaly.training.config import parse_widths
        from vae_anomaly.training.fit import fit_file

        config = TrainConfig(val_fraction=val_fraction, epochs=epochs, latent_dim=latent_dim, hidden=parse_widths(hidden),
                             seed=seed, device=device.value, beta=beta, kl_warmup=kl_warmup, batch_size=batch_size,
                             precision=precision.value, compile=compile_, free_bits=free_bits, arch=arch.value,
                             prior_max_rows=prior_max_rows)
        meta = fit_file(normal_file, output, config=config, val=val, alpha=alpha, condition=condition,
                        val_condition=val_condition, condition_kind=condition_kind.value, checkpoint=checkpoint,
                        checkpoint_every=checkpoint_every, resume=resume, progress=not quiet, exclude=exclude,
                        id_columns=id_columns, categorical=categorical,
                        csv_format=_csv_format(no_header, delimiter), window=_parse_window(window),
                        time_column=time_column, labels=labels, time_order=time_order.value,
                        time_unit=time_unit, seasons=seasons.value)
        if not quiet:
            t = meta["training"]
            _err().print(f"wrote {output}: {t['n_train']} training rows, {t['n_val']} calibration rows, "
                         f"best epoch {t['best_epoch']}/{t['epochs_run']}, {t['seconds']:.1f} s on {t['device']}")
            if meta.get("series"):
                sp = meta["series"]
                _err().print(f"windows of {sp['window']} steps of {sp['step_seconds']:g} s over "
                             f"{', '.join(sp['metrics'])}; {sp['inserted_steps']} missing steps inserted"
                             + (f"; conditioned on the time of {' and '.join(sp['season'])}" if sp.get("season") else "")
                             + (f"; {sp['out_of_order_rows']} rows out of time order taken as read"
                                if sp.get("out_of_order_rows") else ""))


class NanPolicy(str, Enum):
    raise_ = "raise"
    flag = "flag"


@app.command()
def score(
    new_file: Annotated[Path, typer.Argument(
        help="Rows to score: .csv or .parquet (columns matched by name), or .npy / .npz (array X).")],
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
        help="Add a top_features column: each row's K most anomalous features (column names, or indices); "
             "for a window model, top_metrics: its K metrics with the largest shares of the score "
             "(metric:share, shares of all metrics sum to 1).")] = 0,
    summary_json: Annotated[Optional[Path], typer.Option(
        help="Write a monitoring summary (counts, rate, quantiles, drift, model id) as JSON.")] = None,
    fail_on_anomaly: Annotated[bool, typer.Option(
        "--fail-on-anomaly", help="Exit 6 when any row is flagged (after writing the outputs).")] = False,
    chunk_rows: Annotated[int, typer.Option(
        min=1, help="Rows read and scored at a time: sets peak memory, not the results.")] = 65536,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's conditions, one row per row of NEW_FILE.")] = None,
    time_order: TimeOrderOption = TimeOrder.strict,
    state: Annotated[Optional[Path], typer.Option(
        help="A window model's state file: read if it exists (this file continues the series scored before), "
             "written after the outputs. Without it, the first W-1 rows get no p-value and are never flagged.")] = None,
    events: Annotated[Optional[Path], typer.Option(
        help="A window model's flagged timestamps grouped into events (start, end, peak, top metrics): .csv or "
             ".jsonl.")] = None,
    no_header: NoHeader = False,
    delimiter: Delimiter = None,
) -> None:
    """Score NEW_FILE with onnxruntime alone: one output row per input row, the model's ID columns then
    row,score,p_value,is_anomaly (higher score = more anomalous)."""
    with _errors():
        from vae_anomaly.deploy.batch import score_file

        result = score_file(new_file, model, output, threshold=_parse_threshold(threshold), alpha=alpha,
                            score=score_name.value if score_name else None, nan_policy=nan_policy.value,
                            fdr=fdr, features=features, summary_json=summary_json, chunk_rows=chunk_rows,
                            condition=condition, csv_format=_csv_format(no_header, delimiter),
                            time_order=time_order.value, state=state, events=events)
    if fail_on_anomaly and result.is_anomaly.any():
        raise typer.Exit(6)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="Model file to recalibrate (rewritten atomically).")],
    val_file: Annotated[Path, typer.Argument(help="Validation rows: normal rows, or labelled with --labels.")],
    labels: Annotated[Optional[Path], typer.Option(help="0/1 label per row of VAL_FILE (1 = anomaly).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="New false-alarm rate for --threshold auto.")] = None,
    target: Annotated[Target, typer.Option(help="fpr (conformal, needs no labels), f1 or recall (need --labels).")] = Target.fpr,
    recall: Annotated[float, typer.Option(help="Target recall for --target recall.")] = 0.9,
    condition: Annotated[Optional[Path], typer.Option(
        help="A conditional model's conditions, one row per row of VAL_FILE.")] = None,
) -> None:
    """Recompute the calibration scores and threshold from new validation data, without retraining."""
    with _errors():
        from vae_anomaly.deploy.recalibration import recalibrate_file

        report = recalibrate_file(model, val_file, labels=labels, condition=condition, alpha=alpha,
                                  target=target.value, recall=recall)
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
        from vae_anomaly.evaluation.report import report_file

        report_file(new_file, model, output, labels=labels, top=top, latent=latent, condition=condition)
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
        from vae_anomaly.deploy.batch import sample_file

        if n is None and condition is None:
            raise typer.BadParameter("-n: how many rows to draw? Give -n N (or --condition FILE, one row each).")
        rows = sample_file(model, output, n, seed=seed, condition=condition)
        _err().print(f"wrote {output}: {len(rows)} rows of shape {tuple(rows.shape[1:])} drawn from the prior")


@app.command()
def info(model: Annotated[Path, typer.Argument(help="Model file.")] = Path("model.onnx")) -> None:
    """Print the model's metadata as JSON on stdout."""
    with _errors():
        print(json.dumps(Scorer(model).metadata, indent=2))


@app.command()
def demo(
    datasets: Annotated[Optional[list[str]], typer.Argument(
        help="Bundled datasets to run (default: letter, cardio, spambase and thyroid, whose calibration sets can "
             "flag at alpha 0.01); see vae_anomaly/data/README.md.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for the splits, the models and the scores.")] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 0,
    epochs: Annotated[Optional[int], typer.Option(
        help="Maximum epochs (default: the demo's budget, a fifth of fit's steps).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Fit on half of each bundled real dataset's normal rows, score the rest, and print ROC-AUC beside
    IsolationForest and KNN, with the means (about 2.5 minutes on one core)."""
    with _errors():
        from rich.console import Console

        from vae_anomaly.evaluation.demo import demo_table, run_demo

        Console().print(demo_table(run_demo(datasets or None, out_dir, seed=seed, epochs=epochs, quiet=quiet,
                                            say=_err().print)))


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
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from vae_anomaly.evaluation.benchmark import benchmark_to_folder

        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        t0 = time.perf_counter()
        with Progress(TextColumn("[bold]benchmark[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=_err()) as bar:
            task = bar.add_task("", total=None)

            def progress(label: str) -> None:
                bar.update(task, advance=1, description=label)
                if not _err().is_terminal:  # logs get one line per step instead of a live bar
                    _err().print(f"benchmark {int(bar.tasks[0].completed)} {label} "
                                 f"({time.perf_counter() - t0:.0f} s)")

            report, table = benchmark_to_folder(data, out_dir, methods=method_list, seeds=seeds, max_rows=max_rows,
                                                score=score_name.value, epochs=epochs, jobs=jobs, progress=progress)
        Console().print(Markdown(table))
        _err().print(f"wrote {out_dir}/benchmark.json, benchmark.md, benchmark.png in "
                     f"{report['protocol']['wall_seconds']:.0f} s")


@app.command()
def serve(
    model: Annotated[Path, typer.Option("-m", "--model", help="Model file to serve (hot-reloaded when replaced).")] = Path("model.onnx"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (one onnxruntime session each).")] = 1,
    max_rows: Annotated[int, typer.Option(help="Most rows in one request (else 413).")] = 100_000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB (else 413).")] = 64.0,
    token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the bearer token that every route but /healthz then requires "
             "(Authorization: Bearer <token>); default: the VAE_ANOMALY_TOKEN environment variable, if set.")] = None,
    no_token: Annotated[bool, typer.Option(
        "--no-token", help="Serve without a token even beyond loopback (anyone who reaches the port can score, "
                           "read the model and reload it).")] = False,
) -> None:
    """Serve the model over HTTP: POST /score, /reload; GET /healthz, /readyz, /model, /metrics, /docs.

    A host beyond loopback needs a token (--token-file or VAE_ANOMALY_TOKEN), or --no-token."""
    with _errors(on_signal="the server shut down"):
        from vae_anomaly.integrations.service import serve as run_service

        run_service(model, host=host, port=port, workers=workers, max_rows=max_rows,
                    max_bytes=int(max_body_mb * 1024 * 1024), token_file=token_file, no_token=no_token,
                    say=_err().print)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
