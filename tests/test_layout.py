"""The architecture the folders promise: who imports what, one definition per concept."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import keras_compress as kc

PACKAGE = Path(kc.__file__).resolve().parent
FEATURES = ("pruning", "sharing", "trimming", "distillation")
#: Where TensorFlow or tflite-micro may be imported at module level.
TENSORFLOW_HOMES = ("deploy", "tflm")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE), ast.parse(path.read_text())


def _module_level_imports(tree):
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            if node.module == "keras_compress":  # from keras_compress import pruning
                yield from (f"keras_compress.{alias.name}" for alias in node.names)


def test_tensorflow_is_imported_at_module_level_only_by_deploy_and_tflm():
    offenders = [
        f"{path}: {name}"
        for path, tree in _modules()
        for name in _module_level_imports(tree)
        if name.split(".")[0] in ("tensorflow", "tflite_micro")
        and path.parts[0] not in TENSORFLOW_HOMES
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("feature", FEATURES)
def test_features_depend_on_core_and_coding_not_on_each_other(feature):
    allowed = {"core", "coding", feature}
    offenders = []
    for path, tree in _modules():
        if path.parts[0] != feature:
            continue
        for node in ast.walk(tree):  # function-level imports count too
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "keras_compress" and (len(parts) < 2 or parts[1] not in allowed):
                    offenders.append(f"{path}: {name}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "concept",
    ["weight_key", "is_wrapper", "selects", "compressed_weights", "strip", "optimizer_slots"],
)
def test_each_concept_has_one_definition(concept):
    places = [
        str(path)
        for path, tree in _modules()
        for node in tree.body  # module-level functions (a wrapper's methods are its own)
        if isinstance(node, ast.FunctionDef) and node.name == concept
    ]
    assert len(places) == 1, places


def test_no_public_name_is_both_a_function_and_a_module():
    clashes = []
    packages = [kc, *(getattr(kc, n) for n in kc.__all__ if hasattr(getattr(kc, n), "__path__"))]
    for module in packages:
        package = module.__name__
        for name in getattr(module, "__all__", []):
            if not (Path(module.__path__[0]) / f"{name}.py").exists():
                continue
            if not isinstance(getattr(module, name), type(kc)):
                clashes.append(f"{package}.{name}")
    assert not clashes, clashes


@pytest.mark.slow
def test_importing_the_package_loads_no_deployment_code():
    code = (
        "import sys, keras_compress; "
        "print(sorted(m for m in sys.modules if 'deploy' in m or 'tflm' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert kc.export is kc.deploy.export  # and the lazy names resolve


def test_version_comes_from_the_package_metadata():
    assert kc.__version__ == importlib.metadata.version("keras-compress")
