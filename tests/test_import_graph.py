"""Data flows one way: the imports of service/, sdk/pitcrew/ and edge/pitcrew_edge/ form no cycle.

The graph is built from the source (``ast``), not by importing anything:
an edge ``a -> b`` for every first-party module ``b`` that ``a`` imports at
module level (``if TYPE_CHECKING:`` blocks excluded; importing a submodule
does not count as importing its parent package). ``graphlib`` then orders
it, which fails on the first cycle.

Imports inside functions do not take part in module loading, so they could
hide a cycle; each one that remains is listed in :data:`DEFERRED` with its
reason, and the test fails on one that is not listed (or a listed one that
is gone), so a new deferred import is a decision, not an accident.
"""

import ast
import functools
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"service": ROOT / "service", "pitcrew": ROOT / "sdk" / "pitcrew",
            "pitcrew_edge": ROOT / "edge" / "pitcrew_edge"}
SKIP = ("service/migrations/",)  # Alembic loads env.py and the revisions as scripts

FACTORY = ("the application factory imports what it mounts when it builds an app (Flask's "
           "factory pattern): importing `service` (gunicorn's config, the worker) loads no view")
DEFERRED = {
    ("service", "service.api"): FACTORY,
    ("service", "service.api.docs"): FACTORY,
    ("service", "service.health"): FACTORY,
    ("service", "service.sdk_api"): FACTORY,
    ("service", "service.console"): FACTORY,
    ("service", "service.cli"): FACTORY,
    ("service", "service.ingest"): FACTORY,
    ("service", "service.domain.secretbox"): FACTORY,
    ("service", "service.domain.webhooks"): FACTORY,
    ("service.console", "service.console.session"):
        "the console's modules import `bp` from their package: its hooks and routes register "
        "on it when the console is mounted (init_app), not while the package loads",
    ("service.console", "service.console.views"):
        "as service.console.session: the views register their routes on `bp` when mounted",
    ("service.console.session", "service.console.nav"):
        "console code (not changed here): no cycle, the import could move to the top",
    ("service.console.views.flags", "service.domain.segments"):
        "console code (not changed here): no cycle, the import could move to the top",
    ("service.delivery", "service.delivery_shared"):
        "the shared-memory version table is created only where a process serves streams; "
        "its OSError (no /dev/shm) is handled where it is created",
    ("service.gunicorn_conf", "service.delivery_shared"):
        "gunicorn's master loads this config module: the shared memory is created in its "
        "on_starting hook, not when the config is read",
}


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            if any(skip in path.relative_to(ROOT).as_posix() for skip in SKIP):
                continue
            found[module_name(package, root, path)] = (path, path.name == "__init__.py")
    return found


def imports(tree: ast.Module, name: str, is_package: bool, known) -> tuple[set[str], set[str]]:
    """(module-level, in-function) first-party modules imported by one module."""
    base = name if is_package else name.rpartition(".")[0]

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    top, deferred = set(), set()

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = in_function or isinstance(child, FUNCTIONS)
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parent = base.split(".")[: len(base.split(".")) - (child.level - 1)]
                    module = ".".join(parent + ([child.module] if child.module else []))
                else:
                    module = child.module
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                           for a in child.names]
            for target in targets:
                found = resolve(target)
                if found and found != name:
                    (deferred if inner else top).add(found)
            visit(child, inner)

    visit(tree, False)
    return top, deferred


@functools.cache
def _graph() -> tuple[dict[str, frozenset[str]], frozenset[tuple[str, str]]]:
    known = modules()
    edges, deferred = {}, set()
    for name, (path, is_package) in known.items():
        top, inner = imports(ast.parse(path.read_text(), str(path)), name, is_package, known)
        edges[name] = frozenset(top)
        deferred |= {(name, target) for target in inner}
    return edges, frozenset(deferred)


def graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """(module-level edges, deferred edges), parsed once per run; copies, free to change."""
    edges, deferred = _graph()
    return {name: set(targets) for name, targets in edges.items()}, set(deferred)


def test_module_imports_have_no_cycle():
    edges, _ = graph()
    assert len(edges) > 100, "the walk found too few modules"
    try:
        order = list(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert set(order) >= set(edges)


def test_each_import_inside_a_function_is_deliberate():
    _, deferred = graph()
    unexplained = sorted(deferred - set(DEFERRED))
    assert not unexplained, f"imports inside functions without a reason in DEFERRED: {unexplained}"
    gone = sorted(set(DEFERRED) - deferred)
    assert not gone, f"DEFERRED lists imports that no longer exist: {gone}"


def test_imports_inside_functions_hide_no_cycle_either():
    """With the deferred imports added, the only cycle left is the console registering its views."""
    edges, deferred = graph()
    registration = {("service.console", "service.console.session"),
                    ("service.console", "service.console.views")}
    for source, target in deferred - registration:
        edges[source] = edges[source] | {target}
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise AssertionError(f"import cycle through a deferred import: {cycle}") from None


def test_the_sdk_and_the_edge_never_import_the_service():
    edges, deferred = graph()
    for source, targets in [*edges.items(), *((s, {t}) for s, t in deferred)]:
        if not source.startswith("service"):
            assert not any(t.startswith("service") for t in targets), (source, targets)
        if source.startswith("pitcrew."):
            assert not any(t.startswith("pitcrew_edge") for t in targets), (source, targets)


def test_the_statistics_import_no_app_code():
    """The results' entry point and the statistics take plain data (like gbstats)."""
    edges, deferred = graph()
    pure = ["service.analysis.stats", "service.analysis.power", "service.analysis.decisions",
            "service.analysis.report", "service.analysis.settings", "service.analysis.sums"]
    allowed = set(pure)
    for name in pure:
        reached = set(edges[name]) | {t for s, t in deferred if s == name}
        assert reached <= allowed, (name, reached - allowed)
