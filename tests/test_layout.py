"""The torch wall, checked: the deploy side never imports torch nor the training side, and the
public API imports with torch unimportable (docs/design.md, "Import rule")."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_anomaly"
DEPLOY_MODULES = sorted(p for p in (PACKAGE / "deploy").glob("*.py"))

#: makes ``import torch`` fail as on a machine without it (a meta-path finder, not
#: ``sys.modules['torch'] = None``, which libraries that probe ``sys.modules`` trip over)
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports, relative imports resolved, at any depth."""
    package = ["vae_anomaly", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", DEPLOY_MODULES, ids=lambda p: p.stem)
def test_a_deploy_module_imports_neither_torch_nor_the_training_side(path):
    bad = sorted(n for n in _imported_modules(path)
                 if n == "torch" or n.startswith(("torch.", "vae_anomaly.training")))
    assert not bad, f"{path.name} imports {bad}; the deploy side must stay numpy + onnxruntime"


def test_the_rule_reads_relative_imports():
    """The check above would pass vacuously if it missed relative imports: it must see them."""
    names = _imported_modules(PACKAGE / "training" / "fit.py")
    assert "vae_anomaly.training.train" in names and "vae_anomaly.deploy.io" in names


def test_every_deploy_module_imports_with_torch_unimportable():
    modules = [f"vae_anomaly.deploy.{p.stem}" for p in DEPLOY_MODULES if p.stem != "__init__"]
    r = _run("import importlib\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "assert 'torch' not in sys.modules\n"
             "print('ok', len(sys.modules))")
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]


def test_the_public_api_imports_with_torch_unimportable_and_training_says_what_is_missing():
    r = _run("from vae_anomaly import Scorer, ScoreResult, VAEAnomalyDetector, TrainConfig, fit_file, score_file\n"
             "import vae_anomaly.integrations.service, vae_anomaly.integrations.dask\n"
             "assert 'torch' not in sys.modules\n"
             "try:\n"
             "    VAEAnomalyDetector(epochs=1).fit([[0.0, 1.0]] * 20)\n"
             "except ModuleNotFoundError as e:\n"
             "    print('needs', e.name)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs torch" in r.stdout


def test_fit_refuses_bad_input_before_it_imports_torch(tmp_path):
    """A missing file or a bad option is an input error (exit code 3) that comes back without the
    seconds of importing torch: fit_file reads and checks its input first."""
    bad = tmp_path / "normal.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    r = _run("from vae_anomaly import fit_file\n"
             "from vae_anomaly.errors import InputValidationError\n"
             f"for kwargs in ({{'normal_file': {str(tmp_path / 'missing.csv')!r}}},\n"
             f"               {{'normal_file': {str(bad)!r}, 'window': 4}},\n"
             f"               {{'normal_file': {str(bad)!r}, 'labels': {str(bad)!r}}}):\n"
             "    try:\n"
             f"        fit_file(output={str(tmp_path / 'model.onnx')!r}, **kwargs)\n"
             "    except InputValidationError as e:\n"
             "        print('refused:', e)\n"
             "assert 'torch' not in sys.modules\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("refused:") == 3, r.stdout


def test_an_unknown_public_name_is_an_attribute_error():
    import vae_anomaly

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        vae_anomaly.nonexistent  # noqa: B018


def test_scoring_a_numeric_csv_imports_neither_onnx_nor_pandas(model_path, cardio, tmp_path):
    """Loading, verifying and pruning the model file use the protobuf messages alone, and reading a
    numeric CSV needs neither pandas nor pyarrow.compute (importing them costs seconds of a small
    ``score``; issue 33); the messages are the classes ``onnx`` itself uses."""
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, cardio[1][:3], delimiter=",", header=",".join(f"c{i}" for i in range(21)), comments="")
    r = _run("from vae_anomaly import score_file, Scorer\n"
             f"res = score_file({str(rows)!r}, {str(model_path)!r}, {str(tmp_path / 's.csv')!r})\n"
             f"Scorer({str(model_path)!r}).feature_terms(__import__('numpy').zeros((1, 21), 'float32'))\n"
             "assert 'onnx' not in sys.modules and 'onnx.onnx_ml_pb2' in sys.modules, sorted(sys.modules)\n"
             "assert 'pandas' not in sys.modules and 'pyarrow.compute' not in sys.modules\n"
             "import onnx\n"
             "from vae_anomaly.deploy.onnx_proto import messages\n"
             "assert onnx.ModelProto is messages().ModelProto\n"
             "print('ok', len(res.scores))")
    assert r.returncode == 0 and r.stdout.startswith("ok 3"), r.stderr[-2000:]


def test_a_pruned_graph_computes_only_what_was_asked_and_gives_the_same_values(model_path, cardio):
    import onnxruntime as ort

    from vae_anomaly.deploy import artifact, onnx_proto

    model, _ = artifact.parse_model(model_path.read_bytes(), "m")
    x = {"x": cardio[1][:50].astype(np.float32)}
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for outputs in (["neg_elbo"], ["latent_mean"], ["feature_terms", "neg_elbo"]):
        pruned = onnx_proto.prune(model, outputs)
        assert [o.name for o in pruned.graph.output] == outputs
        assert len(pruned.graph.node) < len(model.graph.node) and not pruned.metadata_props
        got = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
        for name, value in zip(outputs, got):
            np.testing.assert_array_equal(value, full.run([name], x)[0])
    with pytest.raises(ValueError, match="no output"):
        onnx_proto.prune(model, ["nope"])
