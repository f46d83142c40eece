"""Dependencies earn their place: every runtime dependency of pyproject.toml is imported by the
product (transunet_app), and every third-party module the product imports is a runtime
dependency. Test-only references (medpy, ...) belong to the ``test`` extra."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# distribution -> the module the product imports for it
MODULE_OF = {"PyYAML": "yaml", "tensorboard": "torch.utils.tensorboard", "scikit-image": "skimage"}
# runtime dependencies whose importing code lives on another branch (none left)
PENDING: dict[str, str] = {}


def _distributions(requirements: list[str]) -> list[str]:
    return [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements]


def _product_imports() -> set[str]:
    """Dotted names imported anywhere in transunet_app (module level or inside functions)."""
    names = set()
    for path in (ROOT / "transunet_app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_every_runtime_dependency_is_imported_by_the_product():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = _product_imports()
    unused = []
    for dist in _distributions(project["dependencies"]):
        module = MODULE_OF.get(dist, dist)
        if not any(n == module or n.startswith(module + ".") for n in imported) and dist not in PENDING:
            unused.append(dist)
    assert not unused, f"runtime dependencies the product never imports (the test extra?): {unused}"
    assert not set(_distributions(project["dependencies"])) & set(
        _distributions(project["optional-dependencies"]["test"])), "a dependency is both runtime and test"


def test_every_third_party_module_the_product_imports_is_a_runtime_dependency():
    """... or belongs to an optional feature's extra (``export``: onnx, onnxruntime), which the
    product imports only inside that feature and refuses with one line when it is missing."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    features = [d for extra, deps in project["optional-dependencies"].items() if extra != "test"
                for d in _distributions(deps)]
    declared = {MODULE_OF.get(d, d).split(".")[0]
                for d in _distributions(project["dependencies"]) + features}
    top = {n.split(".")[0] for n in _product_imports()}
    undeclared = sorted(top - declared - set(sys.stdlib_module_names) - {"transunet_app"})
    assert not undeclared, f"imported by the product but not a runtime dependency: {undeclared}"
