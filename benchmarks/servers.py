"""Server monitoring tables (issue 30): a window VAE on many metrics against KNN on 16-step windows.

    python benchmarks/servers.py                                   # the 8 shared servers, --window auto
    python benchmarks/servers.py --window 8,16,auto --servers omi-1,omi-2 --jobs 2
    python benchmarks/servers.py --seeds 0,1,2 --jobs 2 --write results/servers.json   # benchmarks/README.md's run
    python benchmarks/servers.py --report results/servers.json     # its tables again, from the records

Data: ``../shared/datasets/smd/`` (2 machines, 38 metrics a minute) and ``../shared/datasets/asd/``
(6 servers, 19 metrics every 5 minutes); see their README.md. Each server has ``<name>_train.csv``
(``timestamp`` and the metrics; normal by the publisher's word), ``<name>_test.csv`` (the same
columns and ``label``), and ``<name>_interpretation.txt``: ``start-end:dims`` per labelled segment
(test rows ``start`` to ``end``, both included, 0-based; metrics 1-based in column order), the
metrics the operators blamed.

Protocol, per server and window option:

* ``vae`` -- the product as a user runs it: ``vae-anomaly fit train.csv --window W -o m.onnx --seed S``
  (wall seconds of the command: interpreter start-up, torch import and ONNX export included), then
  ``vae-anomaly score test.csv -m m.onnx -o out.csv --features M`` (M = the number of metrics: every
  metric's share of each row's score, ``top_metrics``). The test file scored is the last W − 1
  training rows followed by the test rows without ``label`` (the test half continues the training
  half), so every test row has a full window and a p-value; the W − 1 rows in front are dropped from
  the output. ``is_anomaly`` is the product's ``--threshold auto`` (conformal p-value <= alpha =
  0.01, the online calibration of a series).
* ``knn`` -- the shared READMEs' peer: the metrics standardized with the training rows' mean and std
  (std 0 -> 1), windows of the 16 steps ending at each row flattened, over training and test rows as
  one series; the training windows are those inside the training half (at most 20,000, a seeded
  sample); the score is the distance to the 5th nearest training window (scikit-learn
  NearestNeighbors). A metric's share of a row's score is its slots' part of the squared distance to
  that 5th neighbour.

Metrics per server, on the test rows: point-wise ROC-AUC and average precision (scikit-learn); for
``vae``, the realised false-alarm rate (share of normal test rows flagged) and recall (share of
labelled rows flagged) at ``--threshold auto``; HitRate@P% (OmniAnomaly, Su et al., KDD 2019, §4.5):
for a labelled row of a segment whose operators blamed the metric set G, the share of G among the
row's floor(P/100 · |G|) metrics with the largest shares (at most all of them), averaged over the
labelled rows of all segments; P = 100 and 150.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

from provenance import git_state, source_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
SERVERS = {**{f"omi-{i}": "asd" for i in range(1, 7)}, "machine-1-6": "smd", "machine-2-2": "smd"}
KNN_WINDOW, KNN_MAX_TRAIN = 16, 20_000


def load(server: str) -> dict:
    """The server's training and test tables, labels and blamed-metric segments."""
    folder = DATA / SERVERS[server]
    train = pd.read_csv(folder / f"{server}_train.csv")
    test = pd.read_csv(folder / f"{server}_test.csv")
    metrics = [c for c in train.columns if c != "timestamp"]
    segments = []
    for line in (folder / f"{server}_interpretation.txt").read_text().split():
        rows, dims = line.split(":")
        a, b = map(int, rows.split("-"))
        segments.append((a, b, [metrics[int(j) - 1] for j in dims.split(",")]))
    return {"name": server, "train": train, "test": test.drop(columns="label"), "metrics": metrics,
            "labels": test["label"].to_numpy().astype(bool), "segments": segments}


def hit_rate(shares: np.ndarray, metrics: list[str], segments: list, p: float) -> float:
    """HitRate@p% of per-row metric shares (n_test, M) against the blamed metrics of each segment."""
    hits = []
    for a, b, blamed in segments:
        k = min(len(metrics), int(np.floor(p / 100 * len(blamed))))
        want = np.isin(np.asarray(metrics), blamed)
        top = np.argsort(-shares[a : b + 1], axis=1, kind="stable")[:, :k]
        hits.extend(want[top].sum(axis=1) / len(blamed))
    return float(np.mean(hits))


def evaluate(ser: dict, scores: np.ndarray, shares: np.ndarray, flags: np.ndarray | None) -> dict:
    y = ser["labels"]
    out = {"roc_auc": float(roc_auc_score(y, scores)), "ap": float(average_precision_score(y, scores)),
           "hit_rate_100": hit_rate(shares, ser["metrics"], ser["segments"], 100),
           "hit_rate_150": hit_rate(shares, ser["metrics"], ser["segments"], 150)}
    if flags is not None:
        out.update(false_alarm_rate=float(flags[~y].mean()), recall=float(flags[y].mean()))
    return out


def knn(ser: dict, seed: int) -> dict:
    """KNN on 16-step windows: scores and per-metric shares of the test rows."""
    train, test = ser["train"][ser["metrics"]].to_numpy(float), ser["test"][ser["metrics"]].to_numpy(float)
    mu, sd = train.mean(axis=0), train.std(axis=0)
    z = (np.vstack([train, test]) - mu) / np.where(sd > 0, sd, 1.0)
    w, d = KNN_WINDOW, z.shape[1]
    win = np.lib.stride_tricks.sliding_window_view(z, w, axis=0).transpose(0, 2, 1).reshape(-1, w * d)  # row i ends at i+w-1
    n_train = train.shape[0] - w + 1
    fit_rows = win[:n_train]
    if n_train > KNN_MAX_TRAIN:
        fit_rows = fit_rows[np.sort(np.random.default_rng(seed).choice(n_train, KNN_MAX_TRAIN, replace=False))]
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=5).fit(fit_rows)
    query = win[train.shape[0] - w + 1 :]
    dist, idx = nn.kneighbors(query)
    sq = (query - fit_rows[idx[:, -1]]) ** 2
    per_metric = sq.reshape(len(query), w, d).sum(axis=1)
    shares = per_metric / np.maximum(per_metric.sum(axis=1, keepdims=True), 1e-300)
    rec = evaluate(ser, dist[:, -1], shares, None)
    rec["fit_s"] = time.perf_counter() - t0
    return rec


def cli(*args: str, threads: int | None) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``vae-anomaly ARGS`` from this checkout; (wall seconds, completed process)."""
    extra = {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd, env = source_cli(ROOT, COLUMNS="200", **extra)
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"vae-anomaly {args[0]} exited {proc.returncode}: {tail[0][:300]}")
    return time.perf_counter() - t0, proc


def parse_top_metrics(column: pd.Series, metrics: list[str]) -> np.ndarray:
    """The ``top_metrics`` column (``metric:share;...``) as shares, float64 (n, M) in ``metrics``' order."""
    at = {m: j for j, m in enumerate(metrics)}
    shares = np.zeros((len(column), len(metrics)))
    for i, text in enumerate(column.fillna("").tolist()):
        for item in filter(None, text.split(";")):
            m, s = item.rsplit(":", 1)
            shares[i, at[m]] = float(s)
    return shares


def vae(ser: dict, window: str, seed: int, tmp: Path, threads: int | None, extra: list[str]) -> dict:
    """Fit on the training CSV and score the test rows, through the CLI."""
    tag = f"{ser['name']}_W{window}_s{seed}_{abs(hash(tuple(extra)))}"
    train_csv, model = tmp / f"{tag}_train.csv", tmp / f"{tag}.onnx"
    ser["train"].to_csv(train_csv, index=False)
    fit_s, _ = cli("fit", str(train_csv), "--window", window, "-o", str(model), "--seed", str(seed), *extra,
                   threads=threads)
    _, info = cli("info", str(model), threads=threads)
    w = int(json.loads(info.stdout)["series"]["window"])
    test_csv, out = tmp / f"{tag}_test.csv", tmp / f"{tag}_out.csv"
    pd.concat([ser["train"].iloc[len(ser["train"]) - (w - 1) :], ser["test"]]).to_csv(test_csv, index=False)
    score_s, _ = cli("score", str(test_csv), "-m", str(model), "-o", str(out), "--features",
                     str(len(ser["metrics"])), threads=threads)
    res = pd.read_csv(out).iloc[w - 1 :]
    if len(res) != len(ser["test"]):
        raise RuntimeError(f"{ser['name']}: {len(res)} scored test rows, expected {len(ser['test'])}")
    rec = evaluate(ser, res["score"].to_numpy(float), parse_top_metrics(res["top_metrics"], ser["metrics"]),
                   res["is_anomaly"].to_numpy().astype(bool))
    rec.update(fit_s=fit_s, score_s=score_s, window=w)
    for path in (train_csv, model, test_csv, out):
        path.unlink(missing_ok=True)
    return rec


def markdown(records: list[dict]) -> str:
    """Per server and method, the mean over seeds; then the mean over servers."""
    frame = pd.DataFrame(records)
    cols = ["roc_auc", "ap", "hit_rate_100", "hit_rate_150", "false_alarm_rate", "fit_s"]
    per = frame.groupby(["server", "method"])[[c for c in cols if c in frame]].mean()
    lines = ["| server | method | ROC-AUC | AP | HitRate@100% | HitRate@150% | false-alarm rate | fit s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    order = [s for s in SERVERS if s in set(frame["server"])]
    for server in order + ["**mean**"]:
        rows = per.loc[server] if server != "**mean**" else per.groupby("method").mean()
        for method, r in rows.iterrows():
            cells = [f"{r[c]:.3f}" if c in r and r[c] == r[c] else "—" for c in cols[:5]]
            fit = f"{r['fit_s']:.1f}" if r.get("fit_s") == r.get("fit_s") else "—"
            lines.append(f"| {server} | {method} | {' | '.join(cells)} | {fit} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated server names")
    ap.add_argument("--window", default="auto", help="comma-separated --window values of fit")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--fit-args", default="", help="extra fit arguments, e.g. '--hidden 128,128'")
    ap.add_argument("--jobs", type=int, default=1, help="fits at once (each then uses one thread)")
    ap.add_argument("--write", type=Path, help="write the records and means here (JSON)")
    ap.add_argument("--report", type=Path, help="print the tables of a written run and stop")
    args = ap.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())["records"]))
        return
    servers, windows = args.servers.split(","), args.window.split(",")
    seeds, extra = [int(s) for s in args.seeds.split(",")], args.fit_args.split()
    threads = 1 if args.jobs > 1 else None
    data = {s: load(s) for s in servers}
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(s, w, seed) for s in servers for w in windows for seed in seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {job: pool.submit(vae, data[job[0]], job[1], job[2], Path(tmp), threads, extra) for job in jobs}
            for seed in seeds:
                for s in servers:
                    records.append({"server": s, "method": "knn", "seed": seed, **knn(data[s], seed)})
                    print(json.dumps(records[-1]), flush=True)
            for (s, w, seed), fut in futures.items():
                records.append({"server": s, "method": f"vae W={w}", "seed": seed, **fut.result()})
                print(json.dumps(records[-1]), flush=True)
    frame = pd.DataFrame(records)
    means = frame.groupby("method").mean(numeric_only=True).drop(columns="seed")
    print(markdown(records))
    if args.write:
        args.write.write_text(json.dumps({"git": git_state(ROOT), "python": sys.version.split()[0],
                                          "cpus": os.cpu_count(), "jobs": args.jobs, "fit_args": extra,
                                          "records": records, "means": means.reset_index().to_dict("records")},
                                         indent=1))


if __name__ == "__main__":
    main()
