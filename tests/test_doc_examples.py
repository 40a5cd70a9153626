"""The examples of README.md and docs/ run as written (issue 33), on the README walk-through's data:
the bundled thyroid rows, split as the demo splits them, with the six columns named.

What a test changes, and why: the walk-through's ``fit`` gets ``--epochs 10`` and the Python pages'
fits a budget of a few epochs (the default budget takes a minute a fit, and the suite must stay
short; ten epochs of thyroid's 1,472 rows already flag rows, which is all the walk-through shows);
outputs are checked for their form, not their digits (digits depend on the CPU).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["age", "tsh", "t3", "tt4", "t4u", "fti"]
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


def _blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


def _cli_line(command: str) -> str:
    """``command`` with ``vae-anomaly`` run by this interpreter (the test may run outside a venv)."""
    return command.replace("vae-anomaly ", " ".join(map(shlex.quote, CLI)) + " ", 1) if \
        command.startswith("vae-anomaly ") else command


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The walk-through's folder: normal.csv (half of thyroid's normal rows), new.csv and new.npy
    (the other normal rows and every anomaly), labels.npy; no model yet."""
    from vae_anomaly.evaluation.datasets import bundled_path, load_labelled, semi_supervised_split

    folder = tmp_path_factory.mktemp("walk")
    X, y = load_labelled(bundled_path("thyroid"))
    train, test = semi_supervised_split(y, 0)
    header = ",".join(COLUMNS)
    np.savetxt(folder / "normal.csv", X[train], delimiter=",", header=header, comments="")
    np.savetxt(folder / "new.csv", X[test], delimiter=",", header=header, comments="")
    np.save(folder / "new.npy", X[test])
    np.save(folder / "labels.npy", y[test])
    return folder


@pytest.fixture(scope="module")
def walked(walk):
    """The README's console walk-through, run: {command: completed process}, in order."""
    block = _blocks("README.md", "console")[0]
    runs = {}
    for line in block.splitlines():
        if not line.startswith("$ "):
            continue
        command = line[2:]
        if command.startswith("vae-anomaly fit "):
            command += " --epochs 10"
        runs[line[2:]] = subprocess.run(["bash", "-c", _cli_line(command)], cwd=walk, capture_output=True,
                                        text=True, timeout=600)
    return runs


#: a line of scores.csv with --features 2: row, score, p-value, flag, two column names
SCORE_LINE = re.compile(r"^\d+,-?[\d.e+-]+,[\d.e-]+,[01],[a-z][a-z0-9]*;[a-z][a-z0-9]*$")


def test_the_readme_walk_through_runs_and_prints_what_it_shows(walked):
    block = _blocks("README.md", "console")[0]
    assert all(r.returncode == 0 for r in walked.values()), {c: r.stderr[-500:] for c, r in walked.items()}
    shown = [ln for ln in block.splitlines() if not ln.startswith("$ ")]
    head = next(r.stdout.splitlines() for c, r in walked.items() if c.startswith("head -3"))
    grep = next(r.stdout.splitlines() for c, r in walked.items() if c.startswith("grep"))
    assert head[0] == "row,score,p_value,is_anomaly,top_features" == shown[1]
    assert len(head) == 3 and all(SCORE_LINE.match(ln) for ln in head[1:]), head
    # the README's own sample lines have the form the files have: column names, not indices
    assert all(SCORE_LINE.match(ln) for ln in shown[2:]), shown
    assert len(grep) == 1 and grep[0].split(",")[3] == "1" and SCORE_LINE.match(grep[0]), grep
    assert set(grep[0].split(",")[4].split(";")) <= set(COLUMNS)


def _score_curls(page: str) -> list[str]:
    """Each ``curl ... /score`` command of ``page``'s bash blocks, continuation lines joined."""
    commands = []
    for block in _blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("curl ") and "/score" in line:
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def served(walked, walk):
    """The port of ``vae-anomaly serve -m model.onnx`` of the walk-through's model."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(CLI + ["serve", "-m", "model.onnx", "--port", str(port)], cwd=walk,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("page", ["README.md", "docs/service.md"])
def test_every_http_example_gets_an_answer_from_the_walk_through_model(served, walk, page):
    """Each ``curl .../score`` line, run by curl as written (the port aside) against the served model."""
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the examples are curl commands")
    commands = _score_curls(page)
    assert len(commands) >= 2, commands
    for command in commands:
        command = command.replace("localhost:8000", f"localhost:{served}")
        r = subprocess.run(["bash", "-c", command.split("  #")[0] + " -w '\\n%{http_code}'"], cwd=walk,
                           capture_output=True, text=True, timeout=120)
        body, status = r.stdout.rsplit("\n", 1)
        assert status == "200", (command, body[:300])
        answer = json.loads(body)
        assert len(answer["scores"]) == len(answer["p_values"]) == len(answer["is_anomaly"]) >= 1
        if '"features"' in command:
            assert all(set(names) <= set(COLUMNS) for names in answer["top_features"])


def test_the_monitoring_example_says_anomalies_only_when_there_are_some(walked, walk):
    """docs/cli.md's monitoring lines: exit 6 (a flagged row) prints the message; a batch with no
    flag prints nothing and succeeds; a failure is not mistaken for either."""
    from vae_anomaly import Scorer

    block = _blocks("docs/cli.md", "bash")[0]
    X = np.load(walk / "new.npy")
    res = Scorer(walk / "model.onnx").predict(X)
    np.save(walk / "flagged.npy", X[res.is_anomaly][:5])
    np.save(walk / "quiet.npy", X[~res.is_anomaly][:5])
    for today, printed, code in (("flagged.npy", True, 0), ("quiet.npy", False, 0), ("missing.npy", False, 3)):
        script = "\n".join(_cli_line(ln) for ln in block.replace("today.npy", today).splitlines())
        r = subprocess.run(["bash", "-c", "set +e\n" + script], cwd=walk, capture_output=True, text=True,
                           timeout=300)
        assert ("anomalies" in r.stdout) == printed and r.returncode == code, (today, r.stdout, r.stderr[-300:])


def test_the_python_pages_run(walked, walk, tmp_path, monkeypatch, mixed_frame):
    """Every Python block of docs/model-file.md (on the walk-through's model) and docs/python.md, in
    order, in one namespace holding the names the pages assume (X, X_normal, X_new, frame: host,
    numbers, a category column; new_frame), in a copy of the walk-through's folder, fits cut to 3 epochs."""
    import shutil

    from vae_anomaly.evaluation.datasets import bundled_path, load_labelled
    from vae_anomaly.training import loop

    for name in ("normal.csv", "new.csv", "new.npy", "model.onnx"):
        shutil.copy(walk / name, tmp_path / name)
    monkeypatch.setattr(loop, "auto_epochs", lambda n, cfg: 3)
    monkeypatch.chdir(tmp_path)
    X_all, y = load_labelled(bundled_path("thyroid"))

    def table(n, seed):
        return mixed_frame(n, seed)[["host", "a", "proto"]].rename(columns={"a": "duration"})

    namespace = {"X": X_all[:50], "X_normal": X_all[y == 0][:300], "X_new": X_all[:50], "frame": table(120, 0),
                 "new_frame": table(20, 1)}
    for page in ("docs/model-file.md", "docs/python.md"):
        for block in _blocks(page, "python"):
            exec(compile(block, page, "exec"), namespace)  # noqa: S102 - the project's own docs
    assert namespace["ok"]                                  # model-file.md's checksum check
    assert json.loads((tmp_path / "summary.json").read_text())["n_rows"] == len(np.load(walk / "new.npy"))


# ---------------------------------------------------------------- the other pages' shell examples


def _connections(n: int, seed: int, *, with_time: bool):
    """A monitoring table as the tables examples have it: (ts,) host, a label, numbers, categories."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    frame = pd.DataFrame({"host": [f"web-{i % 9}" for i in range(n)], "attack": "normal",
                          "difficulty": rng.integers(1, 21, n), "duration": np.exp(x),
                          "src_bytes": 300 + 40 * x + rng.standard_normal(n),
                          "protocol_type": rng.choice(["tcp", "udp", "icmp"], n),
                          "service": rng.choice(["http", "ftp", "smtp"], n)})
    if with_time:
        frame.insert(0, "ts", pd.date_range("2026-01-01", periods=n, freq="min").strftime("%Y-%m-%d %H:%M:%S"))
    return frame


def _series(n: int, start: int):
    import pandas as pd

    t = np.arange(start, start + n)
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(5 * t, unit="min")
    rng = np.random.default_rng(start)
    return pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                         "value": np.sin(2 * np.pi * t / 48) + 0.05 * rng.standard_normal(n)})


def _setup_connections(folder: Path, walk: Path) -> None:
    _connections(300, 0, with_time=True).to_csv(folder / "connections.csv", index=False)
    _connections(40, 1, with_time=True).to_csv(folder / "today.csv", index=False)


def _setup_tables(folder: Path, walk: Path) -> None:
    _connections(300, 0, with_time=False).to_csv(folder / "normal.csv", index=False)
    _connections(40, 1, with_time=False).to_csv(folder / "today.csv", index=False)


def _setup_series(folder: Path, walk: Path) -> None:
    _series(600, 0).to_csv(folder / "cpu_last_week.csv", index=False)
    _series(150, 600).to_csv(folder / "cpu_today.csv", index=False)


def _setup_calibrate(folder: Path, walk: Path) -> None:
    import shutil

    shutil.copy(walk / "model.onnx", folder / "model.onnx")
    np.save(folder / "val.npy", np.load(walk / "new.npy")[::3])
    np.save(folder / "val_labels.npy", np.load(walk / "labels.npy")[::3])


def _setup_conditions(folder: Path, walk: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2, 300)
    np.save(folder / "readings.npy", rng.standard_normal((300, 4)) + 2.5 * (2 * ids[:, None] - 1))
    np.save(folder / "machine_ids.npy", ids)
    np.save(folder / "new.npy", rng.standard_normal((30, 4)))
    np.save(folder / "new_machine_ids.npy", rng.integers(0, 2, 30))


#: (page, language, index of the block among that language's, the files it needs)
SHELL_EXAMPLES = [("README.md", "bash", 2, _setup_connections), ("README.md", "bash", 3, _setup_series),
                  ("docs/tables.md", "console", 0, _setup_tables), ("docs/series.md", "console", 0, _setup_series),
                  ("docs/cli.md", "bash", 1, _setup_calibrate),
                  ("docs/images-and-conditions.md", "bash", 0, _setup_conditions)]


def _run_shell_examples(folder: Path, walk: Path, examples) -> list[str]:
    """Run ``examples`` (SHELL_EXAMPLES entries with one setup) one after another in ``folder``; the
    problems found (empty when each runs as its page says). A ``fit`` command that an earlier block
    already ran here, word for word on the same files, is not run again: its model is in the folder."""
    folder.mkdir()
    examples[0][3](folder, walk)
    fitted = set()
    for page, lang, index, _ in examples:
        block = _blocks(page, lang)[index]
        lines = [ln[2:] if lang == "console" else ln for ln in block.splitlines()
                 if (ln.startswith("$ ") if lang == "console" else ln.strip() and not ln.startswith("#"))]
        shown = [ln for ln in block.splitlines() if not ln.startswith("$ ")] if lang == "console" else []
        for command in lines:
            command = command.split("  #")[0].strip()
            if command.startswith("vae-anomaly fit "):
                command += " --epochs 3"
                if command in fitted:
                    continue
                fitted.add(command)
            r = subprocess.run(["bash", "-c", _cli_line(command)], cwd=folder, capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                return [f"{page}: {command!r} exited {r.returncode}: {r.stderr[-600:]}"]
            if command.startswith("head "):
                out = r.stdout.splitlines()
                if out[0] != shown[0] or len(out) != len(shown) or out[1].count(",") != shown[1].count(","):
                    return [f"{page}: {command!r} printed {out}, the page shows {shown}"]
    return []


def test_the_shell_examples_run_on_files_like_theirs(walked, walk, tmp_path):
    """Each command of each block in SHELL_EXAMPLES, as written (fits cut to 3 epochs), exits 0 on
    files with the columns the page names; a console block's ``head`` shows the header the page
    shows. The blocks with the same files run one after another in one folder (README's and
    docs/series.md's series blocks fit the same model with the same command: it is fitted once);
    those folders two at a time, the one with the most blocks first (each command is its own process)."""
    from concurrent.futures import ThreadPoolExecutor

    groups: dict = {}
    for example in SHELL_EXAMPLES:
        groups.setdefault(example[3], []).append(example)
    jobs = sorted(groups.values(), key=len, reverse=True)
    assert sum(map(len, jobs)) == len(SHELL_EXAMPLES) == 6
    with ThreadPoolExecutor(2) as pool:
        problems = pool.map(lambda job: _run_shell_examples(tmp_path / f"ex{job[0]}", walk, job[1]), enumerate(jobs))
        problems = [p for found in problems for p in found]
    assert not problems, "\n".join(problems)


def test_the_dask_example_runs(walked, walk, tmp_path, monkeypatch):
    """docs/scale.md's Dask lines, on a .npy of rows and a Parquet folder of the walk-through's columns."""
    import shutil

    import pandas as pd

    pytest.importorskip("dask.dataframe")
    rows = np.load(walk / "new.npy")
    np.save(tmp_path / "rows.npy", rows)
    (tmp_path / "rows").mkdir()
    pd.DataFrame(rows, columns=COLUMNS).to_parquet(tmp_path / "rows" / "part.0.parquet")
    shutil.copy(walk / "model.onnx", tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_blocks("docs/scale.md", "python")[0], "docs/scale.md", "exec"), namespace)  # noqa: S102
    assert namespace["scores"].compute().shape == (len(rows),)
    assert len(namespace["out"].compute()) == len(rows)
