"""The house rules of docs/architecture.md, checked on the source tree.

Each rule is a pure function over plain data (module -> the modules it imports, module -> line
count, module -> logger names), so that the `test_rule_*` unit tests can feed it a bad input
and see it fail; the `test_tree_*` tests apply it to the real tree.

What counts as an import: every `import` and `from ... import` statement anywhere in a module,
at its top, inside functions and under `if TYPE_CHECKING:` alike (a type-only import is still a
dependency, and mypy follows it). `from rrwatch.x import y` is an import of the module
`rrwatch.x.y` when there is one, else of `rrwatch.x`. The parent packages Python runs on the
way to a module are not counted, as in import-linter. Dynamic imports (importlib) are not seen.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rrwatch"

# module -> {imported module: line of the first import of it}
Imports = Mapping[str, Mapping[str, int]]

# ---------------------------------------------------------------------------------------------
# The rules, as data.

# Layers, top to bottom: a module may import from its own part of rrwatch (the top-level module
# or package it is in) and from any layer below its own, never from one above. The parts named
# in one layer are independent: they do not import each other. Every part of rrwatch must be
# placed here: a new top-level module fails the layer test until it is.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),                            # `python -m rrwatch`
    ("cli",),                                 # argument parsing and the commands
    ("daemon",),                              # the trio side and the composition root
    ("host",),                                # RR host mode: registration, BIRD
    ("testing",),                             # local etcd, PKI, simulated clusters
    ("etcd",),                                # the only etcd adapter
    ("config", "metrics"),                    # the options and their loading; Prometheus
    ("certs",),                               # the TLS files' checks, with cryptography
    ("tls", "retry", "logs", "sdnotify"),     # SSL context, backoff, log format, sd_notify
    ("errors", "status"),                     # RrwatchError and ExitStatus; the frozen Status
    ("core",),                                # pure: stdlib and attrs only
    ("__init__",),                            # rrwatch/__init__.py, the empty root package
)

# rrwatch.testing is shipped for `rrwatch demo`; inside the package only the demo imports it.
# Outside the package, only tests/, bench/ and the script that draws the docs' pictures do.
TESTING_IMPORTERS = ("rrwatch.cli.demo",)
TESTING_IMPORTER_DIRS = ("tests", "bench", "docs")

# The pure core: what it may import besides the standard library.
CORE_ALLOWED = ("attrs",)

# The dependencies that no rrwatch.core module may load, even indirectly.
HEAVY = ("trio", "etcd3gw", "requests", "prometheus_client", "cryptography")

# Module size. No exceptions are justified today; one would be listed with its reason.
MAX_LINES = 400
SIZE_EXCEPTIONS: Mapping[str, int] = {}

# Logger names, flat and stable: docs/ and the README quote log lines, and operators filter the
# journal by them. These are the names the modules had before the package layout (their
# __name__ then); `rrwatch.t` and the like are not for modules.
LOGGERS = frozenset({
    "rrwatch.bird", "rrwatch.daemon", "rrwatch.election", "rrwatch.etcd",
    "rrwatch.local_etcd", "rrwatch.notify", "rrwatch.pki", "rrwatch.reconcile",
    "rrwatch.report", "rrwatch.rotation", "rrwatch.settings", "rrwatch.watch",
})
# Loggers of our dependencies that rrwatch configures (logs.py quiets urllib3).
FOREIGN_LOGGERS = frozenset({"urllib3"})

# ---------------------------------------------------------------------------------------------
# Reading the tree.


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def raw_imports(source: str, module: str, is_package: bool) -> list[tuple[str, str | None, int]]:
    """(module named, name imported from it or None, line) for every import statement."""
    here = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                named = ".".join(base + ([node.module] if node.module else []))
            else:
                named = node.module or ""
            found += [(named, alias.name, node.lineno) for alias in node.names]
    return found


def resolve(named: str, name: str | None, modules: Iterable[str]) -> str:
    """The module an import statement imports: `from a import b` is `a.b` if that is a module."""
    if name is not None and f"{named}.{name}" in modules:
        return f"{named}.{name}"
    return named


def imports_of(files: Mapping[str, Path], modules: Iterable[str]) -> dict[str, dict[str, int]]:
    modules = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        for named, name, line in raw_imports(path.read_text(), module,
                                             path.name == "__init__.py"):
            edges.setdefault(resolve(named, name, modules), line)
        graph[module] = edges
    return graph


def script_files() -> dict[str, Path]:
    """The repository's Python files outside the package (tests, bench, docs, ...), by path."""
    found = {}
    for top in sorted(ROOT.iterdir()):
        if top.name in ("rrwatch", "build") or top.name.startswith((".", "rrwatch.egg")):
            continue  # .venv and .git among them
        for path in [top] if top.suffix == ".py" else sorted(top.rglob("*.py")):
            found[path.relative_to(ROOT).as_posix()] = path
    return found


def logger_calls(source: str) -> list[tuple[str, int]]:
    """The argument of each logging.getLogger(...) call, as source text, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger" and node.args):
            found.append((ast.unparse(node.args[0]), node.lineno))
    return found


# A log line as the docs quote it: `INFO    rrwatch.watch: ...`, `<6>rrwatch.reconcile: ...`,
# or JSON's `"logger": "rrwatch.reconcile"`.
DOC_LOG_LINE = re.compile(
    r'(?:\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+|<\d>)(rrwatch\.[a-z_]+):'
    r'|"logger": "(rrwatch\.[a-z_]+)"')


def documented_loggers(texts: Iterable[str]) -> set[str]:
    return {a or b for text in texts for a, b in DOC_LOG_LINE.findall(text)}


def defined_names(source: str) -> set[str]:
    """The names a module binds at its top level (in `if` and `try` blocks too)."""
    names: set[str] = set()
    body = list(ast.parse(source).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try):
            body += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                     *(s for h in getattr(node, "handlers", []) for s in h.body)]
    return names


# ---------------------------------------------------------------------------------------------
# The rules, as pure functions: each returns one line per violation, empty when all is well.


def part(module: str) -> str:
    """The top-level module or package of rrwatch a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def core_violations(imports: Imports, allowed: Iterable[str] = CORE_ALLOWED) -> list[str]:
    allowed = set(allowed) | set(sys.stdlib_module_names)
    return [f"{module} imports {target} (line {line}): the core imports only the standard"
            f" library, {', '.join(CORE_ALLOWED)} and rrwatch.core"
            for module, edges in sorted(imports.items())
            if module == "rrwatch.core" or module.startswith("rrwatch.core.")
            for target, line in sorted(edges.items())
            if not (target.split(".")[0] in allowed
                    or target == "rrwatch.core" or target.startswith("rrwatch.core."))]


def layer_violations(imports: Imports, layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    problems = []
    unplaced = sorted({part(m) for m in imports if part(m) not in level})
    problems += [f"rrwatch.{name} is in no layer: place it in LAYERS" for name in unplaced]
    for module, edges in sorted(imports.items()):
        for target, line in sorted(edges.items()):
            if not target.startswith("rrwatch.") or part(module) == part(target):
                continue
            if part(module) not in level:
                continue
            if part(target) not in level:
                problems.append(f"{module} imports {target} (line {line}), which is in no layer")
            elif level[part(target)] < level[part(module)]:
                problems.append(f"{module} imports {target} (line {line}): {part(target)} is in"
                                f" a layer above {part(module)}")
            elif level[part(target)] == level[part(module)]:
                problems.append(f"{module} imports {target} (line {line}): {part(module)} and"
                                f" {part(target)} share a layer, and do not import each other")
    return problems


def forbidden_testing_imports(imports: Imports, importers: Iterable[str] = TESTING_IMPORTERS,
                       dirs: Iterable[str] = TESTING_IMPORTER_DIRS) -> list[str]:
    """Who imports rrwatch.testing: modules of the package and files (by path) outside it."""
    allowed_modules = set(importers)
    allowed_dirs = tuple(f"{d}/" for d in dirs)
    return [f"{importer} imports {target} (line {line}): rrwatch.testing is imported only by"
            f" {', '.join(sorted(allowed_modules))} and {', '.join(dirs)}"
            for importer, edges in sorted(imports.items())
            if not (importer in allowed_modules or importer.startswith(allowed_dirs)
                    or part(importer) == "testing" and importer.startswith("rrwatch"))
            for target, line in sorted(edges.items())
            if target == "rrwatch.testing" or target.startswith("rrwatch.testing.")]


def cycles(imports: Imports) -> list[list[str]]:
    """One cycle path (first module repeated at the end) per strongly connected group of
    modules, among the modules of the map (Tarjan's algorithm, iteratively)."""
    graph = {m: sorted(t for t in edges if t in imports) for m, edges in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in graph[node]:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [_path_within(sorted(group), graph) for group in groups]


def _path_within(group: list[str], graph: Mapping[str, list[str]]) -> list[str]:
    """A shortest cycle through the group's first module, by breadth-first search."""
    members = set(group)
    first = group[0]
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for child in graph[node]:
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), first]
                if child in members and child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {first}")  # a strongly connected group has one


def unresolved(where: str, statements: Iterable[tuple[str, str | None, int]],
               defined: Mapping[str, set[str]]) -> list[str]:
    """The imports of rrwatch in `statements` that name no module, or no name of its module.
    `defined`: module -> the names it binds (defined_names)."""
    problems = []
    for named, name, line in statements:
        if named != "rrwatch" and not named.startswith("rrwatch."):
            continue
        if named not in defined:
            problems.append(f"{where} imports {named} (line {line}), which is no module")
        elif name not in (None, "*") and f"{named}.{name}" not in defined \
                and name not in defined[named]:
            problems.append(f"{where} imports {name} from {named} (line {line}), which has no"
                            f" such module or name")
    return problems


def size_violations(lines: Mapping[str, int], limit: int = MAX_LINES,
                    exceptions: Mapping[str, int] = SIZE_EXCEPTIONS) -> list[str]:
    return [f"{module} has {count} lines, over {exceptions.get(module, limit)}"
            for module, count in sorted(lines.items())
            if count > exceptions.get(module, limit)]


def heavy_loaded(loaded: Iterable[str], heavy: Iterable[str] = HEAVY) -> list[str]:
    """Which of the heavy dependencies a list of sys.modules keys holds."""
    top = {name.split(".")[0] for name in loaded}
    return [name for name in heavy if name in top]


def logger_violations(calls: Mapping[str, list[tuple[str, int]]],
                      pinned: frozenset[str] = LOGGERS,
                      foreign: frozenset[str] = FOREIGN_LOGGERS) -> list[str]:
    """`calls`: module -> the getLogger arguments as source text (a literal is quoted)."""
    problems = []
    for module, found in sorted(calls.items()):
        for argument, line in found:
            try:
                name = ast.literal_eval(argument)
            except ValueError:
                name = None
            if not isinstance(name, str):
                problems.append(f"{module} line {line}: getLogger({argument}): a logger is named"
                                f" by a literal from the pinned set, not by a module's name")
            elif name not in pinned | foreign:
                problems.append(f"{module} line {line}: logger {name!r} is not one of the pinned"
                                f" names (LOGGERS): keep the old one, or update the docs and"
                                f" LOGGERS together")
    return problems


# ---------------------------------------------------------------------------------------------
# The real tree.

FILES = module_files()
IMPORTS = imports_of(FILES, FILES)
CORE_MODULES = sorted(m for m in FILES if m == "rrwatch.core" or m.startswith("rrwatch.core."))


def test_tree_core_imports_only_stdlib_and_attrs() -> None:
    problems = core_violations(IMPORTS)
    assert not problems, "\n".join(problems)


def test_tree_layers_import_downward_only() -> None:
    problems = layer_violations(IMPORTS)
    assert not problems, "\n".join(problems)


def test_tree_testing_is_imported_only_by_the_demo_tests_and_bench() -> None:
    outside = {name: {resolve(named, imported, FILES): line
                      for named, imported, line in raw_imports(path.read_text(), name, False)}
               for name, path in script_files().items()}
    problems = forbidden_testing_imports({**IMPORTS, **outside})
    assert not problems, "\n".join(problems)


def test_tree_has_no_import_cycle() -> None:
    found = cycles(IMPORTS)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(path) for path in found)


def test_tree_every_rrwatch_import_names_something_that_exists() -> None:
    """A stale import (of a module or name that moved) would slip past the other rules unseen:
    in the package, the tests, bench/ and docs/."""
    defined = {module: defined_names(path.read_text()) for module, path in FILES.items()}
    sources = {**{m: (p.read_text(), m, p.name == "__init__.py") for m, p in FILES.items()},
               **{name: (p.read_text(), name, False) for name, p in script_files().items()}}
    problems = [problem for where, (source, module, is_package) in sorted(sources.items())
                for problem in unresolved(where, raw_imports(source, module, is_package),
                                          defined)]
    assert not problems, "\n".join(problems)


def test_tree_no_module_is_over_400_lines() -> None:
    lines = {module: len(path.read_text().splitlines()) for module, path in FILES.items()}
    problems = size_violations(lines)
    assert not problems, "\n".join(problems)


def test_tree_docs_show_the_layer_table() -> None:
    rows = re.findall(r"^ *\| \d+ \| (.+) \|$", (ROOT / "docs/architecture.md").read_text(), re.M)
    shown = [tuple(re.findall(r"`([a-z_]+)`", row)) for row in rows]
    assert shown == [layer for layer in LAYERS if layer != ("__init__",)], (
        "docs/architecture.md's layer table differs from LAYERS")


def probe_command(module: str) -> list[str]:
    """A fresh interpreter that imports one module and prints what sys.modules then holds."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    return [sys.executable, "-c", code]


def loaded_by(modules: Iterable[str]) -> dict[str, list[str]]:
    """For each module, the heavy dependencies importing it alone loads: one fresh interpreter
    per module (an earlier import would pollute sys.modules), all run at once."""
    running = {m: subprocess.Popen(probe_command(m), cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
               for m in modules}
    loaded = {}
    for module, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"import {module} failed:\n{err}"
        loaded[module] = heavy_loaded(out.split())
    return loaded


def test_tree_core_modules_load_no_heavy_dependency() -> None:
    assert len(CORE_MODULES) > 5, CORE_MODULES
    # rrwatch.etcd is probed with them, to show that the probe sees what an import loads.
    loaded = loaded_by([*CORE_MODULES, "rrwatch.etcd"])
    assert {"trio", "etcd3gw", "requests"} <= set(loaded.pop("rrwatch.etcd"))
    problems = [f"import {module} loads {', '.join(heavy)}"
                for module, heavy in sorted(loaded.items()) if heavy]
    assert not problems, "\n".join(problems)


def test_tree_loggers_are_the_pinned_flat_names() -> None:
    calls = {module: logger_calls(path.read_text()) for module, path in FILES.items()}
    problems = logger_violations(calls)
    used = {ast.literal_eval(a) for found in calls.values() for a, _ in found
            if a.startswith(("'", '"'))}
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    quoted = documented_loggers(path.read_text() for path in documents)
    assert quoted, "no log line found in the docs: has their format changed?"
    problems += [f"the docs quote log lines of {name}, which no module logs to"
                 for name in sorted(quoted - used)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The rules fail on bad input.


def test_rule_core_rejects_third_party_and_outer_rrwatch_imports() -> None:
    imports = {
        "rrwatch.core.good": {"attrs": 1, "collections.abc": 2, "rrwatch.core.model": 3},
        "rrwatch.core.bad": {"trio": 4, "rrwatch.errors": 5, "attr": 6},
        "rrwatch.etcd.client": {"trio": 7},  # not the core
    }
    assert core_violations(imports) == [
        "rrwatch.core.bad imports attr (line 6): the core imports only the standard library,"
        " attrs and rrwatch.core",
        "rrwatch.core.bad imports rrwatch.errors (line 5): the core imports only the standard"
        " library, attrs and rrwatch.core",
        "rrwatch.core.bad imports trio (line 4): the core imports only the standard library,"
        " attrs and rrwatch.core",
    ]


def test_rule_core_counts_function_level_and_type_checking_imports() -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from rrwatch.daemon.run import Daemon\n"
              "def f():\n    import trio\n    from . import model\n")
    modules = {"rrwatch.core.x", "rrwatch.core.model", "rrwatch.daemon.run"}
    edges = {resolve(named, name, modules): line
             for named, name, line in raw_imports(source, "rrwatch.core.x", False)}
    assert edges == {"typing": 1, "rrwatch.daemon.run": 3, "trio": 5, "rrwatch.core.model": 6}
    assert len(core_violations({"rrwatch.core.x": edges})) == 2


def test_rule_layers_reject_upward_sibling_and_unplaced_imports() -> None:
    imports = {
        "rrwatch.daemon.run": {"rrwatch.host.keeper": 1, "rrwatch.etcd": 2, "trio": 3},
        "rrwatch.host.keeper": {"rrwatch.daemon.watcher": 4, "rrwatch.host.birdc": 5},
        "rrwatch.metrics": {"rrwatch.config": 6, "rrwatch.status": 7},
        "rrwatch.gadget": {"rrwatch.core.model": 8},
        "rrwatch.core.model": {"rrwatch.core.selector": 9},
    }
    assert layer_violations(imports) == [
        "rrwatch.gadget is in no layer: place it in LAYERS",
        "rrwatch.host.keeper imports rrwatch.daemon.watcher (line 4): daemon is in a layer"
        " above host",
        "rrwatch.metrics imports rrwatch.config (line 6): metrics and config share a layer,"
        " and do not import each other",
    ]


def test_rule_testing_is_imported_only_where_allowed() -> None:
    imports = {
        "rrwatch.cli.demo": {"rrwatch.testing.local_etcd": 1},
        "rrwatch.testing.local_etcd": {"rrwatch.testing.pki": 2},
        "rrwatch.daemon.run": {"rrwatch.testing": 3},
        "tests/conftest.py": {"rrwatch.testing": 4},
        "bench/run.py": {"rrwatch.testing.simulate": 5},
        "deploy/tool.py": {"rrwatch.testing.pki": 6},
    }
    assert [p.split(" (")[0] for p in forbidden_testing_imports(imports)] == [
        "deploy/tool.py imports rrwatch.testing.pki",
        "rrwatch.daemon.run imports rrwatch.testing",
    ]


def test_rule_cycles_are_found_with_their_path() -> None:
    imports = {
        "rrwatch.a": {"rrwatch.b": 1},
        "rrwatch.b": {"rrwatch.c": 1, "trio": 2},
        "rrwatch.c": {"rrwatch.a": 1, "rrwatch.d": 2},
        "rrwatch.d": {},
        "rrwatch.e": {"rrwatch.e": 1},
        "rrwatch.f": {"rrwatch.d": 1},
    }
    assert cycles(imports) == [["rrwatch.a", "rrwatch.b", "rrwatch.c", "rrwatch.a"],
                               ["rrwatch.e", "rrwatch.e"]]
    del imports["rrwatch.c"]["rrwatch.a"], imports["rrwatch.e"]["rrwatch.e"]
    assert cycles(imports) == []


def test_rule_a_package_that_its_own_module_imports_back_is_a_cycle() -> None:
    files = {"rrwatch.config": "from rrwatch.config.settings import Settings\n",
             "rrwatch.config.settings": "from rrwatch.config import Config\n"}
    imports = {m: {resolve(n, name, files): line
                   for n, name, line in raw_imports(src, m, m == "rrwatch.config")}
               for m, src in files.items()}
    assert cycles(imports) == [["rrwatch.config", "rrwatch.config.settings", "rrwatch.config"]]


def test_rule_stale_imports_are_found() -> None:
    defined = {"rrwatch": set(), "rrwatch.core": set(), "rrwatch.core.calico": {"BadRecord"},
               "rrwatch.config": defined_names("from rrwatch.config.loader import Config\n"
                                               "if True:\n    LIMIT = 1\n")}
    statements = [("rrwatch", "calico", 1), ("rrwatch.core", "calico", 2),
                  ("rrwatch.core.calico", "BadRecord", 3), ("rrwatch.core.calico", "Gone", 4),
                  ("rrwatch.verify", None, 5), ("rrwatch.config", "Config", 6),
                  ("rrwatch.config", "LIMIT", 7), ("trio", "sleep", 8)]
    assert unresolved("docs/x.py", statements, defined) == [
        "docs/x.py imports calico from rrwatch (line 1), which has no such module or name",
        "docs/x.py imports Gone from rrwatch.core.calico (line 4), which has no such module"
        " or name",
        "docs/x.py imports rrwatch.verify (line 5), which is no module",
    ]


def test_rule_size() -> None:
    lines = {"rrwatch.small": 400, "rrwatch.big": 401, "rrwatch.allowed": 450}
    assert size_violations(lines, exceptions={"rrwatch.allowed": 460}) == [
        "rrwatch.big has 401 lines, over 400"]


def test_rule_heavy_dependencies_are_seen_in_sys_modules() -> None:
    assert heavy_loaded(["sys", "attrs", "trio._core", "prometheus_client"]) == [
        "trio", "prometheus_client"]
    assert heavy_loaded(["sys", "attrs", "trionic"]) == []


def test_rule_loggers() -> None:
    calls = {
        "rrwatch.daemon.run": [('"rrwatch.daemon"', 1)],
        "rrwatch.logs": [("'urllib3'", 2)],
        "rrwatch.daemon.watcher": [("__name__", 3)],
        "rrwatch.status": [('"rrwatch.status"', 4)],
    }
    assert [p.split(":")[0] for p in logger_violations(calls)] == [
        "rrwatch.daemon.watcher line 3", "rrwatch.status line 4"]
    assert logger_calls("import logging\nlog = logging.getLogger(__name__)\n"
                        "root = logging.getLogger()\n") == [("__name__", 2)]


def test_rule_documented_loggers_are_read_from_log_lines() -> None:
    text = ("2026-11-22 01:03:46,111 INFO    rrwatch.reconcile: promote node-b\n"
            "<6>rrwatch.watch: snapshot\n"
            '{"level": "INFO", "logger": "rrwatch.daemon", "message": "..."}\n'
            "rrwatch.toml: the config file\n")
    assert documented_loggers([text]) == {"rrwatch.reconcile", "rrwatch.watch", "rrwatch.daemon"}
