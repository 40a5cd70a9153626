"""Bad inputs and faults through the CLI: exit code, one short line, nothing lost, nothing run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")
CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]


class Gadget:
    """Unpickling this creates the file at ``path``: proof that untrusted data ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _npy_header_file(path, shape, descr="<f4"):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})


def _gadget_npy(d):
    np.save(d / "bad.npy", np.array([Gadget(str(d / "PWNED"))], dtype=object), allow_pickle=True)


def _gadget_npz(d):
    np.savez(d / "bad.npz", X=np.array([Gadget(str(d / "PWNED"))], dtype=object))


def _raw_pickle(d):
    (d / "bad.npy").write_bytes(pickle.dumps(Gadget(str(d / "PWNED"))))


def _gadget_checkpoint(d):
    torch.save({"format": "vae-anomaly-checkpoint/1", "x": Gadget(str(d / "PWNED"))}, d / "evil.pt")


def _truncated_npy(d):
    np.save(d / "bad.npy", np.zeros((50, 21)))
    data = (d / "bad.npy").read_bytes()
    (d / "bad.npy").write_bytes(data[:-7])


def _huge_dim(d):
    with open(d / "bad.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00")
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616, 21), }"
        header += b" " * (63 - len(header) % 64) + b"\n"
        f.write(len(header).to_bytes(2, "little") + header)


def _npz_bomb(d):
    import zipfile

    _npy_header_file(d / "X.npy", (10**12, 21))
    with zipfile.ZipFile(d / "bad.npz", "w") as z:
        z.write(d / "X.npy", "X.npy")
    (d / "X.npy").unlink()


def _save(name, arr):
    return lambda d: np.save(d / name, arr)


def _text(name, text):
    return lambda d: (d / name).write_text(text)


def _model_variant(name, mutate):
    def setup(d):
        import onnx

        model = onnx.load(str(d / "model.onnx"))
        mutate(model, d)
        onnx.save(model, str(d / name))
    return setup


def _future_schema(model, d):
    meta = json.loads(model.metadata_props[0].value)
    meta["schema_version"] = 2
    model.metadata_props[0].value = json.dumps(meta)


def _external(model, d):
    import onnx

    onnx.save(model, str(d / "ext.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    model.CopyFrom(onnx.load(str(d / "ext.onnx"), load_external_data=False))


def _wrong_width(model, d):
    meta = json.loads(model.metadata_props[0].value)
    meta["n_features"] = 5
    model.metadata_props[0].value = json.dumps(meta)


def _no_meta(model, d):
    del model.metadata_props[:]


NAN = np.zeros((4, 21))
NAN[2, 3] = np.nan
INF = np.zeros((4, 21))
INF[1, 0] = -np.inf
DT = np.zeros((3, 21), dtype=[("a", "f4"), ("b", "i4")])

CASES = [  # (id, setup, args, exit code, stderr fragment)
    ("pickle gadget .npy", _gadget_npy, ["score", "bad.npy"], 3, "dtype object"),
    ("pickle gadget .npz", _gadget_npz, ["score", "bad.npz"], 3, "dtype object"),
    ("raw pickle as .npy", _raw_pickle, ["score", "bad.npy"], 3, "not a valid .npy"),
    ("text as .npy", _text("bad.npy", "1,2,3\n"), ["score", "bad.npy"], 3, "not a valid .npy"),
    ("empty .npy", _text("bad.npy", ""), ["score", "bad.npy"], 3, "not a valid .npy"),
    ("truncated .npy", _truncated_npy, ["score", "bad.npy"], 3, "truncated"),
    ("header bomb .npy", lambda d: _npy_header_file(d / "bad.npy", (10**12, 21)), ["score", "bad.npy"], 3, "truncated"),
    ("dimension >= 2**64", _huge_dim, ["score", "bad.npy"], 3, ".npy"),
    ("header bomb .npz", _npz_bomb, ["score", "bad.npz"], 3, "truncated"),
    ("1-D array", _save("bad.npy", np.zeros(21)), ["score", "bad.npy"], 3, "1-D"),
    ("3-D array", _save("bad.npy", np.zeros((2, 3, 21))), ["score", "bad.npy"], 3, "3-D"),
    ("complex dtype", _save("bad.npy", np.zeros((3, 21), complex)), ["score", "bad.npy"], 3, "complex128"),
    ("string dtype", _save("bad.npy", np.full((3, 21), "a")), ["score", "bad.npy"], 3, "<U1"),
    ("datetime dtype", _save("bad.npy", np.zeros((3, 21), "datetime64[s]")), ["score", "bad.npy"], 3, "datetime64"),
    ("structured dtype", _save("bad.npy", DT), ["score", "bad.npy"], 3, "expected a numeric dtype"),
    ("NaN", _save("bad.npy", NAN), ["score", "bad.npy"], 3, "row 2, column 3"),
    ("-inf", _save("bad.npy", INF), ["score", "bad.npy"], 3, "row 1, column 0"),
    ("wrong feature count", _save("bad.npy", np.zeros((3, 5))), ["score", "bad.npy"], 3, "X has 5 features"),
    ("bad CSV cell", _text("bad.csv", "a,b\n1,2\n3,abc\n"), ["score", "bad.csv"], 3, "column 'b', data row 1, holds 'abc'"),
    ("ragged CSV", _text("bad.csv", "a,b,c\n1,2,3\n4,5\n"), ["score", "bad.csv"], 3, "data row 1 has 2 cells"),
    ("empty CSV", _text("bad.csv", ""), ["score", "bad.csv"], 3, "empty file"),
    ("missing input", None, ["score", "absent.npy"], 3, "file not found"),
    ("corrupted model", _text("bad.onnx", "\x08\x01garbage" * 9), ["score", "ok.npy", "-m", "bad.onnx"], 4, "not a valid ONNX"),
    ("truncated model", lambda d: (d / "bad.onnx").write_bytes((d / "model.onnx").read_bytes()[:3000]),
     ["score", "ok.npy", "-m", "bad.onnx"], 4, "not a valid ONNX"),
    ("foreign ONNX model", _model_variant("bad.onnx", _no_meta), ["score", "ok.npy", "-m", "bad.onnx"], 4, "metadata"),
    ("future schema", _model_variant("bad.onnx", _future_schema), ["score", "ok.npy", "-m", "bad.onnx"], 4, "schema version 2"),
    ("graph disagrees with metadata", _model_variant("bad.onnx", _wrong_width), ["score", "ok.npy", "-m", "bad.onnx"],
     4, "n_features"),
    ("external-data model", _model_variant("bad.onnx", _external), ["score", "ok.npy", "-m", "bad.onnx"], 4, "external data"),
    ("missing output folder", None, ["score", "ok.npy", "-o", "nowhere/out.csv"], 5, "does not exist"),
    ("fit: missing output folder", None, ["fit", "ok.npy", "-o", "nowhere/m.onnx"], 5, "does not exist"),
    ("fit: NaN training set", _save("bad.npy", NAN), ["fit", "bad.npy", "-o", "model.onnx"], 3, "NaN"),
    ("fit: pickle gadget", _gadget_npy, ["fit", "bad.npy", "-o", "model.onnx"], 3, "dtype object"),
    ("fit: pickle gadget checkpoint", _gadget_checkpoint, ["fit", "ok.npy", "--resume", "evil.pt", "-o", "model.onnx"],
     4, "weights-only"),
    ("fit: zero rows", _save("bad.npy", np.zeros((0, 21))), ["fit", "bad.npy", "-o", "model.onnx"], 3, "0 rows"),
    ("fit: too few rows", _save("bad.npy", np.zeros((4, 21))), ["fit", "bad.npy", "-o", "model.onnx"], 3, "expected at least"),
    ("bad --alpha", None, ["score", "ok.npy", "--alpha", "1.5"], 3, "alpha"),
]


def _snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _fill(d, model_path, cardio):
    shutil.copy(model_path, d / "model.onnx")
    np.save(d / "ok.npy", cardio[1][:50])
    return d


@pytest.fixture
def workdir(tmp_path, model_path, cardio):
    return _fill(tmp_path, model_path, cardio)


#: runs CLI commands one after another in this one process, each through the console entry point
#: ``main()`` in its own folder, with its stdout and stderr (file descriptors 1 and 2, so that output of
#: C libraries counts too) in files of its own and a fresh warnings state (a warning shown by one
#: command is shown again by the next, as in a fresh process); an exception that escapes main() prints
#: its traceback and exits 1, as the interpreter would. argv: a JSON file of [folder, args, stdout
#: file, stderr file] jobs, and the file to write the exit codes to.
DRIVER = """\
import json, os, sys, traceback, warnings
from vae_anomaly.cli.main import main

jobs_file, codes_file = sys.argv[1:3]
codes = []
for folder, args, out, err in json.load(open(jobs_file)):
    os.chdir(folder)
    sys.argv = ["vae-anomaly", *args]
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out, "wb") as o, open(err, "wb") as e:
        os.dup2(o.fileno(), 1); os.dup2(e.fileno(), 2)
        try:
            with warnings.catch_warnings():
                try:
                    main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
                    if not isinstance(exc.code, (int, type(None))):
                        print(exc.code, file=sys.stderr)
                except BaseException:
                    traceback.print_exc()
                    code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
    codes.append(code)
json.dump(codes, open(codes_file, "w"))
"""


def run_in_one_process(jobs, scratch):
    """``jobs`` ([(folder, args)]) run by DRIVER in one Python process: [CompletedProcess-like results]
    with returncode, stdout and stderr. One process for many commands pays Python's, torch's and
    onnxruntime's start-up once instead of once a command."""
    import types

    files = [(str(folder), list(args), str(scratch / f"{i}.out"), str(scratch / f"{i}.err"))
             for i, (folder, args) in enumerate(jobs)]
    (scratch / "jobs.json").write_text(json.dumps(files))
    r = subprocess.run([sys.executable, "-c", DRIVER, str(scratch / "jobs.json"), str(scratch / "codes.json")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    codes = json.loads((scratch / "codes.json").read_text())
    return [types.SimpleNamespace(returncode=code, stdout=open(out).read(), stderr=open(err).read())
            for code, (_, _, out, err) in zip(codes, files)]


@pytest.fixture(scope="module")
def fault_runs(request, tmp_path_factory, model_path, cardio):
    """Each selected CASES entry set up in a folder of its own and run through the CLI's entry point:
    id -> (folder, files before, result, files after). The runs share two processes (DRIVER), the fit
    commands one (it imports torch) and the others the second, at the same time (each keeps one core
    busy); a command's own process is what test_zero_rows_score_to_an_empty_table and the tests below
    it check, and test_cli.py's."""
    ids = {item.callspec.id for item in request.session.items
           if item.module is request.module and item.originalname == "test_bad_input_or_fault"}
    prepared = {}
    for name, setup, args, _, _ in CASES:
        if name in ids:
            d = _fill(tmp_path_factory.mktemp("fault"), model_path, cardio)
            if setup:
                setup(d)
            prepared[name] = (d, args, _snapshot(d))
    groups = [[n for n in prepared if prepared[n][1][0] == "fit"],
              [n for n in prepared if prepared[n][1][0] != "fit"]]

    def run(names):
        if not names:
            return []
        return run_in_one_process([prepared[n][:2] for n in names], tmp_path_factory.mktemp("driver"))

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip([n for g in groups for n in g], [r for rs in pool.map(run, groups) for r in rs]))
    return {name: (d, before, results[name], _snapshot(d)) for name, (d, _, before) in prepared.items()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_or_fault(case, fault_runs):
    name, _, _, code, fragment = case
    d, before, r, after = fault_runs[name]
    assert r.returncode == code, r.stderr
    assert fragment in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400 and "Traceback" not in r.stderr
    assert after == before  # every pre-existing file byte-identical, nothing new
    assert not (d / "PWNED").exists()


def test_zero_rows_score_to_an_empty_table(workdir):
    np.save(workdir / "empty.npy", np.zeros((0, 21)))
    r = subprocess.run(CLI + ["score", "empty.npy"], cwd=workdir, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "row,score,p_value,is_anomaly\n"


def test_nan_policy_flag_reports_bad_rows_as_anomalous_and_scores_the_rest(workdir, cardio):
    X = cardio[1][:20].copy()
    X[[3, 7], [0, 5]] = [np.nan, np.inf]
    np.save(workdir / "some_nan.npy", X)
    r = subprocess.run(CLI + ["score", "some_nan.npy", "--nan-policy", "flag"], cwd=workdir, capture_output=True, text=True)
    assert r.returncode == 0 and "2 rows hold missing, NaN" in r.stderr
    table = np.array([line.split(",") for line in r.stdout.strip().splitlines()[1:]], dtype=float)
    assert np.isinf(table[[3, 7], 1]).all() and (table[[3, 7], 2] == 0).all() and (table[[3, 7], 3] == 1).all()
    clean = subprocess.run(CLI + ["score", "ok.npy"], cwd=workdir, capture_output=True, text=True).stdout
    ref = np.array([line.split(",") for line in clean.strip().splitlines()[1:]], dtype=float)
    good = np.setdiff1d(np.arange(20), [3, 7])
    np.testing.assert_array_equal(table[good, 1:3], ref[good, 1:3])


def _fit_in_background(workdir, *extra):
    np.save(workdir / "normal.npy", np.tile(np.load(workdir / "ok.npy"), (20, 1)))
    return subprocess.Popen(CLI + ["fit", "normal.npy", "-o", "model.onnx", "--epochs", "100000", "--quiet",
                                   "--checkpoint", "ck.pt", "--checkpoint-every", "1", *extra],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job ignores SIGINT, and children inherit that: undo it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


KILLS = [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 143), (signal.SIGINT, 130)]


@pytest.fixture(scope="module")
def killed_fits(request, tmp_path_factory, model_path, cardio):
    """The selected cases of the test below, at the same time (most of a fit's start is importing torch,
    one core each): in a folder of its own, a fit that would overwrite model.onnx is sent the signal once
    it has written its first checkpoint. sig -> (folder, model.onnx before, the fit's exit code and
    stderr or why it was not signalled, ``score ok.npy``'s output after); "ref": ``score ok.npy``'s
    output in a folder no fit touched (every folder holds the same model.onnx). The scores run in one
    process (DRIVER)."""
    sigs = [item.callspec.params["sig"] for item in request.session.items
            if item.module is request.module
            and item.originalname == "test_killed_fit_leaves_the_previous_model_scoring_identically"]
    folders = {sig: _fill(tmp_path_factory.mktemp("killed"), model_path, cardio) for sig in sigs}
    before = {sig: (d / "model.onnx").read_bytes() for sig, d in folders.items()}
    procs = {sig: _fit_in_background(d) for sig, d in folders.items()}
    ended = {}
    try:
        deadline = time.monotonic() + 120
        while len(ended) < len(procs):
            for sig, proc in procs.items():
                if sig in ended:
                    continue
                if (folders[sig] / "ck.pt").exists():
                    proc.send_signal(sig)
                    _, err = proc.communicate(timeout=60)
                    ended[sig] = (proc.returncode, err)
                elif proc.poll() is not None:
                    ended[sig] = f"the fit ended before writing a checkpoint: {proc.stderr.read()}"
                elif time.monotonic() > deadline:
                    ended[sig] = "training never wrote a checkpoint"
            time.sleep(0.1)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    ref_dir = _fill(tmp_path_factory.mktemp("ref"), model_path, cardio)
    scores = run_in_one_process([(d, ["score", "ok.npy"]) for d in [ref_dir, *folders.values()]],
                                tmp_path_factory.mktemp("driver"))
    ref, *after = (r.stdout for r in scores)
    return {"ref": ref, **{sig: (folders[sig], before[sig], ended[sig], out) for sig, out in zip(sigs, after)}}


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", KILLS)
def test_killed_fit_leaves_the_previous_model_scoring_identically(killed_fits, sig, code):
    workdir, before, ended, after = killed_fits[sig]
    assert isinstance(ended, tuple), ended
    returncode, err = ended
    assert returncode == code, err
    if sig != signal.SIGKILL:
        errors = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
        assert len(errors) == 1 and "Traceback" not in err
        assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]
    assert (workdir / "model.onnx").read_bytes() == before
    assert killed_fits["ref"] and after == killed_fits["ref"]


def test_interrupt_during_a_checkpoint_write_is_raised_after_it(tmp_path, monkeypatch):
    """Ctrl-C inside torch.save's zip writer would surface as a RuntimeError; it is held until the write ends."""
    import torch

    from vae_anomaly.training.checkpoint import load_checkpoint, save_checkpoint

    real_save = torch.save

    def interrupted_save(obj, f):
        signal.raise_signal(signal.SIGINT)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", interrupted_save)
    state = {"format": "vae-anomaly-checkpoint/1", "w": torch.arange(5.0)}
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground process
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(tmp_path / "ck.pt", state)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)
    assert torch.equal(load_checkpoint(tmp_path / "ck.pt")["w"], state["w"])


def test_resume_equals_an_uninterrupted_run(cardio, tmp_path):
    from vae_anomaly.training.train import TrainConfig, train

    X = cardio[0][:300]
    cfg = dict(seed=3, patience=100)
    train(X, config=TrainConfig(epochs=3, **cfg), checkpoint=tmp_path / "ck.pt", checkpoint_every=3)
    resumed = train(X, config=TrainConfig(epochs=6, **cfg), resume=tmp_path / "ck.pt")
    straight = train(X, config=TrainConfig(epochs=6, **cfg))
    assert resumed.summary["resumed_from_epoch"] == 3 and resumed.summary["epochs_run"] == 6
    assert resumed.summary["best_val_neg_elbo"] == straight.summary["best_val_neg_elbo"]
    for (k, a), (_, b) in zip(resumed.graph.state_dict().items(), straight.graph.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(Exception, match="differs from the data"):
        train(X[:200], config=TrainConfig(epochs=6, **cfg), resume=tmp_path / "ck.pt")


def test_a_checkpoint_with_the_retired_val_samples_setting_resumes(cardio, tmp_path):
    """Checkpoints written while TrainConfig.val_samples existed (the criterion then averaged some of
    the L samples) resume; the criterion is now the negative ELBO at the posterior mean."""
    import json

    from vae_anomaly.training.checkpoint import load_checkpoint, save_checkpoint
    from vae_anomaly.training.train import TrainConfig, train

    X = cardio[0][:300]
    train(X, config=TrainConfig(epochs=2, seed=3), checkpoint=tmp_path / "ck.pt", checkpoint_every=2)
    state = load_checkpoint(tmp_path / "ck.pt")
    old = {**json.loads(state["config"]), "val_samples": 4}
    save_checkpoint(tmp_path / "old.pt", {**state, "config": json.dumps(old)})
    resumed = train(X, config=TrainConfig(epochs=3), resume=tmp_path / "old.pt")
    assert "val_samples" not in resumed.summary["config"] and resumed.summary["epochs_run"] == 3


@pytest.mark.slow
def test_resume_through_the_cli(workdir):
    np.save(workdir / "normal.npy", np.tile(np.load(workdir / "ok.npy"), (4, 1)))
    first = subprocess.run(CLI + ["fit", "normal.npy", "-o", "m.onnx", "--epochs", "4", "--quiet", "--checkpoint",
                                  "ck.pt", "--checkpoint-every", "2"], cwd=workdir, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(CLI + ["fit", "normal.npy", "-o", "m.onnx", "--epochs", "7", "--quiet", "--resume", "ck.pt"],
                            cwd=workdir, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    from vae_anomaly import Scorer

    training = Scorer(workdir / "m.onnx").metadata["training"]  # what `vae-anomaly info m.onnx` prints
    assert training["resumed_from_epoch"] == 4 and training["epochs_run"] == 7
