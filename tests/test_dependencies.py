"""The dependency rules of the layout (docs/architecture.md), read from the source with `ast`: what each of
our packages may import, and no import cycles. Runtime imports only: an import under `if TYPE_CHECKING:` is
for annotations and loads nothing; reports/ may not name orchestrate/ even there (the sweep folder is its
only input: reports/sweep_folder.py).
(The load generator's freedom from Locust and gevent is checked by running it: tests/loadgen/test_core.py.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from configkit import REPO_ROOT as REPO

PACKAGES = ("server", "loadtest", "loadgen", "runfolder", "configkit", "reports", "orchestrate")
# The forwarder that keeps `python -m reports.reproduce` working; it imports orchestrate inside main() only.
FORWARDER = "reports.reproduce"
# Worker-process code, and the one module outside it that may import it.
WORKER_PACKAGE = "server.worker"
WORKER_HANDLE = "server.worker_handle"


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


def test_orchestration_modules_stay_small():
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in MODULES.items()
        if under(name, "orchestrate")
    }
    assert max(sizes.values()) <= 400, {n: s for n, s in sizes.items() if s > 400}


def test_the_reproduce_forwarder_loads_orchestration_only_when_run():
    forwarded = [i for i in IMPORTS if i.module == FORWARDER and ours(i.target)]
    assert forwarded and all(under(i.target, "orchestrate") and not i.top_level for i in forwarded), shown(
        forwarded
    )


def test_only_the_worker_handle_imports_worker_process_code():
    bad = [
        i
        for i in IMPORTS
        if under(i.target, WORKER_PACKAGE)
        and not under(i.module, WORKER_PACKAGE)
        and i.module != WORKER_HANDLE
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
