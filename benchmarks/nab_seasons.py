"""Seasons screen (issue 32, item 3): does the time of day and week help the window model on NAB's
three seasonal series (nyc_taxi, machine_temperature, ambient_temperature)?

    python benchmarks/nab_seasons.py /tmp/nab_seasons      # 6 fits, about 10 min on 2 cores
    python benchmarks/nab_seasons.py /tmp/nab_seasons --conditional --seeds 0,1   # 12 fits, about 15 min
    python benchmarks/nab_seasons.py /tmp/nab_all --conditional --all --write results/nab_seasons_all.json  # 29 fits
    python benchmarks/nab_seasons.py --compare results/nab_seasons_all.json results/nab_variants_bound.json

The product path as ``nab.py`` runs it (``fit --window 64`` on the first 15%, seed 0, ``--time-order
as-read``; the whole series scored with ``--threshold auto``), once as is and once with four extra
metric columns: sin and cos of the time of day and of the time of week, known inputs the encoder
can read the season from (a screen of the idea before a conditional model is built). Prints
point-wise ROC-AUC, AP, realised false-alarm rate and event recall per series (``nab.evaluate``).

``--conditional``: the season as the conditional VAE's condition instead (``fit --condition``): the
same four values at each window's last time step feed the encoder, the decoder and the prior's mean
m(c), and are not scored (no likelihood term). On the script's windows of the standardized series
(``nab.window_matrix``, as ``nab_variants.py``: training windows inside the first 15%,
``--val-fraction`` as there), once without and once with the condition per seed, scored in process
(the negative ELBO), beside KNN on the same windows; prints ROC-AUC and AP per series and seed.
With ``--all``, every labelled series, conditioned only, on the seasons its training part spans twice
(the day from 2 days, the week from 14: ``fit --seasons auto``'s rule); ``--compare`` pairs that
record with ``nab_variants.py``'s unconditioned fits of the same windows, per half of the series."""
import json, os, subprocess, sys, warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, pandas as pd
import nab  # benchmarks/nab.py, beside this script

KEYS = ["realKnownCause/nyc_taxi.csv", "realKnownCause/machine_temperature_system_failure.csv",
        "realKnownCause/ambient_temperature_system_failure.csv"]


def _ns(ts) -> np.ndarray:
    """Timestamps as int64 nanoseconds (a naive clock read as UTC, as the product reads it)."""
    return pd.to_datetime(ts).to_numpy("datetime64[ns]").astype(np.int64)


def season(ts, parts=("day", "week")) -> np.ndarray:
    """(n, 2 per part) float32: sin and cos of the time of day and/or of week of each timestamp, as the
    product computes them (``vae_anomaly.deploy.series.window_condition``)."""
    from vae_anomaly.deploy.series import window_condition

    return window_condition({"season": list(parts)}, _ns(ts))


def conditional_job(k: str, conditioned: bool, seed: int, out: Path, allw: dict, spans: bool = False) -> tuple:
    """One fit of series ``k``'s windows, with the season as the condition or without; ROC-AUC, AP
    of its negative ELBO and of KNN on the same windows."""
    from vae_anomaly import Scorer

    ser = nab.load_series(k, allw[k])
    w = 64
    X = nab.window_matrix(ser["z"], w)
    from vae_anomaly.deploy.series import season_parts  # fit --seasons auto's rule, on the training part

    parts = tuple(season_parts(_ns(ser["ts"][:ser["n_train"]]), "auto")) if spans else ("day", "week")
    if conditioned and not parts:
        return k, conditioned, seed, float("nan"), float("nan"), float("nan"), float("nan"), parts
    C = season(ser["ts"], parts or ("day",))[w - 1:]  # the season of each window's last step
    n_tr = ser["n_train"] - w + 1
    vf = min(0.5, max(0.2, nab.MIN_CAL / n_tr))
    tag = f"{k.split('/')[1].removesuffix('.csv')}_{int(conditioned)}_{seed}"
    np.save(out / f"{tag}_X.npy", X[:n_tr])
    np.save(out / f"{tag}_C.npy", C[:n_tr])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "vae_anomaly.cli.main", "fit", str(out / f"{tag}_X.npy"), "-o",
                    str(out / f"{tag}.onnx"), "--seed", str(seed), "--val-fraction", f"{vf:.4f}", "-q",
                    *(["--condition", str(out / f"{tag}_C.npy"), "--condition-kind", "numeric"] if conditioned else [])],
                   env=env, check=True)
    s = Scorer(out / f"{tag}.onnx").score_samples(X, condition=C if conditioned else None)
    ev = nab.evaluate(ser, nab.expand(s, ser["n"], w), None)
    kn = nab.evaluate(ser, nab.expand(nab.knn_scores(X[:n_tr], X)[0], ser["n"], w), None)
    return k, conditioned, seed, ev["roc_auc"], ev["ap"], kn["roc_auc"], kn["ap"], parts


def job(k: str, seasonal: bool, out: Path, allw: dict) -> tuple:
    """One fit and score of series ``k``, with the season columns or without; its metrics."""
    ser = nab.load_series(k, allw[k])
    df = pd.read_csv(nab.DATA / k)
    if seasonal:
        for name, col in zip(("day_sin", "day_cos", "week_sin", "week_cos"), season(df["timestamp"]).T):
            df[name] = col
    tag = k.split("/")[1].removesuffix(".csv") + ("_season" if seasonal else "")
    df.to_csv(out / f"{tag}_all.csv", index=False)
    df.iloc[:ser["n_train"]].to_csv(out / f"{tag}_train.csv", index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "vae_anomaly.cli.main", "fit", str(out / f"{tag}_train.csv"), "--window", "64",
                    "-o", str(out / f"{tag}.onnx"), "--seed", "0", "--time-order", "as-read", "-q"], env=env, check=True)
    from vae_anomaly import score_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = score_file(out / f"{tag}_all.csv", out / f"{tag}.onnx", out / f"{tag}_out.csv", time_order="as-read")
    s = r.scores.astype(float)
    low = np.nanmin(s[np.isfinite(s)])
    ev = nab.evaluate(ser, np.where(np.isfinite(s), s, low), r.is_anomaly)
    return k, seasonal, ev["roc_auc"], ev["ap"], ev["far"], ev["event_recall"]


def compare(seasons_json: Path, variants_json: Path) -> None:
    """Per half and over all series: mean ROC-AUC and AP without the condition, with it (a series whose
    training part spans no season keeps its unconditioned figures), and KNN's; the series up and down
    by more than 0.002; the two-sided Wilcoxon signed-rank p of the paired differences."""
    from scipy.stats import wilcoxon

    from nab_alarms import HALVES_SEED  # benchmarks/nab_alarms.py: the halves its step was chosen on

    plain = json.loads(variants_json.read_text())["per_series"]
    cond = {r["series"]: r for r in json.loads(seasons_json.read_text())["per_series"] if r["conditioned"]}
    keys = sorted(plain)
    perm = np.random.default_rng(HALVES_SEED).permutation(len(keys))
    halves = {"H1": sorted(keys[i] for i in perm[: len(keys) // 2]),
              "H2": sorted(keys[i] for i in perm[len(keys) // 2:]), "all": keys}
    for h, ks in halves.items():
        for m in ("roc_auc", "ap"):
            a = np.array([plain[k]["neg-elbo"][m] for k in ks])
            b = np.array([cond[k][m] if k in cond and np.isfinite(cond[k][m]) else plain[k]["neg-elbo"][m] for k in ks])
            knn = np.array([plain[k]["knn"][m] for k in ks])
            d = b - a
            p = wilcoxon(b, a).pvalue if np.any(d != 0) else 1.0
            pk = wilcoxon(b, knn).pvalue
            print(f"{h:3s} {m:7s} ({len(ks)} series): without {a.mean():.4f}, with the season {b.mean():.4f} "
                  f"({d.mean():+.4f}; {(d > 0.002).sum()} up, {(d < -0.002).sum()} down; p = {p:.3f}); "
                  f"KNN {knn.mean():.4f} (with the season against KNN: {(b > knn).sum()} won, p = {pk:.3f})")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="nab_seasons", type=Path, help="folder for the files")
    ap.add_argument("--conditional", action="store_true", help="the season as the condition (script's windows)")
    ap.add_argument("--seeds", default="0", help="fit seeds of --conditional (comma-separated)")
    ap.add_argument("--all", action="store_true", help="--conditional on all 29 labelled series, conditioned "
                    "only (pair with nab_variants.py's neg-elbo), on the seasons the training part spans twice")
    ap.add_argument("--write", type=Path, help="--all: write the per-series figures here (JSON)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("SEASONS_JSON", "VARIANTS_JSON"),
                    help="compare a --all --write file with nab_variants.py's (the same fits without the "
                         "condition, and KNN) on the two halves of the series (nab_alarms.py's, seed 32); no fits")
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    allw = json.loads((nab.DATA / "combined_windows.json").read_text())
    with ThreadPoolExecutor(2) as pool:
        if args.conditional:
            keys = sorted(k for k, v in allw.items() if v) if args.all else KEYS
            arms = (True,) if args.all else (False, True)
            runs = [(k, c, int(seed)) for seed in args.seeds.split(",") for k in keys for c in arms]
            rows = []
            for r in pool.map(lambda a: conditional_job(*a, args.out, allw, args.all), runs):
                rows.append(r)
                print(f"{r[0]:55s} condition={r[1]!s:5s} {'+'.join(r[7]) or '-':8s} seed {r[2]} ROC-AUC {r[3]:.3f} "
                      f"AP {r[4]:.3f} (KNN {r[5]:.3f} / {r[6]:.3f})", flush=True)
            if args.write:
                args.write.write_text(json.dumps({
                    "command": " ".join(["python", "benchmarks/nab_seasons.py", *sys.argv[1:]]), **nab.git_state(nab.ROOT),
                    "per_series": [dict(zip(("series", "conditioned", "seed", "roc_auc", "ap", "knn_roc_auc", "knn_ap",
                                             "season"), r)) for r in rows]}, indent=1) + "\n")
            return
        res = list(pool.map(lambda a: job(*a, args.out, allw), [(k, s) for k in KEYS for s in (False, True)]))
    for r in res:
        print(f"{r[0]:55s} seasonal={r[1]!s:5s} ROC-AUC {r[2]:.3f} AP {r[3]:.3f} FAR {r[4]:.4f} recall {r[5]:.2f}")


if __name__ == "__main__":
    main()
