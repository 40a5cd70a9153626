"""The model file's checksum and signature (docs/model-file.md, "Checksum", "Signature"), the checks of its
optional ``table`` entry and the bounds of its numbers ("What loading refuses")."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_anomaly import Scorer
from vae_anomaly.deploy import artifact
from vae_anomaly.errors import InputValidationError, ModelArtifactError

CLI = [sys.executable, "-m", "vae_anomaly.cli.main"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "model-file.md"


def cli(*args, cwd):
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _damaged(model_path, dest):
    """``dest``: the model with 16 bytes flipped inside its largest initializer's raw_data."""
    import onnx

    data = bytearray(model_path.read_bytes())
    raw = max(onnx.load_model_from_string(bytes(data)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = data.find(raw)
    assert len(raw) > 64 and at > 0 and data.find(raw, at + 1) < 0
    at += len(raw) // 2
    data[at:at + 16] = bytes(b ^ 0xA5 for b in data[at:at + 16])
    dest.write_bytes(bytes(data))
    return dest


def _edited(model_path, dest, edit, *, reseal=False):
    """``dest``: the model with its JSON metadata passed through ``edit`` (and sealed again if ``reseal``)."""
    import onnx

    model = onnx.load_model_from_string(model_path.read_bytes())
    entry = next(p for p in model.metadata_props if p.key == artifact.METADATA_KEY)
    meta = json.loads(entry.value)
    edit(meta)
    entry.value = json.dumps(meta)
    if reseal:
        artifact.seal(model)
    dest.write_bytes(model.SerializeToString())
    return dest


@pytest.fixture
def work(model_path, cardio, tmp_path):
    """tmp_path holding a copy of the session model (model.onnx) and rows to score (rows.npy)."""
    shutil.copy(model_path, tmp_path / "model.onnx")
    np.save(tmp_path / "rows.npy", cardio[1][:50])
    return tmp_path


# ---------------------------------------------------------------- a sound file verifies


def test_a_written_model_carries_a_checksum_that_verifies(work):
    import onnx

    data = (work / "model.onnx").read_bytes()
    model, _ = artifact.parse_model(data, "model.onnx")
    props = model.metadata_props
    assert props[-1].key == artifact.CHECKSUM_KEY and re.fullmatch("[0-9a-f]{64}", props[-1].value)
    assert artifact.model_checksum(model) == props[-1].value
    assert model.SerializeToString() == data  # the serialization is deterministic; parse_model left it whole
    # the sampler is among the hashed entries
    assert artifact.SAMPLER_KEY in [p.key for p in props[:-1]]
    onnx.checker.check_model(model)


def test_the_docs_plain_onnx_snippet_verifies_a_model_and_catches_damage(work, monkeypatch):
    block = DOCS.read_text().split("## Checksum", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", block, flags=re.S)[0]
    monkeypatch.chdir(work)
    namespace: dict = {}
    exec(compile(code, "model-file.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    assert namespace["ok"] is True
    _damaged(work / "model.onnx", work / "model.onnx")
    namespace = {}
    exec(compile(code, "model-file.md", "exec"), namespace)  # noqa: S102
    assert namespace["ok"] is False


# ---------------------------------------------------------------- damaged or edited files are refused


def test_damaged_weights_are_refused_by_score_info_and_scorer(work):
    _damaged(work / "model.onnx", work / "bad.onnx")
    r = cli("score", "rows.npy", "-m", "bad.onnx", "-o", "out.csv", cwd=work)
    assert r.returncode == 4, r.stderr
    assert "checksum mismatch" in r.stderr and "vae-anomaly fit" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (work / "out.csv").exists() and r.stdout == ""
    r = cli("info", "bad.onnx", cwd=work)
    assert r.returncode == 4 and "checksum" in r.stderr and r.stdout == ""
    with pytest.raises(ModelArtifactError, match=r"bad\.onnx: checksum mismatch: .*expected [0-9a-f]{64}, got "
                                                 r"[0-9a-f]{64}\); re-create it"):
        Scorer(work / "bad.onnx")
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        Scorer.from_bytes((work / "bad.onnx").read_bytes())


def test_the_service_refuses_a_damaged_model_at_start_and_at_reload(work):
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from vae_anomaly.integrations.service import create_app

    _damaged(work / "model.onnx", work / "bad.onnx")
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        create_app(work / "bad.onnx")

    served = work / "served.onnx"
    shutil.copy(work / "model.onnx", served)
    app = create_app(served)
    endpoint = {route.path: route.endpoint for route in app.routes if hasattr(route, "endpoint")}
    good_id = endpoint["/readyz"]()["model_id"]
    shutil.copy(work / "bad.onnx", served)  # the file changes under the running service
    ready = endpoint["/readyz"]()  # hot reload on the next request: refused, the old model keeps serving
    assert ready["model_id"] == good_id and "checksum mismatch" in ready["last_reload_error"]
    response = endpoint["/reload"]()
    assert response.status_code == 409
    body = json.loads(response.body)
    assert body["kind"] == "reload_refused" and "checksum mismatch" in body["error"]
    assert endpoint["/model"]()["model_id"] == good_id


def test_metadata_edited_by_hand_is_refused(work):
    _edited(work / "model.onnx", work / "edited.onnx", lambda m: m.update(alpha=0.5))
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        Scorer(work / "edited.onnx")
    r = cli("info", "edited.onnx", cwd=work)
    assert r.returncode == 4 and "checksum mismatch" in r.stderr


def test_the_generation_graph_is_covered(work):
    import onnx

    model = onnx.load_model_from_string((work / "model.onnx").read_bytes())
    entry = next(p for p in model.metadata_props if p.key == artifact.SAMPLER_KEY)
    sampler = onnx.load_model_from_string(base64.b64decode(entry.value))
    sampler.producer_name = "someone else"
    entry.value = base64.b64encode(sampler.SerializeToString()).decode("ascii")
    (work / "swapped.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        Scorer(work / "swapped.onnx")


def test_a_model_without_a_checksum_is_refused(work):
    import onnx

    model = onnx.load_model_from_string((work / "model.onnx").read_bytes())
    keep = [p for p in model.metadata_props if p.key != artifact.CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    (work / "old.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelArtifactError, match="carries no checksum.*older vae-anomaly.*vae-anomaly fit"):
        Scorer(work / "old.onnx")
    artifact.seal(model)  # sealing it again makes it whole
    Scorer.from_bytes(model.SerializeToString())


# ---------------------------------------------------------------- rewriters keep it fresh


def test_a_recalibrated_model_still_loads(work, cardio):
    before = Scorer(work / "model.onnx")
    np.save(work / "val.npy", cardio[0][:200])
    r = cli("calibrate", "model.onnx", "val.npy", "--alpha", "0.2", cwd=work)
    assert r.returncode == 0, r.stderr
    after = Scorer(work / "model.onnx")
    assert after.alpha == 0.2 and after.model_id != before.model_id
    assert after.metadata["recalibration"]["rows"] == 200
    r = cli("info", "model.onnx", cwd=work)
    assert r.returncode == 0 and json.loads(r.stdout)["alpha"] == 0.2
    assert after.sample(2).shape == (2, after.n_features)  # the generation graph came along


# ---------------------------------------------------------------- the optional table entry


def _meta(**changes):
    meta = {"schema_version": 1, "library_version": "x", "n_features": 6, "score_names": ["neg-elbo"],
            "default_score": "neg-elbo", "alpha": 0.05, "calibration": {"neg-elbo": [1.0, 2.0]},
            "thresholds": {"neg-elbo": None}, "training": {}, "feature_mean": [0.0] * 6, "feature_std": [1.0] * 6,
            "feature_names": ["age", "income", "colour"], "n_feature_terms": 3,
            "table": {"features": [{"name": "age", "kind": "numeric"}, {"name": "income", "kind": "numeric"},
                                   {"name": "colour", "kind": "categorical", "categories": ["r", "g", "b"]}],
                      "id_columns": ["id"], "exclude": ["notes"]}}
    meta.update(changes)
    return meta


def _table(edit):
    meta = _meta()
    edit(meta["table"])
    return meta


def _series_meta(**series):
    """A well-formed window model's metadata (W = 3 steps of 2 metrics), its ``series`` entry updated."""
    spec = {"window": 3, "time_column": "ts", "step_seconds": 300.0, "metrics": ["cpu", "mem"],
            "id_columns": ["ts"], "exclude": [], "inserted_steps": 4, "out_of_order_rows": 2, **series}
    return _meta(table=None, feature_names=None, n_feature_terms=6, missing="masked", series=spec)


def _training(**changes):
    training = {"n_rows": 100, "n_train": 80, "n_val": 20, "epochs_run": 5, "max_epochs": 5, "best_epoch": 4,
                "seconds": 0.3, "resumed_from_epoch": None, "latent_prior": {"kind": "aggregate-posterior",
                                                                             "components": 80},
                "config": {"n_samples": 16}}
    training.update(changes)
    return training


def test_well_formed_metadata_passes():
    """A table, a positional model, a window model, numbers within their bounds: nothing a writer writes is refused."""
    artifact.check_metadata(_meta(), "m")  # 2 numeric + (3 + 1) = 6 columns
    artifact.check_metadata(_meta(table=None, feature_names=None), "m")
    artifact.check_metadata(_meta(table=None, feature_names=None, n_feature_terms=None), "m")
    positional = _meta(feature_names=[f"f{j}" for j in range(6)], n_feature_terms=6)
    del positional["table"]
    artifact.check_metadata(positional, "m")
    artifact.check_metadata(_table(lambda t: t.update(column_order=["colour", "age", "income"])), "m")
    artifact.check_metadata(_series_meta(), "m")
    artifact.check_metadata(_series_meta(step_seconds=0.001), "m")
    seasonal = _series_meta(season=["day", "week"])
    artifact.check_metadata({**seasonal, "condition": {"kind": "numeric", "size": 4}}, "m")
    artifact.check_metadata(_meta(latent_dim=2, input_shape=[2, 3], training=_training(), n_calibration=2,
                                  calibration_cap=20000, thresholds={"neg-elbo": 1.5},
                                  condition={"kind": "categorical", "n_categories": 3},
                                  auto_threshold={"rule": "recall", "score": "neg-elbo", "value": float("-inf"),
                                                  "recall": 0.9},
                                  recalibration={"rows": 50, "target": "fpr"}), "m")
    artifact.check_metadata(_meta(condition={"kind": "numeric", "size": 2}), "m")


BAD_TABLES = [  # (id, metadata, message fragment)
    ("wrong width", _meta(n_features=5), "encode to 6 input columns.*n_features=5"),
    ("not an object", _meta(table=[]), "expected null or a JSON object"),
    ("no features key", _table(lambda t: t.pop("features")), r"lacks \['features'\]"),
    ("no id_columns key", _table(lambda t: t.pop("id_columns")), r"lacks \['id_columns'\]"),
    ("empty features", _table(lambda t: t.update(features=[])), "non-empty list"),
    ("feature without a name", _table(lambda t: t["features"][0].pop("name")), r"features\[0\].*'name'"),
    ("unknown kind", _table(lambda t: t["features"][1].update(kind="ordinal")), "kind 'ordinal'"),
    ("no categories", _table(lambda t: t["features"][2].pop("categories")), "'colour' needs a non-empty list"),
    ("empty categories", _table(lambda t: t["features"][2].update(categories=[])), "'colour' needs a non-empty"),
    ("repeated categories", _table(lambda t: t["features"][2].update(categories=["r", "r", "b"])),
     "'colour' repeats categories"),
    ("numeric after categorical", _table(lambda t: t["features"].reverse()), "numeric features first"),
    ("repeated feature name", _table(lambda t: t["features"][1].update(name="age")), r"\['age'\] repeat"),
    ("feature named like an id column", _table(lambda t: t.update(id_columns=["income"])), r"\['income'\] repeat"),
    ("id_columns not strings", _table(lambda t: t.update(id_columns=[3])), "id_columns must be a list"),
    ("excluded feature", _table(lambda t: t.update(exclude=["age"])), "both excluded and used"),
    ("feature_names out of order", _meta(feature_names=["income", "age", "colour"]), "differ from the table"),
    ("feature_names missing", _meta(feature_names=None), "differ from the table"),
    ("feature_names not strings", _meta(feature_names=[1, 2, 3]), "feature_names must be null or a list"),
    ("positional feature_names of the wrong length", _meta(table=None, feature_names=["a"]), "has 1 names"),
    ("n_feature_terms not an int", _meta(n_feature_terms="3"), "n_feature_terms='3'"),
    ("n_feature_terms not one per feature", _meta(n_feature_terms=6), "3 features, but n_feature_terms=6"),
    ("column_order without a feature", _table(lambda t: t.update(column_order=["colour", "age"])),
     "column_order .* must name each feature once"),
    ("column_order repeating a feature", _table(lambda t: t.update(column_order=["age", "age", "colour", "income"])),
     "column_order .* must name each feature once"),
    ("column_order not strings", _table(lambda t: t.update(column_order=[0, 1, 2])), "must name each feature once"),
]


@pytest.mark.parametrize("meta, fragment", [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_a_malformed_table_is_refused(meta, fragment):
    with pytest.raises(ModelArtifactError, match=fragment):
        artifact.check_metadata(copy.deepcopy(meta), "m.onnx")


def test_a_model_file_whose_table_disagrees_with_its_graph_is_refused(work):
    """Sealed again after the edit, so that the table check itself answers (not the checksum)."""
    def with_table(table, dest):
        names = [f["name"] for f in table["features"]]
        return _edited(work / "model.onnx", dest,
                       lambda m: m.update(table=table, feature_names=names, n_feature_terms=len(names)), reseal=True)

    n = Scorer(work / "model.onnx").n_features
    table = {"features": [{"name": f"f{j}", "kind": "numeric"} for j in range(n - 1)]
             + [{"name": "c", "kind": "categorical", "categories": ["a", "b"]}], "id_columns": [], "exclude": []}
    with pytest.raises(ModelArtifactError, match=f"encode to {n + 2} input columns.*n_features={n}"):
        Scorer(with_table(table, work / "wide.onnx"))
    r = cli("info", "wide.onnx", cwd=work)
    assert r.returncode == 4 and "table" in r.stderr
    table["features"].pop(0)
    table["features"][-1]["categories"] = ["a"]  # n - 2 numeric + (1 + 1) = n columns
    assert Scorer(with_table(table, work / "table.onnx")).metadata["table"] == table


# ---------------------------------------------------------------- every number is bounded


NAN = float("nan")
BAD_NUMBERS = [  # (id, metadata, the field named)
    ("alpha 5", _meta(alpha=5.0), "alpha=5.0"),
    ("alpha 0", _meta(alpha=0), "alpha=0"),
    ("alpha 1", _meta(alpha=1.0), "alpha=1.0"),
    ("alpha NaN", _meta(alpha=NAN), "alpha=nan"),
    ("alpha text", _meta(alpha="0.05"), "alpha='0.05'"),
    ("alpha true", _meta(alpha=True), "alpha=True"),
    ("n_features huge", _meta(table=None, feature_names=None, n_feature_terms=None, n_features=2**30),
     "n_features=1073741824"),
    ("more feature terms than features", _meta(table=None, feature_names=None, n_feature_terms=7),
     "n_feature_terms=7"),
    ("latent_dim 0", _meta(latent_dim=0), "latent_dim=0"),
    ("latent_dim huge", _meta(latent_dim=2**40), "latent_dim=1099511627776"),
    ("latent_dim float", _meta(latent_dim=2.5), "latent_dim=2.5"),
    ("input_shape product", _meta(input_shape=[7]), r"input_shape=\[7\]"),
    ("input_shape negative", _meta(input_shape=[-2, -3]), "input_shape="),
    ("feature_mean short", _meta(feature_mean=[0.0] * 5), "feature_mean="),
    ("feature_mean NaN", _meta(feature_mean=[NAN] * 6), "feature_mean="),
    ("feature_mean text", _meta(feature_mean=["0"] * 6), "feature_mean="),
    ("feature_std 0", _meta(feature_std=[1.0] * 5 + [0.0]), "feature_std="),
    ("feature_std inf", _meta(feature_std=[float("inf")] * 6), "feature_std="),
    ("calibration NaN", _meta(calibration={"neg-elbo": [1.0, NAN]}), r"calibration\['neg-elbo'\]="),
    ("calibration text", _meta(calibration={"neg-elbo": ["1", "2"]}), r"calibration\['neg-elbo'\]=\['1', '2'\]"),
    ("calibration unsorted", _meta(calibration={"neg-elbo": [2.0, 1.0]}), r"calibration\['neg-elbo'\]=.*sorted"),
    ("calibration missing", _meta(calibration={}), r"calibration\['neg-elbo'\]=None"),
    ("calibration too long", _meta(calibration={"neg-elbo": list(range(20001))}), "1 to 20000 sorted numbers"),
    ("n_calibration disagrees", _meta(n_calibration=3), r"calibration\['neg-elbo'\]=.*n_calibration \(3\)"),
    ("n_calibration huge", _meta(n_calibration=10**9), "n_calibration=1000000000"),
    ("calibration_cap 0", _meta(calibration_cap=0), "calibration_cap=0"),
    ("threshold text", _meta(thresholds={"neg-elbo": "1.5"}), r"thresholds\['neg-elbo'\]='1.5'"),
    ("threshold NaN", _meta(thresholds={"neg-elbo": NAN}), r"thresholds\['neg-elbo'\]=nan"),
    ("auto_threshold NaN", _meta(auto_threshold={"rule": "f1", "score": "neg-elbo", "value": NAN}), "auto_threshold="),
    ("auto_threshold without a value", _meta(auto_threshold={"rule": "f1", "score": "neg-elbo"}), "auto_threshold="),
    ("auto_threshold recall 1.5", _meta(auto_threshold={"rule": "recall", "score": "neg-elbo", "value": 1.0,
                                                        "recall": 1.5}), "auto_threshold="),
    ("condition of 0 categories", _meta(condition={"kind": "categorical", "n_categories": 0}), "condition="),
    ("condition of a huge size", _meta(condition={"kind": "numeric", "size": 2**40}), "condition="),
    ("condition of another kind", _meta(condition={"kind": "ordinal", "size": 2}), "condition="),
    ("series step 1 microsecond", _series_meta(step_seconds=1e-6), "series.step_seconds=1e-06"),
    ("series step 1e12 s", _series_meta(step_seconds=1e12), "series.step_seconds=1000000000000.0"),
    ("series step true", _series_meta(step_seconds=True), "series is malformed"),
    ("series inserted_steps negative", _series_meta(inserted_steps=-1), "series.inserted_steps=-1"),
    ("series out_of_order_rows float", _series_meta(out_of_order_rows=2.5), "series.out_of_order_rows=2.5"),
    ("series season unknown", {**_series_meta(season=["month"]), "condition": {"kind": "numeric", "size": 2}},
     "season disagrees"),
    ("series season without its condition", _series_meta(season=["day"]), "season disagrees"),
    ("series season of another width", {**_series_meta(season=["day"]), "condition": {"kind": "numeric", "size": 4}},
     "season disagrees"),
    ("series season repeated", {**_series_meta(season=["day", "day"]), "condition": {"kind": "numeric", "size": 4}},
     "season disagrees"),
    ("training not an object", _meta(training=[]), r"training=\[\]"),
    ("training rows negative", _meta(training=_training(n_train=-5)), "training.n_train=-5"),
    ("training epochs float", _meta(training=_training(best_epoch=1.5)), "training.best_epoch=1.5"),
    ("training seconds NaN", _meta(training=_training(seconds=NAN)), "training.seconds=nan"),
    ("prior components 0", _meta(training=_training(latent_prior={"kind": "aggregate-posterior", "components": 0})),
     "training.latent_prior.components=0"),
    ("prior a string", _meta(training=_training(latent_prior="standard-normal")), "training.latent_prior="),
    ("latent samples 0", _meta(training=_training(config={"n_samples": 0})), "training.config.n_samples=0"),
    ("recalibration rows 0", _meta(recalibration={"rows": 0}), "recalibration.rows=0"),
]


@pytest.mark.parametrize("meta, field", [c[1:] for c in BAD_NUMBERS], ids=[c[0] for c in BAD_NUMBERS])
def test_a_metadata_number_out_of_bounds_is_refused(meta, field):
    with pytest.raises(ModelArtifactError) as info:
        artifact.check_metadata(copy.deepcopy(meta), "m.onnx")
    message = str(info.value)
    assert re.search(f"^m\\.onnx: .*{field}", message), message
    assert "\n" not in message and ("expected" in message) and len(message) < 400


def test_a_model_file_with_alpha_5_is_refused_not_flagging_every_row(work):
    """Sealed again after the edit (anyone can): the bound answers, with exit 4 and one line."""
    _edited(work / "model.onnx", work / "alpha.onnx", lambda m: m.update(alpha=5.0), reseal=True)
    with pytest.raises(ModelArtifactError, match=r"alpha\.onnx: metadata alpha=5\.0; expected a false-alarm rate "
                                                 r"strictly between 0 and 1\..*vae-anomaly fit"):
        Scorer(work / "alpha.onnx")
    r = cli("score", "rows.npy", "-m", "alpha.onnx", "-o", "out.csv", cwd=work)
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1 and "alpha=5.0" in r.stderr, r.stderr
    assert not (work / "out.csv").exists()


def test_a_latent_dim_other_than_the_graphs_is_refused(work):
    k = Scorer(work / "model.onnx").metadata["latent_dim"]
    _edited(work / "model.onnx", work / "latent.onnx", lambda m: m.update(latent_dim=k + 1), reseal=True)
    with pytest.raises(ModelArtifactError, match=f"latent_dim gives {k + 1} columns, but the graph's 'latent_mean' "
                                                 f"has {k}"):
        Scorer(work / "latent.onnx")


def test_a_condition_size_other_than_the_graphs_is_refused(tmp_path, rng):
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    X = rng.standard_normal((120, 4))
    result = train(X, condition=np.arange(len(X)) % 3, config=TrainConfig(epochs=2, hidden=(8, 8), seed=0))
    export_model(result, tmp_path / "cond.onnx", alpha=0.05)
    _edited(tmp_path / "cond.onnx", tmp_path / "edited.onnx",
            lambda m: m.update(condition={"kind": "categorical", "n_categories": 5}), reseal=True)
    with pytest.raises(ModelArtifactError, match="condition gives 5 columns, but the graph's 'condition' has 3"):
        Scorer(tmp_path / "edited.onnx")


# ---------------------------------------------------------------- the optional signature

KEY = "0123456789abcdef0123456789abcdef"


def _signature_snippet():
    block = DOCS.read_text().split("## Signature", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", block, flags=re.S)[0]


@pytest.fixture
def signed(trained, work, monkeypatch):
    """work/signed.onnx: the session's model exported with KEY in the environment (which stays set)."""
    from vae_anomaly.training.export import export_model

    monkeypatch.setenv(artifact.KEY_ENV, KEY)
    export_model(trained, work / "signed.onnx", alpha=0.05)
    return work / "signed.onnx"


def test_a_key_at_export_signs_the_model_and_a_key_at_load_verifies_it(signed, monkeypatch, cardio):
    import onnx

    from vae_anomaly.deploy.recalibration import recalibrate

    model = onnx.load_model_from_string(signed.read_bytes())
    props = model.metadata_props
    assert [p.key for p in props[-2:]] == [artifact.SIGNATURE_KEY, artifact.CHECKSUM_KEY]
    assert props[-2].value == artifact.model_signature(model, KEY.encode()) and re.fullmatch("[0-9a-f]{64}",
                                                                                             props[-2].value)
    assert artifact.model_checksum(model) == props[-1].value  # the checksum covers the signature too
    Scorer(signed)
    recalibrate(signed, cardio[0][:100], alpha=0.1)  # a rewritten model is signed again
    assert Scorer(signed).alpha == 0.1
    monkeypatch.delenv(artifact.KEY_ENV)
    Scorer(signed)  # without a key, the signature is not asked for
    monkeypatch.setenv(artifact.KEY_ENV, "another key, 32 characters long!")
    with pytest.raises(ModelArtifactError, match=r"signed\.onnx: signature mismatch: the file was not signed with "
                                                 f"the key in {artifact.KEY_ENV}"):
        Scorer(signed)


def test_with_a_key_set_an_unsigned_model_is_refused_in_one_line(work, monkeypatch):
    monkeypatch.setenv(artifact.KEY_ENV, KEY)
    with pytest.raises(ModelArtifactError, match=f"model\\.onnx: the model file is not signed, and "
                                                 f"{artifact.KEY_ENV} is set"):
        Scorer(work / "model.onnx")
    r = cli("score", "rows.npy", "-m", "model.onnx", "-o", "out.csv", cwd=work)  # the environment is inherited
    assert r.returncode == 4 and "is not signed" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (work / "out.csv").exists()


def test_a_signed_model_edited_and_sealed_again_is_refused(signed, work, monkeypatch):
    import onnx

    edit = lambda m: m.update(alpha=0.5)  # noqa: E731
    with monkeypatch.context() as m:  # sealed again without the key: the signature is gone
        m.delenv(artifact.KEY_ENV)
        _edited(signed, work / "resealed.onnx", edit, reseal=True)
    with pytest.raises(ModelArtifactError, match="is not signed"):
        Scorer(work / "resealed.onnx")
    with monkeypatch.context() as m:  # sealed again with another key
        m.setenv(artifact.KEY_ENV, "not the key")
        _edited(signed, work / "other.onnx", edit, reseal=True)
    with pytest.raises(ModelArtifactError, match="signature mismatch"):
        Scorer(work / "other.onnx")
    model = onnx.load_model_from_string(signed.read_bytes())  # the old signature kept, the checksum made good
    entry = next(p for p in model.metadata_props if p.key == artifact.METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "alpha": 0.5})
    model.metadata_props[-1].value = artifact.model_checksum(model)
    (work / "kept.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelArtifactError, match="signature mismatch"):
        Scorer(work / "kept.onnx")


def test_an_empty_key_is_refused(work, monkeypatch):
    monkeypatch.setenv(artifact.KEY_ENV, "")
    with pytest.raises(InputValidationError, match=f"{artifact.KEY_ENV}: set but empty"):
        Scorer(work / "model.onnx")


def test_the_docs_plain_onnx_snippet_verifies_a_signature(signed, work, monkeypatch):
    code = _signature_snippet()
    monkeypatch.chdir(work)
    shutil.copy(signed, work / "model.onnx")
    namespace: dict = {}
    exec(compile(code, "model-file.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    assert namespace["signed"] is True
    monkeypatch.setenv(artifact.KEY_ENV, "not the key")
    namespace = {}
    exec(compile(code, "model-file.md", "exec"), namespace)  # noqa: S102
    assert namespace["signed"] is False
