"""elax's own modules import each other one way: no cycle, function-level imports included, and the schema and
the low layers import nothing above them."""

import ast
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "elax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _target(name: str) -> str | None:
    """The elax module that importing `name` runs (a module, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The elax modules `module` imports anywhere in its file (top level, functions, classes)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from mod import name`, the module mod.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for name in names if name.startswith("elax") and (t := _target(name)) and t != module}
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _cycle() -> list[str] | None:
    """One import cycle of GRAPH, as the list of its modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dependency in sorted(GRAPH[module]):
            if state.get(dependency) == "open":
                return stack[stack.index(dependency):] + [dependency]
            if dependency not in state and (found := visit(dependency)):
                return found
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_scan_sees_function_level_imports():
    assert "elax.runs" in GRAPH["elax.cli"]          # imported inside cli.run
    assert "elax.data.files" in GRAPH["elax.data.datasets"]
    assert _target("elax.models.family.Family") == "elax.models.family"


def test_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle())


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dependency in GRAPH[todo.pop()] - seen:
            seen.add(dependency)
            todo.append(dependency)
    return seen


def test_low_layers_import_nothing_above_them():
    assert GRAPH["elax.config"] == set()                        # the schema
    assert GRAPH["elax.registry"] == set() and GRAPH["elax.exits"] == set() and GRAPH["elax.stopping"] == set()
    assert GRAPH["elax.watchdog"] == set()                      # it gets a callback
    assert _reachable("elax.workdir") == {"elax.config", "elax.registry", "elax.data.catalog"}


def test_the_report_and_the_workdir_import_no_jax():
    code = "import sys, elax.report, elax.workdir; print(sorted(m for m in ('jax', 'numpy', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
