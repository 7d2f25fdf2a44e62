"""What a logged model carries so it loads wherever MLflow does: the code its pickles need, third-party pins.

A Router pickle references classes of `intelrouter.model`, `.features`, `.classifiers` (and `.static` with the
static block); predicting runs `.lean`, `.text`, `.signals`. Those modules and what they import at module level
are copied into the model (MLflow's `code_paths`: a `code/intelrouter/` package MLflow puts first on `sys.path`
when it loads the model), so a fresh environment needs only the packages of `requirements.txt`, all on PyPI.
Nothing here may pull in the store, the settings or the servers: `test_model_package.py` imports the copied
files with the rest of the package out of reach.
"""

from __future__ import annotations

import ast
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from intelrouter.errors import IntelRouterError

PACKAGE = "intelrouter"
PACKAGE_DIR = Path(__file__).resolve().parent
PYFUNC_CODE = PACKAGE_DIR / "pyfunc_model.py"
ROOTS = ("model",)  # the Router, its pyfunc form and everything they import
STATIC_ROOT = "static"  # the static block's encoder, pickled only when the features use it
ALWAYS_REQUIRED = ("mlflow",)  # the pyfunc flavour itself
# import name -> distribution on PyPI, where the two differ
DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def _imports(tree: ast.Module, module_level_only: bool) -> list[str]:
    """Absolute module names imported by a parsed module (at module level only, or anywhere)."""
    names: list[str] = []
    nodes = ast.walk(tree) if not module_level_only else _module_level(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            # `from intelrouter import errors` imports a submodule
            names += [f"{node.module}.{alias.name}" for alias in node.names if node.module == PACKAGE]
    return names


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run at import time: the body, and inside module-level try/if blocks (not in functions)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.Try | ast.If):
            for block in (node.body, node.orelse, getattr(node, "finalbody", []),
                          *(h.body for h in getattr(node, "handlers", []))):
                out += _module_level(block)
    return out


def _parse(module: str) -> ast.Module:
    return ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))


def model_modules(static: bool = False) -> list[str]:
    """The package's modules a logged model needs (short names, `__init__` first): the roots and their imports."""
    todo = [*ROOTS, *((STATIC_ROOT,) if static else ())]
    found: set[str] = set()
    while todo:
        module = todo.pop()
        if module in found:
            continue
        found.add(module)
        for name in _imports(_parse(module), module_level_only=True):
            if name.startswith(PACKAGE + ".") and (PACKAGE_DIR / f"{name.split('.')[1]}.py").is_file():
                todo.append(name.split(".")[1])
    return ["__init__", *sorted(found - {"__init__"})]


def write_model_code(dest: Path, static: bool = False) -> Path:
    """Copy the modules a model needs into `dest/intelrouter/` (a package of their own); returns that folder."""
    package = dest / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    for module in model_modules(static):
        shutil.copyfile(PACKAGE_DIR / f"{module}.py", package / f"{module}.py")
    return package


def model_requirements(static: bool = False) -> list[str]:
    """Pinned third-party requirements of the model's code (every import, lazy ones too): all on PyPI."""
    tops = set(ALWAYS_REQUIRED)
    for module in model_modules(static):
        tops |= {name.split(".")[0] for name in _imports(_parse(module), module_level_only=False)}
    tops |= {name.split(".")[0] for name in _imports(ast.parse(PYFUNC_CODE.read_text()), module_level_only=False)}
    third_party = sorted(t for t in tops if t != PACKAGE and t not in sys.stdlib_module_names and t != "__future__")
    pins = []
    for top in third_party:
        dist = DISTRIBUTIONS.get(top, top)
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            raise IntelRouterError(f"the model's code imports {top!r}, which is no installed distribution: "
                               f"add it to DISTRIBUTIONS in {__name__}") from None
    return pins
