"""The dependency rules of the layout (docs/architecture.md: every row of its table, and module sizes), read
from the source with `ast`: what each of our packages may import, and no import cycles. Runtime imports
only: an import under `if TYPE_CHECKING:` is for annotations and loads nothing; reports/ may not name
orchestrate/ even there (the sweep folder is its only input: reports/sweep_folder.py).
(The load generator's freedom from Locust and gevent is checked by running it: tests/loadgen/test_core.py.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from configkit import REPO_ROOT as REPO

PACKAGES = ("server", "loadtest", "loadgen", "runfolder", "configkit", "reports", "orchestrate", "benchmarks")
# The forwarder that keeps `python -m reports.reproduce` working; it imports orchestrate inside main() only.
FORWARDER = "reports.reproduce"
# Worker-process code, and the one module outside it that may import it.
WORKER_PACKAGE = "server.worker"
WORKER_HANDLE = "server.worker_handle"
MODELS_PACKAGE = "server.models"
MAX_MODULE_LINES = 400
# Modules still over MAX_MODULE_LINES while their owners split them; an entry goes once its file is small
# (the test below fails for an entry that no longer needs to be here).
BEING_SPLIT: set[str] = set()


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports, as a dotted name (`from a import b` gives a.b when b is a module)
    top_level: bool  # at module level, not inside a function
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            found[module_name(path)] = path
    return found


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child):
            for other in child.orelse:  # the else branch runs
                yield from walk(other, in_function)
            continue
        function = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield child, in_function
        yield from walk(child, function)


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, in_function in walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            # `from pkg import submodule` loads pkg/__init__ too, but names only the submodule's contents.
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        found += [Import(name, t, not in_function, node.lineno) for t in targets]
    return found


MODULES = modules()
IMPORTS = [i for name, path in MODULES.items() for i in imports_of(name, path, set(MODULES))]


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def ours(target: str) -> bool:
    return under(target, *PACKAGES)


def shown(bad: list[Import]) -> str:
    return "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad)


def test_runfolder_imports_none_of_our_packages():
    bad = [
        i
        for i in IMPORTS
        if under(i.module, "runfolder") and ours(i.target) and not under(i.target, "runfolder")
    ]
    assert not bad, shown(bad)


def test_reports_import_neither_the_server_the_load_generator_nor_orchestration():
    forbidden = ("server", "loadtest", "loadgen", "orchestrate")
    bad = [
        i
        for i in IMPORTS
        if under(i.module, "reports") and i.module != FORWARDER and under(i.target, *forbidden)
    ]
    assert not bad, shown(bad)


def test_reports_import_only_run_folders_and_config_of_ours():
    allowed = ("reports", "runfolder", "configkit")
    bad = [
        i
        for i in IMPORTS
        if under(i.module, "reports")
        and i.module != FORWARDER
        and ours(i.target)
        and not under(i.target, *allowed)
    ]
    assert not bad, shown(bad)


def test_reports_do_not_name_orchestration_even_for_annotations():
    """The sweep is one concept read from one folder: reports/ computes every figure from the files that
    orchestrate/ writes, and knows none of its types (not under TYPE_CHECKING either)."""
    bad = []
    for name, path in MODULES.items():
        if not under(name, "reports") or name == FORWARDER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            target = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [target or ""]
            bad += [f"{name}:{node.lineno} {n}" for n in names if under(n, "orchestrate")]
    assert not bad, bad


def test_no_module_passes_400_lines_tests_included():
    paths = [*MODULES.values(), *sorted((REPO / "tests").rglob("*.py"))]
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    large = {name: size for name, size in sizes.items() if size > MAX_MODULE_LINES}
    assert set(large) <= BEING_SPLIT, {n: s for n, s in large.items() if n not in BEING_SPLIT}
    assert set(large) >= BEING_SPLIT, f"small now, take them off BEING_SPLIT: {BEING_SPLIT - set(large)}"


def test_the_reproduce_forwarder_loads_orchestration_only_when_run():
    forwarded = [i for i in IMPORTS if i.module == FORWARDER and ours(i.target)]
    assert forwarded and all(under(i.target, "orchestrate") and not i.top_level for i in forwarded), shown(
        forwarded
    )


def test_only_the_worker_handle_imports_worker_process_code():
    """Of the packages that run in the server's HTTP process or beside it; benchmarks/ may drive the engine
    in-process (benchmarks/worker_steps.py), as tests/ do."""
    bad = [
        i
        for i in IMPORTS
        if under(i.target, WORKER_PACKAGE)
        and not under(i.module, WORKER_PACKAGE, "benchmarks")
        and i.module != WORKER_HANDLE
    ]
    assert not bad, shown(bad)


def only(package: str, allowed: tuple[str, ...], *, besides: tuple[str, ...] = ()) -> list[Import]:
    """The imports of ours in `package` (less its subpackages `besides`) that `allowed` does not cover."""
    return [
        i
        for i in IMPORTS
        if under(i.module, package)
        and not (besides and under(i.module, *besides))
        and ours(i.target)
        and not under(i.target, *allowed)
    ]


def test_configkit_imports_none_of_our_packages():
    bad = only("configkit", ("configkit",))
    assert not bad, shown(bad)


def test_the_load_generator_imports_only_run_folders_and_config_of_ours():
    bad = only("loadgen", ("loadgen", "runfolder", "configkit"))
    assert not bad, shown(bad)


def test_the_server_imports_only_itself_and_config_of_ours():
    """The HTTP process (its orchestrate/ import is the next test's)."""
    bad = [
        i
        for i in only("server", ("server", "configkit"), besides=(WORKER_PACKAGE, MODELS_PACKAGE))
        if not under(i.target, "orchestrate")
    ]
    assert not bad, shown(bad)


def test_the_server_imports_nothing_of_orchestration():
    bad = [i for i in IMPORTS if under(i.module, "server") and under(i.target, "orchestrate")]
    assert not bad, shown(bad)


def test_worker_process_code_imports_only_the_pipe_models_settings_and_config_of_ours():
    allowed = (WORKER_PACKAGE, "server.ipc", MODELS_PACKAGE, "server.settings", "configkit")
    bad = only(WORKER_PACKAGE, allowed)
    assert not bad, shown(bad)


def test_model_lookup_imports_only_config_of_ours():
    bad = only(MODELS_PACKAGE, (MODELS_PACKAGE, "configkit"))
    assert not bad, shown(bad)


def test_orchestration_imports_neither_benchmarks_nor_tests():
    bad = [i for i in IMPORTS if under(i.module, "orchestrate") and under(i.target, "benchmarks", "tests")]
    assert not bad, shown(bad)


def test_only_benchmarks_import_benchmarks():
    """benchmarks/ sit on top, beside tests/: they may import everything of ours and tests/support (FAKE
    servers, synthetic series), and tests/ may import them; nothing below imports them."""
    bad = [i for i in IMPORTS if under(i.target, "benchmarks") and not under(i.module, "benchmarks")]
    bad += [
        i
        for i in IMPORTS
        if under(i.module, "benchmarks") and under(i.target, "tests") and not under(i.target, "tests.support")
    ]
    assert not bad, shown(bad)


def test_scenarios_import_only_the_load_generator_run_folders_and_config_of_ours():
    allowed = ("loadtest", "loadgen", "runfolder", "configkit")
    bad = [
        i for i in IMPORTS if under(i.module, "loadtest") and ours(i.target) and not under(i.target, *allowed)
    ]
    assert not bad, shown(bad)


def importable(target: str) -> str | None:
    """The module of ours that `target` names (a.b.c may be a name in module a.b), if any."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def cycles() -> list[list[str]]:
    """Import cycles among our modules, counting imports inside functions too (they close a cycle as
    surely, only later). A package's import of its own submodule is not a cycle (Python's own layout)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for i in IMPORTS:
        target = importable(i.target)
        if target and target != i.module and not target.startswith(i.module + "."):
            graph[i.module].add(target)
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycles():
    found = cycles()
    assert not found, "\n".join(" -> ".join(c) for c in found)
