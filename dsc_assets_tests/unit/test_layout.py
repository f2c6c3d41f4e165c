"""The code's shape, read from its own imports with ``ast``: imports run one way only, cli → definitions → build →
defs → lib → resources, with no import circle (function-local imports count too: they may delay an import, never
dodge a circle), and every file and function stays short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

from dsc_assets_tests.conftest import PROJECT_ROOT

# Top to bottom: a module may import from its own layer or any layer below it.
LAYERS = [
    "resources",
    "dsc_assets.lib",
    "dsc_assets.defs",
    "dsc_assets.build",
    "dsc_assets.definitions",
    "dsc_assets.cli",
]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
# (path, function) pairs allowed past MAX_FUNCTION_LINES, each with its reason. Empty: none is.
LONG_FUNCTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("dsc_assets", "resources"):
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside a function)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                targets.add(name)
            elif name.rsplit(".", 1)[0] in modules and f"{name}" not in modules:
                targets.add(name.rsplit(".", 1)[0])
    return targets


def _layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        imported = _imports(path, modules) - {module}
        # a package's __init__ is not the module that imports from it: `from pkg import sub` is an edge to pkg.sub
        graph[module] = {
            m
            for m in imported
            if not (modules[m].name == "__init__.py" and any(o.startswith(m + ".") for o in imported))
        }
    return graph


def test_imports_run_one_way_through_the_layers():
    wrong = [
        f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_layer_test_sees_a_wrong_import(tmp_path):
    """The reader itself: an upward and a function-local import are both found."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import os\nfrom dsc_assets.lib.tasks import load_task\n\ndef f():\n    from dsc_assets.cli.main import main\n"
    )
    modules = {"dsc_assets.lib.tasks": Path("x.py"), "dsc_assets.cli.main": Path("y.py")}
    assert _imports(path, modules) == {"dsc_assets.lib.tasks", "dsc_assets.cli.main"}
    assert _layer("dsc_assets.cli.main") > _layer("dsc_assets.lib.tasks") > _layer("resources.llm")


def test_files_and_functions_are_short():
    too_long = []
    for path in sorted((PROJECT_ROOT / "dsc_assets").rglob("*.py")) + sorted(
        (PROJECT_ROOT / "resources").rglob("*.py")
    ):
        shown = str(path.relative_to(PROJECT_ROOT))
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{shown}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (shown, node.name) not in LONG_FUNCTIONS:
                    too_long.append(f"{shown}: {node.name} is {length} lines")
    assert not too_long, f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function:\n" + "\n".join(
        too_long
    )


def test_the_readme_is_short_starts_with_the_command_and_holds_no_study_table():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200: details go to docs/)"
    assert any("dsc run" in line for line in lines[:60]), "the first `dsc run` belongs in the README's first 60 lines"
    results = [
        line
        for line in lines
        if line.startswith("|") and any(word in line.lower() for word in ("difference", "ci95", "vs base", "win rate"))
    ]
    assert not results, f"study results belong in reports/README.md, not the README: {results[:3]}"
