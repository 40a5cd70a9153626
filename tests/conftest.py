"""Shared fixtures: a small model fitted once per session on bundled real data (cardio); models
built in a second process beside the tests (``prebuilt``); the ``slow`` marker; one math thread per
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

# The suite's models are tiny, so a second math thread buys nothing, while two OpenMP threads per
# process spin against each other, the CLI subprocesses and any other job on a 2-core machine
# (10 epochs on cardio: 0.2-0.4 s with 1 or 2 threads on an idle machine; 0.5 s with 1 and 4.6 s
# with 2 at a load average of 4). Set before torch is imported, and inherited by the
# subprocesses; setdefault, so a run can still ask for more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from vae_anomaly.evaluation.datasets import (
    bundled_path,
    load_labelled,
    semi_supervised_split,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: ten seconds or more: many fits (check_estimator, a grid search), torch.compile, CLI fits and "
        "killed fits in subprocesses, spawned benchmark workers. CI runs them; -m 'not slow' for a quick run",
    )


@pytest.fixture(scope="session")
def cardio():
    """(X_train_normal, X_test, y_test) of the bundled cardio data, seed-0 protocol split."""
    X, y = load_labelled(bundled_path("cardio"))
    tr, te = semi_supervised_split(y, seed=0)
    return X[tr], X[te], y[te]


@pytest.fixture(scope="session")
def trained(cardio):
    """A TrainResult fitted briefly on cardio's normal rows."""
    pytest.importorskip("torch")
    from vae_anomaly.training.train import TrainConfig, train

    return train(cardio[0], config=TrainConfig(epochs=40, seed=0))


@pytest.fixture(scope="session")
def model_path(trained, tmp_path_factory):
    """Path of the exported model.onnx of ``trained``."""
    from vae_anomaly.training.export import export_model

    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_model(trained, path, alpha=0.05)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _mixed_frame(n: int, seed: int):
    """A table as users have them: an ID column, numbers, text and a pandas ``category`` column."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    return pd.DataFrame({"host": [f"h{i:03d}" for i in range(n)], "a": a, "b": 2 * a + 0.1 * rng.standard_normal(n),
                         "proto": pd.Categorical(np.where(a > 0, "tcp", rng.choice(["udp", "icmp"], n))),
                         "flag": np.where(rng.random(n) < 0.8, "S", "F")})


@pytest.fixture(scope="session")
def mixed_frame():
    """``mixed_frame(n, seed)``: a seeded mixed-type pandas DataFrame of n rows (host, a, b, proto, flag)."""
    return _mixed_frame


# ---------------------------------------------------------------- models built beside the tests

#: trains and exports the jobs of a JSON file one after another (each written atomically by export_model)
BUILDER = """\
import json, os, sys
os.nice(5)  # the tests' own processes first: the builds are needed later
import numpy as np
from vae_anomaly.training.export import export_model
from vae_anomaly.training.train import TrainConfig, train

for job in json.load(open(sys.argv[1])):
    with np.load(job["data"]) as data:
        arrays = dict(data)
    result = train(arrays["X"], condition=arrays.get("condition"), config=TrainConfig(**job["config"]))
    export_model(result, job["path"], **job["export"])
"""


class Prebuilt:
    """The models of test modules' ``PREBUILT`` tables, trained and exported one after another in a
    second process started as the session begins. A build is single-threaded Python (training on one
    math thread, the ONNX export), so it runs on the second core while the tests run on the first.

    ``PREBUILT`` maps a name to {"data": a function returning the arrays "X" [and "condition"] to train
    on, "config": TrainConfig's arguments, "export" (optional): export_model's keyword arguments,
    "used_by": the names of the tests (with their parameters, e.g. "test_x[3]", or without) and fixtures
    that use it}."""

    def __init__(self, folder, specs):
        jobs = []
        for name, spec in specs.items():
            np.savez(folder / f"{name}.npz", **spec["data"]())
            jobs.append({"data": str(folder / f"{name}.npz"), "config": spec["config"],
                         "export": spec.get("export", {}), "path": str(folder / f"{name}.onnx")})
        (folder / "jobs.json").write_text(json.dumps(jobs))
        self.names, self.folder = set(specs), folder
        self.log = open(folder / "builder.log", "w+")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(folder / "jobs.json")],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def path(self, name, timeout=600):
        """The model file ``name``, once built."""
        if name not in self.names:
            pytest.fail(f"model {name!r} is not built for the selected tests: name this test in its used_by")
        path, deadline = self.folder / f"{name}.onnx", time.monotonic() + timeout
        while not path.exists():
            if (self.proc.poll() is not None and not path.exists()) or time.monotonic() > deadline:
                self.log.seek(0)
                pytest.fail(f"model {name!r} was not built; the builder's output:\n{self.log.read()[-4000:]}")
            time.sleep(0.05)
        return path

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session", autouse=True)
def _prebuild(request, tmp_path_factory):
    """Starts, as the session begins, the builds of the ``PREBUILT`` models the selected tests use, in
    the order of the tests."""
    specs, owner = {}, {}
    for item in request.session.items:
        if "prebuilt" not in item.fixturenames:
            continue
        users = {item.name, item.originalname, *item.fixturenames}
        for name, spec in item.module.PREBUILT.items():
            assert owner.setdefault(name, item.module) is item.module, f"two modules build a model {name!r}"
            if name not in specs and users & set(spec["used_by"]):
                specs[name] = spec
    if not specs:
        yield None
        return
    builds = Prebuilt(tmp_path_factory.mktemp("prebuilt"), specs)
    yield builds
    builds.stop()


@pytest.fixture(scope="session")
def prebuilt(_prebuild):
    """The models built beside the tests: ``prebuilt.path(name)`` waits for one and returns its path."""
    if _prebuild is None:
        pytest.fail("no PREBUILT model names this test (or its fixtures) in its used_by")
    return _prebuild
