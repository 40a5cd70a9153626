"""Seasons screen (issue 32, item 3): does the time of day and week help the window model on NAB's
three seasonal series (nyc_taxi, machine_temperature, ambient_temperature)?

    python benchmarks/nab_seasons.py /tmp/nab_seasons      # 6 fits, about 10 min on 2 cores

The product path as ``nab.py`` runs it (``fit --window 64`` on the first 15%, seed 0, ``--time-order
as-read``; the whole series scored with ``--threshold auto``), once as is and once with four extra
metric columns: sin and cos of the time of day and of the time of week, known inputs the encoder
can read the season from (a screen of the idea before a conditional model is built). Prints
point-wise ROC-AUC, AP, realised false-alarm rate and event recall per series (``nab.evaluate``)."""
import json, os, subprocess, sys, warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, pandas as pd
import nab  # benchmarks/nab.py, beside this script

KEYS = ["realKnownCause/nyc_taxi.csv", "realKnownCause/machine_temperature_system_failure.csv",
        "realKnownCause/ambient_temperature_system_failure.csv"]


def job(k: str, seasonal: bool, out: Path, allw: dict) -> tuple:
    """One fit and score of series ``k``, with the season columns or without; its metrics."""
    ser = nab.load_series(k, allw[k])
    df = pd.read_csv(nab.DATA / k)
    if seasonal:
        t = pd.to_datetime(df["timestamp"])
        day = (t.dt.hour * 3600 + t.dt.minute * 60 + t.dt.second) / 86400.0
        week = (t.dt.day_of_week + day) / 7.0
        for name, f in (("day", day), ("week", week)):
            df[f"{name}_sin"], df[f"{name}_cos"] = np.sin(2 * np.pi * f), np.cos(2 * np.pi * f)
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


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "nab_seasons")
    out.mkdir(parents=True, exist_ok=True)
    allw = json.loads((nab.DATA / "combined_windows.json").read_text())
    with ThreadPoolExecutor(2) as pool:
        res = list(pool.map(lambda a: job(*a, out, allw), [(k, s) for k in KEYS for s in (False, True)]))
    for r in res:
        print(f"{r[0]:55s} seasonal={r[1]!s:5s} ROC-AUC {r[2]:.3f} AP {r[3]:.3f} FAR {r[4]:.4f} recall {r[5]:.2f}")


if __name__ == "__main__":
    main()
