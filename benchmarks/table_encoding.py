"""What encoding a table costs next to the graph: NSL-KDD (38 numeric, 3 categorical columns).

Why the one-hot encoding lives outside the ONNX graph (docs/tables.md) rests on it being cheap.
This fits the default model briefly (5 epochs: the timing does not depend on the weights) on the
13,449 normal rows of ``../shared/datasets/nsl-kdd/KDDTrain+_20Percent.csv`` (more than 4,096
training rows, so the latent prior is N(0, I)), then times, best of 3 over all 25,192 rows,
``Scorer.encode_table`` (pyarrow table -> the graph's float matrix) against ``Scorer.score_samples``
on that matrix (the graph alone)::

    python benchmarks/table_encoding.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from vae_anomaly import Scorer
from vae_anomaly.deploy import schema, tables
from vae_anomaly.training.config import TrainConfig
from vae_anomaly.training.fit import fit_file

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nsl-kdd" / "KDDTrain+_20Percent.csv"


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        normal = Path(tmp) / "normal.csv"
        pd.read_csv(DATA).query("attack == 'normal'").to_csv(normal, index=False)
        model = Path(tmp) / "model.onnx"
        fit_file(normal, model, exclude="attack,difficulty", config=TrainConfig(epochs=5, seed=0))
        scorer = Scorer(model)
        spec = scorer.table
        table = tables.read_table(DATA, column_types=schema.read_types(spec, with_ids=False),
                                  columns=schema.feature_names(spec))
        x = scorer.check_rows(scorer.encode_table(table))
        enc = best_of(3, lambda: scorer.encode_table(table))
        graph = best_of(3, lambda: scorer.score_samples(x))
        n, prior = table.num_rows, scorer.metadata["training"]["latent_prior"]["kind"]
        print(f"latent prior {prior}: encode {enc:.3f} s ({n / enc:,.0f} rows/s), graph {graph:.3f} s "
              f"({n / graph:,.0f} rows/s): encoding is {enc / (enc + graph):.1%} of the scoring time")


if __name__ == "__main__":
    main()
