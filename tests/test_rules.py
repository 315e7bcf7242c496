"""Rules of the code base that CI checks: module and function sizes, schedules dispatched through
their protocol (never on their kind), netCDF4 only behind the I/O package, tests named by
behaviour, run files read and written by xarray only behind the I/O package, no
skipping of required libraries, and no import cycles among simkit's modules.

Each failure names the file and line and the limit it breaks."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

from test_required_backends import _importorskips

ROOT = Path(__file__).parent.parent
TESTS = ROOT / "tests"
#: The packages the size, schedule and netCDF4 rules apply to.
PACKAGES = ("simkit", "solvers")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def _where(path: Path, line: int | None = None) -> str:
    name = path.relative_to(ROOT).as_posix()
    return name if line is None else f"{name}:{line}"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ---------------------------------------------------------------- sizes

def test_no_module_is_over_500_lines():
    long = [f"{_where(path)}: {n} lines"
            for path in _sources(*PACKAGES)
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"expected modules of at most {MAX_MODULE_LINES} lines, given " + \
        "; ".join(long)


def function_lengths(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, line, length)`` of every function of ``tree``, from its ``def`` line to
    its last line: a nested function counts inside its parent (and is measured itself too)."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def test_no_function_is_over_80_lines():
    long = [f"{_where(path, line)}: {name} is {length} lines"
            for path in _sources(*PACKAGES)
            for name, line, length in function_lengths(_tree(path))
            if length > MAX_FUNCTION_LINES]
    assert not long, (f"expected functions of at most {MAX_FUNCTION_LINES} lines (nested "
                      "functions counted inside their parent), given " + "; ".join(long))


def test_function_lengths_count_nested_functions_and_methods():
    tree = ast.parse("def a():\n    def b():\n        pass\n    return b\n\n"
                     "class C:\n    @property\n    def d(self):\n        return 1\n")
    assert list(function_lengths(tree)) == [("a", 1, 4), ("a.b", 2, 2), ("C.d", 8, 2)]


# ---------------------------------------------------------------- schedules by protocol

def schedule_kinds() -> set[str]:
    """The names of the schedule kinds: every class ``simkit.schedule`` exports that subclasses
    its ``AbstractSchedule`` (which itself, asking whether a value is a schedule at all, is not
    a kind)."""
    import simkit.schedule as schedule

    base = schedule.AbstractSchedule
    return {name for name, value in vars(schedule).items()
            if inspect.isclass(value) and issubclass(value, base) and value is not base}


def kind_checks(tree: ast.Module, kinds: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, call)`` of every ``isinstance``/``issubclass`` of a schedule kind in ``tree``,
    whatever name the kind was imported under (``Every``, ``E``, ``schedule.Every``)."""
    aliases = {alias.asname or alias.name: alias.name
               for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names}

    def is_kind(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return aliases.get(node.id, node.id) in kinds
        if isinstance(node, ast.Attribute):
            return node.attr in kinds
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(is_kind(element) for element in node.elts)
        if isinstance(node, ast.BinOp):  # isinstance(x, Every | At)
            return is_kind(node.left) or is_kind(node.right)
        return False

    yield from sorted((node.lineno, ast.unparse(node)) for node in ast.walk(tree)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2
                      and is_kind(node.args[1]))


def test_no_isinstance_on_schedule_kinds_outside_simkit_schedule():
    kinds = schedule_kinds()
    assert {"Every", "When", "AnyOf"} <= kinds  # found by import
    inside = ROOT / "simkit" / "schedule"
    bad = [f"{_where(path, line)}: {call}"
           for path in _sources(*PACKAGES) if inside not in path.parents
           for line, call in kind_checks(_tree(path), kinds)]
    assert not bad, ("expected schedules asked through their protocol (no isinstance on a "
                     "schedule kind outside simkit/schedule), given " + "; ".join(bad))


def test_kind_checks_see_aliases_attributes_and_tuples():
    tree = ast.parse("from simkit.schedule import Every as E\nimport simkit.schedule as s\n"
                     "isinstance(x, E)\nisinstance(x, (int, s.When))\nisinstance(x, int)\n"
                     "issubclass(t, E | s.At)\n")
    assert [line for line, _ in kind_checks(tree, {"Every", "When", "At"})] == [3, 4, 6]


# ---------------------------------------------------------------- netCDF4 behind simkit.io

def netcdf4_imports(tree: ast.Module) -> Iterator[int]:
    """Lines importing ``netCDF4`` (anywhere: at module level or in a function)."""
    return module_imports(tree, "netCDF4")


def module_imports(tree: ast.Module, module: str) -> Iterator[int]:
    """Lines importing ``module`` or one of its submodules (anywhere in ``tree``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name == module or name.startswith(f"{module}.") for name in names):
            yield node.lineno


def test_netcdf4_is_imported_only_under_simkit_io_netcdf():
    io = ROOT / "simkit" / "io"
    bad = [f"{_where(path, line)}: import netCDF4"
           for path in _sources(*PACKAGES)
           if not (io in path.parents and path.relative_to(io).parts[0].startswith("netcdf"))
           for line in netcdf4_imports(_tree(path))]
    assert not bad, ("expected netCDF4 imported only in simkit/io/netcdf*, given "
                     + "; ".join(bad))


#: xarray's own readers and writers of NetCDF and Zarr stores: run files go through simkit.io's
#: readers.
XARRAY_FILE_CALLS = frozenset({"open_dataset", "open_datatree", "open_mfdataset",
                               "load_dataset", "load_datatree", "open_dataarray", "to_netcdf",
                               "open_zarr", "to_zarr"})


def xarray_file_calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, name)`` of every call of xarray's NetCDF readers or writer in ``tree`` (as a
    method, ``xr.open_dataset(...)``, ``ds.to_netcdf(...)``, or a name imported from xarray)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (func.attr if isinstance(func, ast.Attribute)
                else func.id if isinstance(func, ast.Name) else None)
        if name in XARRAY_FILE_CALLS:
            yield node.lineno, name


def test_xarray_reads_and_writes_files_only_under_simkit_io_netcdf():
    """Run files are read through ``simkit.io``'s readers (whole captures only, checksums
    checked) and written through its writers; the user-facing ``simkit.open`` is
    ``simkit.io.read_live``, so it needs no exception."""
    io = ROOT / "simkit" / "io"
    bad = [f"{_where(path, line)}: {name}("
           for path in _sources("simkit")
           if not (io in path.parents
                   and path.relative_to(io).parts[0].startswith(("netcdf", "zarr")))
           for line, name in xarray_file_calls(_tree(path))]
    assert not bad, ("expected run files read and written through simkit.io (xarray's "
                     "open_dataset, open_datatree, open_mfdataset, to_netcdf, open_zarr and "
                     "to_zarr only in simkit/io/netcdf* and simkit/io/zarr*), given "
                     + "; ".join(bad))


def test_icechunk_and_zarr_are_imported_only_under_simkit_io_zarr():
    io = ROOT / "simkit" / "io"
    bad = [f"{_where(path, line)}: import {name}"
           for path in _sources(*PACKAGES)
           if not (io in path.parents and path.relative_to(io).parts[0].startswith("zarr"))
           for name in ("icechunk", "zarr")
           for line in module_imports(_tree(path), name)]
    assert not bad, ("expected icechunk and zarr imported only in simkit/io/zarr*, given "
                     + "; ".join(bad))


def test_xarray_file_calls_are_found_as_methods_and_imported_names():
    tree = ast.parse("import xarray as xr\nfrom xarray import open_datatree\n"
                     "xr.open_dataset(p)\nds.to_netcdf(p)\nopen_datatree(p)\nxr.concat(x)\n"
                     "xr.open_mfdataset(p, group='s')\n")
    assert list(xarray_file_calls(tree)) == [(3, "open_dataset"), (4, "to_netcdf"),
                                             (5, "open_datatree"), (7, "open_mfdataset")]


# ---------------------------------------------------------------- tests by behaviour

def test_tests_are_named_by_behaviour():
    files = [f"{_where(path)}: file" for path in sorted(TESTS.glob("test_fix_*.py"))]
    functions = [f"{_where(path, node.lineno)}: {node.name}"
                 for path in sorted(TESTS.glob("*.py"))
                 for node in ast.walk(_tree(path))
                 if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.name.startswith("test_fix"))
                 or (isinstance(node, ast.ClassDef) and node.name.startswith("TestFix"))]
    bad = files + functions
    assert not bad, ("expected tests named by behaviour and module (no tests/test_fix_*.py, no "
                     "test_fix_* functions or TestFix* classes), given " + "; ".join(bad))


def test_no_test_calls_importorskip():
    """A test needing a library takes it from ``conftest.require_backend`` (which fails where CI
    requires it); ``pytest.importorskip`` would skip it silently."""
    bad = [f"{_where(path, line)}: {call}({argument})"
           for path in sorted(TESTS.glob("*.py"))
           for line, call, argument in _importorskips(path) if call == "importorskip"]
    assert not bad, ("expected require_backend(NAME) from conftest, never importorskip, given "
                     + "; ".join(bad))


# ---------------------------------------------------------------- import cycles

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not those in functions or classes, nor
    under ``if TYPE_CHECKING:``."""
    def walk(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                              node.finalbody):
                    yield from walk(block)
            elif isinstance(node, ast.With):
                yield from walk(node.body)

    yield from walk(tree.body)


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``module -> {imported module: line}`` of the module-level imports among ``modules``: ``from
    a import b`` is an import of the module ``a.b`` where there is one, else of ``a``."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in _top_level_imports(_tree(path)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` that hold a cycle (Tarjan), each from its
    smallest module name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One cycle through the first module of ``component``, as ``module:line -> ...``."""
    members, start = set(component), component[0]
    path, seen = [start], {start}
    while True:
        here = path[-1]
        following = sorted(t for t in graph[here] if t in members)
        nxt = start if start in following else next((t for t in following if t not in seen),
                                                     following[0])
        path.append(nxt)
        if nxt == start or nxt in seen:
            return path
        seen.add(nxt)


def test_simkit_modules_import_no_cycle():
    modules = {_module_name(path): path for path in _sources("simkit")}
    graph = import_graph(modules)
    bad = []
    for component in import_cycles(graph):
        path = _cycle_path(graph, component)
        steps = [f"{_where(modules[a], graph[a][b])} imports {b}" for a, b in zip(path, path[1:], strict=False)]
        bad.append(" -> ".join(steps))
    assert not bad, ("expected no import cycle among simkit's modules (module-level imports, "
                     "not those in functions or under TYPE_CHECKING), given " + "; ".join(bad))


def test_import_cycles_are_found_and_type_checking_imports_left_out(tmp_path):
    (tmp_path / "p").mkdir()
    files = {"p/__init__.py": "from p.a import x\n",
             "p/a.py": "from typing import TYPE_CHECKING\nfrom . import b\n"
                       "if TYPE_CHECKING:\n    from p import c\nx = 1\n",
             "p/b.py": "import p.a\ndef f():\n    import p.c\n",
             "p/c.py": "from p import a\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    modules = {name[:-3].replace("/", ".").removesuffix(".__init__"): tmp_path / name
               for name in files}
    graph = import_graph(modules)
    assert graph == {"p": {"p.a": 1}, "p.a": {"p.b": 2}, "p.b": {"p.a": 1}, "p.c": {"p.a": 1}}
    assert import_cycles(graph) == [["p.a", "p.b"]]
