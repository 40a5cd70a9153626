"""The README's Python snippet runs as written, on CSV files like the walk-through's."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_readme_python_snippet_runs(tmp_path, monkeypatch):
    from vae_anomaly.evaluation.datasets import bundled_path, load_labelled

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    X, y = load_labelled(bundled_path("wine"))
    header = ",".join(f"f{j}" for j in range(X.shape[1]))
    np.savetxt(tmp_path / "normal.csv", X[y == 0][:80], delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "new.csv", X[:40], delimiter=",", header=header, comments="")
    np.save(tmp_path / "new.npy", X[:40])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "scores.csv").is_file()
    assert namespace["out"].scores.shape == (40,)
