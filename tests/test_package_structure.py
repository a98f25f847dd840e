"""The package's layout keeps its promises: no import cycle among portacnn's modules, no optional library
imported at module level, and layer files that hold math, not measurements."""

import ast
import re
from pathlib import Path

import portacnn

PACKAGE = Path(portacnn.__file__).resolve().parent
OPTIONAL = {"cupy", "torch", "dask", "distributed", "matplotlib", "array_api_strict", "onnx", "onnxruntime", "mpi4py",
            "numba"}
#: modules that are themselves imported only when first used, and so may import their library at the top
LAZY_MODULES = {"portacnn.kernels.numba_kernels"}  # through kernels.compiled.kernels(), never at import


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, path.name == "__init__.py"


def _module_level_imports(path):
    """Every ``import``/``from ... import`` statement outside functions (class bodies and ifs included)."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _resolve(module, is_package, node):
    """The portacnn modules a statement in ``module`` imports at load time."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("portacnn")]
    if node.level == 0:
        base = node.module or ""
        return [base] if base.startswith("portacnn") else []
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    target = ".".join(base + ([node.module] if node.module else []))
    known = {name for name, _, _ in _modules()}
    return [t for t in [f"{target}.{a.name}" for a in node.names] + [target] if t in known][:1] or [target]


def test_no_import_cycle_among_portacnn_modules():
    graph = {}
    for name, path, is_package in _modules():
        graph[name] = {t for node in _module_level_imports(path) for t in _resolve(name, is_package, node)
                       if t != name}
    # a package's __init__ importing its own submodules is how packages work; a cycle through other modules is not
    state, stack = {}, []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            walk(node)


def test_optional_libraries_are_imported_only_when_used():
    for name, path, _ in _modules():
        if name in LAZY_MODULES:
            continue
        for node in _module_level_imports(path):
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "").split(".")[0]] if node.level == 0 else []
            assert not OPTIONAL & set(roots), f"{name} imports {roots} at module level"


def test_importing_portacnn_loads_no_compiler_and_no_optional_library():
    import subprocess
    import sys

    code = "import sys, portacnn; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % sorted(OPTIONAL)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_layer_files_hold_no_measured_figures_or_speed_constants():
    pattern = re.compile(r"\b\d+(\.\d+)?x\b|\bmeasured\b|\b\d+(\.\d+)? ?(ms|us|MB|KB|GB)\b|_FROM\b|BLOCK_BYTES",
                         re.IGNORECASE)
    for path in sorted((PACKAGE / "layers").glob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{lineno}: {line.strip()}"
