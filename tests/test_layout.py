"""The house rules that keep the code cheap to extend: floors that only point down, no
import cycles, no project imports hidden inside functions, no file over 400 lines."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# package -> the project packages it may import (itself included); anything else is a floor pointing up
FLOORS = {
    "core": {"core"},
    "data_utils": {"core", "data_utils"},
    "metric_utils": {"core", "metric_utils"},
    "log_utils": {"core", "log_utils"},
    "models": {"core", "data_utils", "metric_utils", "log_utils", "models"},
    "codec": {"core", "data_utils", "metric_utils", "log_utils", "models", "codec"},
    "multitask": {"core", "data_utils", "models", "multitask"},
    "train": {"core", "data_utils", "metric_utils", "log_utils", "models", "codec", "train"},
}
TOP = ("vqvc",)  # the command and the library facade: may import every floor, like main.py
PROJECT = set(FLOORS) | set(TOP) | {"main", "benchmarks", "tests"}
MAX_LINES = 400


def source_files():
    for package in (*FLOORS, *TOP):
        yield from sorted((ROOT / package).rglob("*.py"))
    yield ROOT / "main.py"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path):
    """``(imported module, inside a function?)`` for every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def project_imports(path):
    return [(name, inside) for name, inside in imports(path) if name.split(".")[0] in PROJECT]


@pytest.mark.parametrize("path", list(source_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_floors_only_point_down(path):
    package = path.relative_to(ROOT).parts[0]
    allowed = FLOORS.get(package)
    if allowed is None:  # main.py, the top: may import anything
        return
    upward = sorted({name for name, _ in project_imports(path) if name.split(".")[0] not in allowed})
    assert not upward, f"{package}/ may import only {sorted(allowed)}; imports {upward}"


@pytest.mark.parametrize("path", list(source_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_project_import_hides_inside_a_function(path):
    hidden = sorted({name for name, inside in project_imports(path) if inside})
    assert not hidden, f"imports inside functions are for optional heavy dependencies only; found {hidden}"


def test_no_import_cycle():
    graph = {}
    for path in source_files():
        module = module_name(path)
        graph[module] = {name for name, inside in project_imports(path) if not inside}
    modules = set(graph)

    def resolve(name):  # "a.b.c" may name a module or a symbol of module "a.b"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges = {m: {resolve(n) for n in names} - {"", m} for m, names in graph.items()}
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("path", [*source_files(), *sorted((ROOT / "benchmarks").glob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_is_over_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it by idea"
