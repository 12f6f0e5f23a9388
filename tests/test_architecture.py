"""The project's architectural rules, checked by reading the source (ast), so a broken rule is found without
importing the code that breaks it; only the last test imports the package, in a subprocess, to see what it loads.

- The library (``compression_pipeline`` except ``orchestration/``, ``definitions.py`` and the command line
  ``__main__.py``) never imports Dagster.
- No import circle among the package's modules: module-level and function-level imports both count (a circle
  through a function-level import still means the two modules cannot be understood, tested or moved apart).
  The report package also keeps its modules in one order, each importing only those before it.
- ``import compression_pipeline`` (and its report) loads no framework: torch, TensorFlow, Keras, ONNX Runtime and
  Dagster are imported inside the functions that need them.
"""

import ast
import itertools
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "compression_pipeline"
# The only modules that may import Dagster: the orchestration, the code location, and the command line
# (``python -m compression_pipeline run|resume|lineage`` drives Dagster; nothing in the library imports it).
NOT_LIBRARY = (f"{PACKAGE}.orchestration", f"{PACKAGE}.definitions", f"{PACKAGE}.__main__")
FRAMEWORKS = ("torch", "tensorflow", "keras", "onnxruntime", "dagster")


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@cache
def imports(name: str) -> tuple[tuple[str, int], ...]:
    """(imported module, line) for every import statement anywhere in module ``name``, relative ones resolved.

    ``from a import b`` names ``a.b`` when that is a module of the package, else ``a``. Importing ``a.b`` also runs
    ``a/__init__.py``, but that is not counted as an import of ``a``: a package's ``__init__`` importing its own
    modules would otherwise always be a circle."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub if sub in modules() else source, node.lineno))
    return tuple(found)


def where(name: str, line: int) -> str:
    return f"{modules()[name].relative_to(ROOT)}:{line}"


def is_library(name: str) -> bool:
    return not any(name == m or name.startswith(m + ".") for m in NOT_LIBRARY)


def test_the_library_never_imports_dagster():
    found = [f"{where(name, line)} imports {mod}" for name in modules() if is_library(name)
             for mod, line in imports(name) if mod.split(".")[0] == "dagster" or mod.startswith("dagster_")]
    assert not found, f"the library must not import Dagster (only {', '.join(NOT_LIBRARY)} may):\n" + "\n".join(found)


def graph() -> dict[str, dict[str, int]]:
    """module -> {package module it imports: the first line that does}."""
    out = {}
    for name in modules():
        edges = {}
        for mod, line in imports(name):
            if mod in modules() and mod != name:
                edges.setdefault(mod, line)
        out[name] = edges
    return out


def strongly_connected(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module: each holds at least one circle."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def circle(g: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest circle through the component's first module, as modules (first == last)."""
    start, members = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(g[path[-1]]):
            if w == start:
                return path + [start]
            if w in members and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"no circle through {start} in {component}")


def test_no_import_circle_among_the_package_modules():
    g = graph()
    found = []
    for component in strongly_connected(g):
        path = circle(g, component)
        found.append(" -> ".join(path) + "\n    " + "\n    ".join(
            f"{where(a, g[a][b])} imports {b}" for a, b in itertools.pairwise(path)))
    assert not found, "import circles among compression_pipeline's modules:\n" + "\n".join(found)


def test_the_report_modules_import_only_what_comes_before_them():
    """The report package's order (its ``__init__`` docstring): a module importing a later one is a circle waiting
    to happen, even before the later one imports it back."""
    order = ["cells", "compare", "contract", "md", "plots", "html", "files", "select", "model_card", "document"]
    g = graph()
    for i, name in enumerate(order):
        later = {f"{PACKAGE}.report.{m}" for m in order[i + 1:]} | {f"{PACKAGE}.report"}
        wrong = [f"{where(f'{PACKAGE}.report.{name}', line)} imports {mod}"
                 for mod, line in g[f"{PACKAGE}.report.{name}"].items() if mod in later]
        assert not wrong, "\n".join(wrong)
    assert set(order) == {n.rpartition(".")[2] for n in modules() if n.startswith(f"{PACKAGE}.report.")}, \
        "a new report module: give it its place in the order above and in report/__init__.py's docstring"


def test_importing_the_package_and_its_report_loads_no_framework():
    """The package (what every process imports) and the report (what the orchestration imports at load time)."""
    code = ("import json, sys\n"
            "import compression_pipeline, compression_pipeline.report, compression_pipeline.report.model_card\n"
            f"print(json.dumps([compression_pipeline.__file__, sorted({{m.split('.')[0] for m in sys.modules}} & "
            f"{set(FRAMEWORKS)!r})]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr
    origin, loaded = json.loads(run.stdout.splitlines()[-1])
    assert Path(origin).is_relative_to(ROOT)
    assert loaded == [], f"importing compression_pipeline and its report loaded {loaded}: import them in functions"
