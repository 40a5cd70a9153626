"""What the defaults cost: `vae-anomaly fit` and `score` run end to end as a user runs them, beside
PyOD's VAE, IsolationForest and KNN measured in the same run on the same data.

Two cases. Ours: `vae-anomaly fit normals.npy -o model.onnx --seed 0` (no other option: the
defaults) and `vae-anomaly score big.npy -m model.onnx -o out.csv`, each a subprocess timed from
process start to output written, the best of --repeat runs.
1. cardio: fit on the 1,655 normal rows x 21 features of --data (6_cardio.npz); score --rows rows
   resampled with replacement (seeded) from all its rows;
2. random: fit on --fit-rows x 64 standard-normal float32 rows; score --rows new ones.
Peers, in process on the same arrays (no process start, no file I/O: ours is the harder
measurement), also the best of --repeat: PyOD's VAE with its own defaults (on the device our fit
used), IsolationForest and KNN (distance to the 5th neighbour, = PyOD's KNN() defaults) as the
project's benchmark runs them (vae_anomaly.evaluation.benchmark.Baseline: scikit-learn defaults on
inputs standardized on the fit rows). KNN scores the first 20,000 scored rows only, its rows/s
scaled from those. The fits are also measured the other way round: PyOD's VAE as a script from
process start (imports, np.load of the same .npy, fit; it writes no model file), the measurement
that matches our CLI, and ours in process (``fit_file`` with the defaults: read, train, export,
calibrate), the one that matches PyOD's in-process fit.

Prints markdown tables:
1. fit seconds: ours (CLI) against PyOD's VAE from process start, ours in process against PyOD's
   VAE in process, each with the ratio, IsolationForest, KNN; each default model's shape (layers,
   latent size, latent samples, prior, epochs) and PyOD's defaults;
2. scoring rows/s: ours (CLI, and the in-process Scorer), PyOD's VAE with the ratio to ours (CLI),
   IsolationForest, KNN;
3. GFLOP/s of the Scorer against a numpy matmul chain with the default model's own shapes (encoder
   once, decoder once at the posterior mean, and a mixture prior's two float64 products when it has one):
   "Scorer at X% of the numpy chain";
4. peak RSS (VmHWM) and rows/s of `vae-anomaly score` on a --big-gb GB .npy with the random case's
   model, beside np.load of the same file;
5. the training budget sized by the data: the default fit (``fit_file``, in process) of --fit-sizes
   rows x 64 standard-normal features (1k, 10k, 100k, 1M), with its epochs, gradient steps and
   whether early stopping ended it, beside PyOD's VAE fitted on the same rows in process (up to
   --pyod-max-rows: at its 30 epochs of 32-row batches, 100k rows would take it about 12 minutes);
6. server fits (issue 30): `vae-anomaly fit <server>_train.csv --window auto -o model.onnx` (the
   defaults, a CLI subprocess from process start, the median of --repeat runs, not the best) on --servers of ../shared/datasets
   (an ASD server, 8,640 rows x 19 metrics every 5 minutes: goal 60 s; an SMD machine, 23,699 x 38
   a minute: goal 180 s), with the window, epochs and gradient steps it chose, beside KNN on 16-step
   windows (benchmarks/servers.py) fitted and scoring the test half in process;
7. with CUDA only: training seconds per epoch on the random case's fit rows (batch 128 / 4096,
   float32 / bf16 autocast, torch.compile).
--json PATH also writes every figure, the command and the git state (benchmarks/provenance.py).

    python benchmarks/bench_speed.py [--rows 200000] [--fit-rows 20000] [--big-gb 1.0] [--repeat 3]
        [--data ../shared/datasets/6_cardio.npz] [--fit-sizes 1000,10000,100000,1000000]
        [--pyod-max-rows 10000] [--servers asd/omi-1,smd/machine-2-2] [--only-servers] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import servers  # benchmarks/servers.py, beside this script
from provenance import git_state  # benchmarks/provenance.py, beside this script
from pyod.models.vae import VAE as PyodVAE

from vae_anomaly import Scorer
from vae_anomaly.deploy.model_file import max_chunk_rows
from vae_anomaly.evaluation.benchmark import Baseline
from vae_anomaly.evaluation.datasets import load_labelled
from vae_anomaly.training.config import TrainConfig
from vae_anomaly.training.fit import fit_file

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]
KNN_ROWS = 20_000  # rows KNN scores (against every fit row); its rows/s is scaled from these
# VmHWM (peak resident set of this process image); ru_maxrss would carry the parent's peak over exec
_HWM = "print(int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) // 1024, file=sys.stderr)"
RSS_CHILD = ("import sys; from vae_anomaly.cli.main import main; sys.argv = ['vae-anomaly'] + sys.argv[1:]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n" + _HWM)
LOAD_CHILD = "import sys, numpy as np; a = np.load(sys.argv[1]); a.sum()\n" + _HWM
# PyOD's VAE fitted as a script would, from process start (imports, np.load) to fit() returned
PYOD_FIT_CHILD = ("import sys, numpy as np\nfrom pyod.models.vae import VAE\n"
                  "VAE(random_state=0, device=sys.argv[2], verbose=0).fit(np.load(sys.argv[1]))\n")


def best_seconds(fn, repeat: int = 3) -> float:
    """Fewest seconds of a few runs of fn() (this shared 2-core machine's timings vary by up to 30%)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def rate(fn, n_rows: int, repeat: int = 3) -> float:
    """Best rows/s of fn() over n_rows rows."""
    return n_rows / best_seconds(fn, repeat)


def cli(*args) -> None:
    """Run `vae-anomaly ARGS` as a user does (a new process); its error output on failure."""
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"vae-anomaly {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr}")


def flops_per_row(d: int, k: int, hidden: tuple[int, ...], n_samples: int, components: int = 0) -> float:
    """Multiply-adds x 2 of the encoder once, the decoder once per decoded latent point (1 for the
    default score), and, for a mixture prior of ``components`` Gaussians, its two (k, M) products per point."""
    enc = sum(a * b for a, b in pairwise([d, *hidden, 2 * k]))
    dec = sum(a * b for a, b in pairwise([k, *reversed(hidden), d]))
    return 2.0 * (enc + n_samples * (dec + 2 * k * components))


def numpy_chain(X: np.ndarray, d: int, k: int, hidden: tuple[int, ...], n_samples: int, components: int = 0,
                chunk: int = 4096):
    """The same matrix products as plain numpy matmuls (+ ReLU), the GEMM rate of this machine: the
    layers in float32, a mixture prior's z @ (k, M) and z² @ (k, M) in float64 as the graph does."""
    rng = np.random.default_rng(0)
    enc = [rng.standard_normal(ab, dtype=np.float32) for ab in pairwise([d, *hidden, 2 * k])]
    dec = [rng.standard_normal(ab, dtype=np.float32) for ab in pairwise([k, *reversed(hidden), d])]
    prior = [rng.standard_normal((k, components)) for _ in range(2 if components else 0)]

    def run():
        for s in range(0, len(X), chunk):
            h = X[s : s + chunk]
            for w in enc:
                h = np.maximum(h @ w, 0)
            z = np.repeat(h[:, :k], n_samples, axis=0)
            if prior:
                z64 = z.astype(np.float64)
                z64 @ prior[0] - 0.5 * ((z64 * z64) @ prior[1])  # the prior's terms, (rows L, M)
            for w in dec:
                z = np.maximum(z @ w, 0)
    return run


def peak_rss_mb(args: list[str], code: str = RSS_CHILD) -> int:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    return int(r.stderr.strip().splitlines()[-1])


def model_shape(scorer: Scorer) -> dict:
    """The default model's shape, from its metadata (the training summary)."""
    t = scorer.metadata["training"]
    return {"hidden": tuple(t["architecture"]["hidden"]), "latent_dim": t["architecture"]["latent_dim"],
            "n_samples": t["config"]["n_samples"], "prior_components": t["latent_prior"].get("components", 0),
            "epochs_run": t["epochs_run"], "max_epochs": t["max_epochs"], "train_seconds": t["seconds"],
            "device": t["device"], "precision": t["precision"]}


def run_case(X_fit: np.ndarray, X_score: np.ndarray, folder: Path, repeat: int) -> dict:
    """Every figure of one case: ours through the CLI and the Scorer, the numpy chain, the peers."""
    folder.mkdir()
    n, d = X_score.shape
    np.save(folder / "normals.npy", X_fit)
    np.save(folder / "big.npy", X_score)
    model = folder / "model.onnx"
    r = {"fit_rows": len(X_fit), "score_rows": n, "features": d}
    r["ours_fit_cli_s"] = best_seconds(lambda: cli("fit", folder / "normals.npy", "-o", model, "--seed", 0), repeat)
    # the same fit in this process (imports paid already), as a notebook user runs it
    r["ours_fit_inprocess_s"] = best_seconds(lambda: fit_file(folder / "normals.npy", folder / "inprocess.onnx",
                                                              config=TrainConfig(seed=0)), repeat)
    r["ours_score_cli_rps"] = rate(lambda: cli("score", folder / "big.npy", "-m", model, "-o", folder / "out.csv"),
                                   n, repeat)
    scorer = Scorer(model)
    r["model"] = shape = model_shape(scorer)
    r["ours_scorer_rps"] = rate(lambda: scorer.score_samples(X_score), n, repeat)
    # the default score (negative ELBO) decodes one latent point, the posterior mean (the IWAE's
    # samples are pruned from its session)
    k, hidden, L, M = shape["latent_dim"], shape["hidden"], 1, shape["prior_components"]
    r["mflop_per_row"] = flops_per_row(d, k, hidden, L, M) / 1e6
    # the best of a few chunk sizes whose (rows L, M) float64 prior terms fit in 128 MB, and the Scorer's own
    cap = max_chunk_rows(M, L)
    chunks = sorted({c for c in (256, 1024, 4096) if c * L * M <= 2**24} | ({cap} if cap else set()))
    r["numpy_chain_rps"] = max(rate(numpy_chain(X_score, d, k, hidden, L, M, chunk=c), n, repeat) for c in chunks)

    peer = PyodVAE(random_state=0, device=shape["device"], verbose=0)
    r["pyod_vae_fit_s"] = best_seconds(lambda: peer.fit(X_fit), repeat)  # each fit builds a fresh network
    r["pyod_vae_fit_process_s"] = best_seconds(lambda: subprocess.run(
        [sys.executable, "-c", PYOD_FIT_CHILD, str(folder / "normals.npy"), shape["device"]], check=True), repeat)
    r["pyod_vae"] = {"epochs": peer.epoch_num, "batch_size": peer.batch_size, "encoder": list(peer.encoder_neuron_list),
                     "latent_dim": peer.latent_dim, "device": str(peer.device)}
    r["pyod_vae_score_rps"] = rate(lambda: peer.decision_function(X_score), n, repeat)
    for method in ("iforest", "knn"):
        base = Baseline(method, 0)
        r[f"{method}_fit_s"] = best_seconds(lambda: base.fit(X_fit), repeat)
        rows = X_score[:KNN_ROWS] if method == "knn" else X_score
        r[f"{method}_score_rps"] = rate(lambda: base.score(rows), len(rows), repeat)
    r["knn_scored_rows"] = min(n, KNN_ROWS)
    return r


def rss_rows(model: Path, folder: Path, big_gb: float, d: int) -> dict:
    """Peak RSS and rows/s of `vae-anomaly score` on a big_gb GB .npy, and the peak RSS of np.load of it."""
    chunk = 65536
    rows = int(big_gb * 1024**3 / (4 * d))
    path = folder / "huge.npy"
    with open(path, "wb") as f:  # written in pieces: this script stays small too
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, d)})
        rng = np.random.default_rng(2)
        for s in range(0, rows, chunk):
            f.write(rng.standard_normal((min(chunk, rows - s), d), dtype=np.float32).tobytes())
    t = time.perf_counter()
    rss = peak_rss_mb(["score", str(path), "-m", str(model), "-o", str(folder / "huge.csv")])
    seconds = time.perf_counter() - t
    with open(folder / "huge.csv") as f:
        assert sum(1 for _ in f) == rows + 1, "one output row per input row, and a header"
    return {"rows": rows, "file_mb": path.stat().st_size / 2**20, "score_peak_rss_mb": rss,
            "score_rps": rows / seconds, "np_load_peak_rss_mb": peak_rss_mb([str(path)], LOAD_CHILD)}


def fit_size_rows(sizes: list[int], folder: Path, pyod_max_rows: int, d: int = 64) -> list[dict]:
    """The default fit of n standard-normal rows x d for each n in ``sizes``, once each, in process
    (``fit_file``: read the .npy, train, export, calibrate), and PyOD's VAE on the same rows up to
    ``pyod_max_rows``: seconds, epochs run of the budget, gradient steps, early stop or not."""
    out = []
    for n in sizes:
        X = np.random.default_rng(n).standard_normal((n, d), dtype=np.float32)
        np.save(folder / "sized.npy", X)
        t = time.perf_counter()
        fit_file(folder / "sized.npy", folder / "sized.onnx", config=TrainConfig(seed=0))
        seconds = time.perf_counter() - t
        scorer = Scorer(folder / "sized.onnx")
        m, training = model_shape(scorer), scorer.metadata["training"]
        n_train = training["n_train"]
        row = {"rows": n, "features": d, "n_train": n_train, "ours_fit_s": seconds, "epochs_run": m["epochs_run"],
               "max_epochs": m["max_epochs"], "steps": m["epochs_run"] * -(-n_train // training["config"]["batch_size"]),
               "early_stop": m["epochs_run"] < m["max_epochs"]}
        if n <= pyod_max_rows:
            peer = PyodVAE(random_state=0, device=m["device"], verbose=0)
            row["pyod_vae_fit_s"] = best_seconds(lambda: peer.fit(X), 1)
        out.append(row)
        print(f"fit {n:,} rows: {seconds:.1f} s, {row['epochs_run']} of {row['max_epochs']} epochs", file=sys.stderr)
    return out


#: the fit-time goals of issue 30 on 2 cores, seconds, by dataset folder
SERVER_FIT_GOALS = {"asd": 60.0, "smd": 180.0}


def server_fit_rows(names: list[str], folder: Path, repeat: int) -> list[dict]:
    """``vae-anomaly fit <server>_train.csv --window auto`` from process start, ``repeat`` times per
    server (``asd/omi-1``): the median, with the fastest and slowest run (single runs on a shared
    2-core machine vary by about a third), and the model it chose, beside KNN on 16-step windows
    (fit and score the test half, once)."""
    out = []
    for name in names:
        kind, server = name.split("/")
        train = ROOT.parent / "shared" / "datasets" / kind / f"{server}_train.csv"
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            cli("fit", train, "--window", "auto", "-o", folder / f"{server}.onnx", "--seed", "0")
            runs.append(time.perf_counter() - t)
            print(f"fit {name}: {runs[-1]:.1f} s", file=sys.stderr)
        seconds = float(np.median(runs))
        scorer = Scorer(folder / f"{server}.onnx")
        training = scorer.metadata["training"]
        t = time.perf_counter()
        servers.knn(servers.load(server), 0)
        knn_s = time.perf_counter() - t
        with open(train) as f:
            rows = sum(1 for _ in f) - 1
        out.append({"server": name, "rows": rows,
                    "metrics": len(scorer.series["metrics"]), "window": scorer.series["window"],
                    "ours_fit_cli_s": seconds, "ours_fit_cli_runs_s": runs, "goal_s": SERVER_FIT_GOALS.get(kind), "epochs_run": training["epochs_run"],
                    "steps": training["epochs_run"] * -(-training["n_train"] // training["config"]["batch_size"]),
                    "knn_windows_fit_and_score_s": knn_s})
    return out


def cuda_rows(X: np.ndarray) -> list[dict]:
    """Training seconds per epoch on CUDA (3 epochs, default model) per batch size, precision, compile."""
    from vae_anomaly.training.train import TrainConfig, train

    out = []
    for batch, precision, compiled in ((128, "fp32", False), (128, "bf16", False), (4096, "fp32", False),
                                       (4096, "bf16", False), (4096, "bf16", True)):
        gpu = train(X, config=TrainConfig(epochs=3, seed=0, device="cuda", patience=100, batch_size=batch,
                                          precision=precision, compile=compiled))
        out.append({"gpu": torch.cuda.get_device_name(), "batch_size": batch, "precision": precision,
                    "compile": compiled, "s_per_epoch": gpu.summary["seconds"] / gpu.summary["epochs_run"]})
    return out


def print_server_fits(rows: list[dict]) -> None:
    print("\n| server fit (CLI, --window auto) | rows x metrics | window | epochs | gradient steps | ours fit s, median "
          "(fastest-slowest) | goal s | KNN on 16-step windows, fit + score the test half, s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        runs = r["ours_fit_cli_runs_s"]
        print(f"| {r['server']} | {r['rows']:,} x {r['metrics']} | {r['window']} | {r['epochs_run']} | {r['steps']:,} | "
              f"{r['ours_fit_cli_s']:.1f} ({min(runs):.1f}-{max(runs):.1f}, {len(runs)} runs) | {r['goal_s']:.0f} | "
              f"{r['knn_windows_fit_and_score_s']:.1f} |")


def print_tables(cases: dict, rss: dict, sized: list[dict], cuda: list[dict]) -> None:
    print("\nOurs: the CLI end to end (process start, read .npy, write model / CSV). Peers: in process "
          "(no process start, no file I/O); fits also the other way round (PyOD's VAE from process start, ours in process).")
    for name, c in cases.items():
        m, p = c["model"], c["pyod_vae"]
        prior = f"aggregate posterior of {m['prior_components']:,} rows" if m["prior_components"] else "N(0, I)"
        print(f"- {name}: our default model hidden {m['hidden']}, latent {m['latent_dim']}, negative ELBO at the "
              f"posterior mean ({m['n_samples']} latent samples for the IWAE only), prior {prior}, {m['epochs_run']} of at most {m['max_epochs']} epochs, {m['device']} "
              f"{m['precision']}; PyOD VAE defaults: {p['epochs']} epochs, batch {p['batch_size']}, encoder "
              f"{p['encoder']}, latent {p['latent_dim']}, {p['device']}")
    print("\n| case | fit rows x features | ours fit (CLI) s | PyOD VAE fit from process start s | ours / PyOD | "
          "ours fit in process s | PyOD VAE fit in process s | ours / PyOD | IsolationForest fit s | KNN fit s |"
          "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, c in cases.items():
        print(f"| {name} | {c['fit_rows']:,} x {c['features']} | {c['ours_fit_cli_s']:.1f} | {c['pyod_vae_fit_process_s']:.1f} "
              f"| {c['ours_fit_cli_s'] / c['pyod_vae_fit_process_s']:.2f} | {c['ours_fit_inprocess_s']:.1f} "
              f"| {c['pyod_vae_fit_s']:.1f} | {c['ours_fit_inprocess_s'] / c['pyod_vae_fit_s']:.2f} "
              f"| {c['iforest_fit_s']:.3f} | {c['knn_fit_s']:.3f} |")
    print("\n| case | scored rows | ours score (CLI) rows/s | ours Scorer rows/s | PyOD VAE score rows/s | "
          "ours (CLI) / PyOD | IsolationForest score rows/s | KNN score rows/s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, c in cases.items():
        print(f"| {name} | {c['score_rows']:,} | {c['ours_score_cli_rps']:,.0f} | {c['ours_scorer_rps']:,.0f} | "
              f"{c['pyod_vae_score_rps']:,.0f} | {c['ours_score_cli_rps'] / c['pyod_vae_score_rps']:.2f} | "
              f"{c['iforest_score_rps']:,.0f} | {c['knn_score_rps']:,.0f} (first {c['knn_scored_rows']:,} rows) |")
    print("\n| case | MFLOP / row | ours Scorer GFLOP/s | numpy chain rows/s | numpy chain GFLOP/s | Scorer at % of the chain |"
          "\n|---|---:|---:|---:|---:|---:|")
    for name, c in cases.items():
        f = c["mflop_per_row"] / 1e3
        print(f"| {name} | {c['mflop_per_row']:.2f} | {c['ours_scorer_rps'] * f:.1f} | {c['numpy_chain_rps']:,.0f} | "
              f"{c['numpy_chain_rps'] * f:.1f} | {100 * c['ours_scorer_rps'] / c['numpy_chain_rps']:.0f}% |")
    print(f"\n| peak RSS, random case's model | file MB | peak RSS MB | rows/s |\n|---|---:|---:|---:|\n"
          f"| vae-anomaly score ({rss['rows']:,} rows, to CSV) | {rss['file_mb']:,.0f} | {rss['score_peak_rss_mb']:,} | "
          f"{rss['score_rps']:,.0f} |\n"
          f"| np.load of the same file (peer) | {rss['file_mb']:,.0f} | {rss['np_load_peak_rss_mb']:,} | |")
    if sized:
        print("\n| fit rows x features | training rows | ours fit in process s | epochs run / budget | gradient steps | "
              "stopped early | PyOD VAE fit in process s |\n|---:|---:|---:|---:|---:|---:|---:|")
        for r in sized:
            peer = f"{r['pyod_vae_fit_s']:.1f}" if "pyod_vae_fit_s" in r else "—"
            print(f"| {r['rows']:,} x {r['features']} | {r['n_train']:,} | {r['ours_fit_s']:.1f} | {r['epochs_run']} / "
                  f"{r['max_epochs']} | {r['steps']:,} | {'yes' if r['early_stop'] else 'no'} | {peer} |")
    if cuda:
        print("\n| training, random case (3 epochs, in process) | s / epoch |\n|---|---:|")
        for g in cuda:
            print(f"| {g['gpu']}, batch {g['batch_size']}, {g['precision']}{', torch.compile' if g['compile'] else ''} "
                  f"(incl. compile) | {g['s_per_epoch']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="rows scored in each case")
    ap.add_argument("--fit-rows", type=int, default=20_000, help="fit rows of the random case")
    ap.add_argument("--big-gb", type=float, default=1.0, help="size of the peak-RSS file")
    ap.add_argument("--repeat", type=int, default=3, help="each time is the best of this many runs (a server fit: their median)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "6_cardio.npz",
                    help="the small real table (.npz with X and y; fit on its y == 0 rows)")
    ap.add_argument("--fit-sizes", default="1000,10000,100000,1000000",
                    help="rows of the sized fits (comma-separated; empty = none)")
    ap.add_argument("--pyod-max-rows", type=int, default=10_000, help="the largest sized fit PyOD's VAE also runs")
    ap.add_argument("--servers", default="asd/omi-1,smd/machine-2-2",
                    help="server fits, kind/name of ../shared/datasets (comma-separated; empty = none)")
    ap.add_argument("--only-servers", action="store_true", help="measure the server fits alone")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    X, y = load_labelled(args.data)
    X = X.astype(np.float32)
    d = 64
    rng = np.random.default_rng(0)
    data = {args.data.stem: (X[y == 0], X[rng.integers(0, len(X), args.rows)]),
            "random": (rng.standard_normal((args.fit_rows, d), dtype=np.float32),
                       rng.standard_normal((args.rows, d), dtype=np.float32))}
    print(f"{torch.get_num_threads()} torch threads; each figure the best of {args.repeat} runs")
    cases, rss, sized, cuda = {}, {}, [], []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        fits = server_fit_rows([v for v in args.servers.split(",") if v], tmp, args.repeat)
        if not args.only_servers:
            cases = {name: run_case(X_fit, X_score, tmp / name, args.repeat) for name, (X_fit, X_score) in data.items()}
            rss = rss_rows(tmp / "random" / "model.onnx", tmp, args.big_gb, d)
            sized = fit_size_rows([int(v) for v in args.fit_sizes.split(",") if v], tmp, args.pyod_max_rows)
    if not args.only_servers:
        cuda = cuda_rows(data["random"][0]) if torch.cuda.is_available() else []
        print_tables(cases, rss, sized, cuda)
    print_server_fits(fits)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(["python", "benchmarks/bench_speed.py", *sys.argv[1:]]),
                                         **git_state(ROOT), "torch_threads": torch.get_num_threads(),
                                         "repeat": args.repeat, "knn_rows": KNN_ROWS, "cases": cases, "peak_rss": rss, "fit_sizes": sized,
                                         "cuda_training": cuda, "server_fits": fits}, indent=1))


if __name__ == "__main__":
    main()
