"""The ONNX protobuf messages, and a graph pruned to some outputs, without importing the ``onnx`` package.

Importing ``onnx`` costs about 2 s on 2 cores (``onnx.helper`` imports ml_dtypes), most of a
``score`` of a small file. Reading, verifying and pruning a model file needs only the messages
generated from ``onnx-ml.proto``: the installed package's ``onnx/onnx_ml_pb2.py`` imports nothing
but protobuf, so :func:`messages` executes that one file under its own module name. The classes are
the ones ``import onnx`` uses later in the same process (it finds the module already imported), and
parsing is protobuf's own.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

#: the generated module's name inside the onnx package
_PB2 = "onnx.onnx_ml_pb2"


@functools.cache
def messages():
    """The ``onnx.onnx_ml_pb2`` module (ModelProto, TensorProto, ...), loaded without ``onnx/__init__``.

    Raises
    ------
    ImportError : the ``onnx`` package is not installed (it is a base dependency).
    """
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    spec = importlib.util.find_spec("onnx")  # locates the package; runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the onnx package is not installed; reinstall vae-anomaly (pip install -e .).")
    path = Path(next(iter(spec.submodule_search_locations))) / "onnx_ml_pb2.py"
    file_spec = importlib.util.spec_from_file_location(_PB2, path)
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_PB2] = module
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PB2]
        raise
    return module


def prune(model, outputs: list[str]):
    """A new ModelProto computing only ``outputs`` (in that order) from every input of ``model``.

    Keeps the nodes the outputs depend on (walking the topologically ordered nodes backwards), the
    initializers and value_info they read, all graph inputs (callers feed them whatever they ask
    for), the opsets and IR version; drops the metadata. A graph with subgraph attributes (If, Loop,
    Scan: their bodies may read outer names) keeps every node; the exported graphs have none.

    Raises
    ------
    ValueError : an output that ``model``'s graph does not have.
    """
    graph = model.graph
    declared = {o.name: o for o in graph.output}
    missing = [o for o in outputs if o not in declared]
    if missing:
        raise ValueError(f"the graph has no output {missing}; it has {sorted(declared)}.")
    needed = set(outputs)
    nested = any(a.HasField("g") or len(a.graphs) for node in graph.node for a in node.attribute)
    keep = []
    for node in reversed(graph.node):
        if nested or needed.intersection(node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    pb = messages()
    pruned = pb.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                           producer_version=model.producer_version)
    pruned.opset_import.extend(model.opset_import)
    pruned.functions.extend(model.functions)
    g = pruned.graph
    g.name = graph.name
    g.input.extend(graph.input)
    g.node.extend(reversed(keep))
    g.initializer.extend(t for t in graph.initializer if t.name in needed)
    g.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in needed)
    g.value_info.extend(v for v in graph.value_info if v.name in needed)
    g.output.extend(declared[o] for o in outputs)
    return pruned
