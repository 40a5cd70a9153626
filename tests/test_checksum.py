"""The model file's checksum (docs/model-file.md, "Checksum") and the checks of its optional ``table`` entry."""

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
from vae_anomaly.errors import ModelArtifactError

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


def test_a_well_formed_table_and_a_positional_model_pass():
    artifact.check_metadata(_meta(), "m")  # 2 numeric + (3 + 1) = 6 columns
    artifact.check_metadata(_meta(table=None, feature_names=None), "m")
    artifact.check_metadata(_meta(table=None, feature_names=None, n_feature_terms=None), "m")
    positional = _meta(feature_names=[f"f{j}" for j in range(6)], n_feature_terms=6)
    del positional["table"]
    artifact.check_metadata(positional, "m")


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
