"""Every TensorRT name edgeseg uses exists in the real Python bindings of each targeted release.

TensorRT's libraries cannot be installed here, but the `tensorrt-cu12-bindings` wheels
(the compiled pybind11 module alone) are ordinary wheels; `make install` downloads the
10.3 (JetPack 6) and 11.x ones into .cache/trt-bindings/. A pybind11 module keeps every
class, method, property and enum member name as a NUL-terminated string, so the names
can be read from the .so without loading it. Names edgeseg touches only on older
generations (tensorrt_build.ONLY_BEFORE_10 / ONLY_BEFORE_11) are checked only where
they apply; the 8.5-only names have no wheel on the registry and stay unchecked.
"""
from __future__ import annotations

import ast
import os
import re
import zipfile
from pathlib import Path

import pytest

from edgeseg.engine.tensorrt_build import ONLY_BEFORE_10, ONLY_BEFORE_11

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".cache" / "trt-bindings"
TRT_MODULES = ["edgeseg/engine/tensorrt_build.py", "edgeseg/runtime/tensorrt_runner.py", "edgeseg/engine/api.py"]
# variables that hold TensorRT objects in those modules
# (Polygraphy makes most TensorRT calls; these are the ones edgeseg still makes itself)
RECEIVERS = {"trt", "builder", "network", "parser", "config", "probe", "profile", "layer", "engine", "inspector",
             "runtime", "tensor", "self.trt", "self.engine", "self.context", "self.runtime"}
# properties the bindings define without an :ivar line, with where TensorRT's source defines them
UNDOCUMENTED_PROPERTIES = {
    "is_execution_tensor": 'python/src/infer/pyGraph.cpp: .def_property_readonly("is_execution_tensor", ...)',
}


def _receiver(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    if isinstance(node, ast.Attribute) and _receiver(node.value) == "trt":
        return "trt"  # trt.BuilderFlag.FP16: the member of an enum is a TensorRT name too
    return ""


def _trt_attributes():
    """(attribute node, whether it is called) for every TensorRT attribute edgeseg touches."""
    for module in TRT_MODULES:
        tree = ast.parse((ROOT / module).read_text())
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _receiver(node.value) in RECEIVERS:
                yield node, id(node) in called


def names_edgeseg_uses() -> set:
    return {node.attr for node, _ in _trt_attributes()}


def properties_edgeseg_uses() -> set:
    """Attributes read or set on TensorRT objects without being called: properties, which the API documents
    with ``:ivar NAME:`` in their class's docstring."""
    return {node.attr for node, is_called in _trt_attributes() if not is_called and _receiver(node.value) != "trt"}


def keywords_edgeseg_passes() -> set:
    """Keyword arguments of calls on TensorRT objects, which the API documents as ``:arg NAME:``."""
    keywords = set()
    for module in TRT_MODULES:
        for node in ast.walk(ast.parse((ROOT / module).read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    _receiver(node.func.value) in RECEIVERS:
                keywords |= {k.arg for k in node.keywords if k.arg}
    return keywords


def binding_names(wheel: Path) -> tuple:
    """(bytes of the compiled module, names the wheel's Python __init__ defines)."""
    with zipfile.ZipFile(wheel) as archive:
        so = next(n for n in archive.namelist() if n.endswith(".so"))
        init = next(n for n in archive.namelist() if n.endswith("/__init__.py"))
        python_names = {node.name for node in ast.walk(ast.parse(archive.read(init)))
                        if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        python_names |= set(re.findall(r"^(\w+)\s*=", archive.read(init).decode(), re.MULTILINE))
        return archive.read(so), python_names


def _wheel(version_prefix: str) -> Path:
    found = sorted(WHEELS.glob(f"tensorrt_cu12_bindings-{version_prefix}*.whl"))
    if not found:
        message = f"no tensorrt-cu12-bindings {version_prefix} wheel in {WHEELS}; `make test` downloads it"
        if os.environ.get("CI") == "true":  # on CI a missing wheel means the check silently did not run
            pytest.fail(message)
        pytest.skip(message)
    return found[-1]


def _present(name: str, binary: bytes, python_names: set) -> bool:
    # the linker merges a string into the tail of a longer one ("Logger" inside "ILogger"), so match the tail
    return name in python_names or name.encode() + b"\x00" in binary


@pytest.mark.parametrize("version,skip", [("10.3", ONLY_BEFORE_10), ("11.", ONLY_BEFORE_10 | ONLY_BEFORE_11)])
def test_every_tensorrt_name_edgeseg_uses_exists(version, skip):
    binary, python_names = binding_names(_wheel(version))
    used = names_edgeseg_uses() - skip
    assert len(used) > 40  # the collector really found edgeseg's TensorRT calls
    missing = sorted(n for n in used if not _present(n, binary, python_names))
    assert not missing, f"TensorRT {version} bindings lack {missing}"


def test_names_edgeseg_keeps_off_tensorrt_11_are_really_gone():
    binary, python_names = binding_names(_wheel("11."))
    for name in ("EXPLICIT_BATCH", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "int8_calibrator",
                 "set_calibration_profile", "OBEY_PRECISION_CONSTRAINTS"):
        assert name in ONLY_BEFORE_11 and not _present(name, binary, python_names), name
    old, _ = binding_names(_wheel("10.3"))
    assert all(_present(n, old, set()) for n in ("EXPLICIT_BATCH", "int8_calibrator", "set_calibration_profile"))


@pytest.mark.parametrize("version,skip", [("10.3", ONLY_BEFORE_10), ("11.", ONLY_BEFORE_10 | ONLY_BEFORE_11)])
def test_properties_and_keywords_are_documented_as_such(version, skip):
    """A name can exist as a method elsewhere and not be a property here: check the role the API documents."""
    binary, _ = binding_names(_wheel(version))
    text = binary.decode("latin-1")
    properties = properties_edgeseg_uses() - skip
    assert {"engine_host_code_allowed", "DLA_core", "num_DLA_cores"} <= properties
    undocumented = sorted(n for n in properties - set(UNDOCUMENTED_PROPERTIES)
                          if not re.search(rf":iva[rl] {re.escape(n)}:", text))
    assert all(_present(n, binary, set()) for n in UNDOCUMENTED_PROPERTIES)
    assert not undocumented, f"TensorRT {version} documents no property {undocumented}"
    keywords = keywords_edgeseg_passes()
    assert "ignore_mismatch" in keywords
    assert not [k for k in keywords if f":arg {k}:" not in text], keywords
