"""The library is pure: importing fedmap pulls in no workflow or cloud tooling."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import fedmap

FORBIDDEN = ("airflow", "mlflow", "great_expectations", "dvc", "boto3")
REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fedmap"
OPTIONAL = {"fedmap.flower": "flwr"}
"""Modules of an optional extra (pip install .[flower]), imported only where it is installed."""

_CHILD = f"""
import importlib, importlib.util, json, pkgutil, sys
import fedmap
names = sorted(m.name for m in pkgutil.walk_packages(fedmap.__path__, "fedmap."))
optional = {OPTIONAL!r}
for name in names:
    if name in optional and importlib.util.find_spec(optional[name]) is None:
        continue
    importlib.import_module(name)
forbidden = {FORBIDDEN!r}
bad = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({{"imported": names, "forbidden": bad}}))
"""


def test_tests_import_the_real_package() -> None:
    # tests/fedmap/ mirrors the package without an __init__.py; it must not shadow the library
    # (pytest runs with --import-mode=importlib, so tests/ never joins sys.path)
    assert fedmap.__file__ is not None  # a regular package, not a namespace
    assert Path(fedmap.__file__).resolve() == (PACKAGE / "__init__.py").resolve()
    search = [Path(p).resolve() for p in fedmap.__path__]
    assert search == [PACKAGE.resolve()]


def test_importing_every_module_loads_no_forbidden_package() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {
        f"fedmap.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    }
    assert expected <= set(result["imported"])
    assert {"fedmap.cli", "fedmap.algorithms.fedmap", "fedmap.report"} <= set(result["imported"])
    assert result["forbidden"] == []


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_no_source_file_imports_a_forbidden_package() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 20
    offenders = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        roots = _imported_roots(tree)
        has_code = any(not isinstance(node, ast.Expr) for node in tree.body)
        if has_code:  # every module with code imports something: the parse saw them
            assert roots, path
        bad = roots & set(FORBIDDEN)
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert offenders == {}


def test_static_check_detects_forbidden_imports() -> None:
    source = "import dvc.api\nfrom mlflow import log_metric\nimportlib.import_module('boto3')\n"
    assert _imported_roots(ast.parse(source)) == {"dvc", "mlflow", "boto3"}
