"""The import rules of ``docs/architecture.md`` ("Packages and the import rule"), checked on the source.

Every ``.py`` file of our packages is parsed with :mod:`ast`; nothing is imported, so a rule that
a module must not load torch is tested without loading it. An import is *module level* when it runs
as the module is imported: anywhere but inside a function (class bodies, ``try`` blocks and
``if TYPE_CHECKING:`` blocks count — a type-only import is still a dependency of the design, and
the ``nn.attention`` ↔ ``nn.layout`` circle used to hide behind one). Rules that say "anywhere"
also count imports inside functions.

The rules:

1. ``runtime/`` never imports torch at module level, directly or through our modules it imports at
   module level; only the optional torch backend (``runtime/torch_backend.py``,
   ``runtime/profile_torch.py``) does, and no other runtime module imports those two at module level;
2. ``trt_plugins/`` imports nothing of ours, anywhere in the file;
3. ``gtcompress.models`` and ``gtcompress.nn`` import nothing from ``gtcompress.compress``, anywhere;
4. ``gtcompress/preprocess/`` imports at module level neither torch nor any of ``gtcompress`` but
   ``gtcompress.preprocess`` and ``gtcompress.errors`` (it runs per request in torch-free images);
5. nothing imports ``cli``, except ``cli`` itself (and tests, which are not scanned);
6. no import cycle among the modules of ``gtcompress`` counting module-level imports; and the lazy
   re-export tables (``_LAZY``) close none either when counted as eager imports, so laziness there
   is for import cost only, never to dodge a loop;
7. the order of ``gtcompress``'s modules that the page writes out names every one of them, and no
   module-level import points to a module later in it; the package table has a row per package.

Each failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("gtcompress", "exporters", "runtime", "cli", "bench", "trt_plugins")
#: The optional torch backend of the runtime: imported lazily by the rest of ``runtime``.
TORCH_BACKEND = frozenset({"runtime.torch_backend", "runtime.profile_torch"})
#: What ``gtcompress.preprocess`` may import of ``gtcompress`` at module level (it imports only
#: ``gtcompress.preprocess`` today; ``gtcompress.errors`` is torch-free and allowed for its exceptions).
PREPROCESS_MAY_IMPORT = ("gtcompress.preprocess", "gtcompress.errors")


@dataclass(frozen=True)
class Import:
    """One ``import`` / ``from … import`` statement of one file."""

    file: str  # path relative to the repository root
    line: int
    text: str  # the statement, as ast.unparse writes it
    importer: str  # dotted name of the importing module
    targets: tuple[str, ...]  # absolute modules it names: ``from a import b`` gives ``a`` and ``a.b`` if a module
    module_level: bool  # runs when the importing module is imported (not inside a function)

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _is_torch(module: str) -> bool:
    """torch itself, or a ``torch_*`` distribution (torch_pruning, torch_geometric: they import it)."""
    top = module.split(".")[0]
    return top == "torch" or top.startswith("torch_")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import under ``node`` with whether it runs at import time of the module."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, not in_function
        nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, nested)


@dataclass
class Repo:
    """The modules of our packages under ``root``, their imports and their lazy re-export tables."""

    root: Path
    modules: dict[str, Path]  # dotted name -> file
    imports: list[Import]
    lazy: dict[str, list[tuple[str, int]]]  # module -> modules named by its ``_LAZY`` table, with the line


def scan(root: Path) -> Repo:
    files = sorted(p for pkg in OURS if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py"))
    modules = {_module_name(root, p): p for p in files}
    imports: list[Import] = []
    lazy: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        rel = path.relative_to(root).as_posix()
        for node, module_level in _walk(tree):
            if isinstance(node, ast.Import):
                targets = tuple(alias.name for alias in node.names)
            else:
                if node.level:  # relative: level 1 is the importer's package
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                subs = (f"{source}.{alias.name}" for alias in node.names)
                targets = (source, *(s for s in subs if s in modules))
            imports.append(Import(rel, node.lineno, ast.unparse(node), name, targets, module_level))
        lazy[name] = _lazy_table(tree, package)
    return Repo(root, modules, imports, lazy)


def _lazy_table(tree: ast.Module, package: str) -> list[tuple[str, int]]:
    """Modules named by a top-level ``_LAZY = {name: module}`` table (absolute, or relative to the package)."""
    out = []
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    mod = value.value
                    absolute = mod.split(".")[0] in OURS
                    out.append((mod if absolute else f"{package}.{mod}", value.lineno))
    return out


@cache
def _repo() -> Repo:
    return scan(ROOT)


# --------------------------------------------------------------------------------------------- rules
def runtime_torch_violations(repo: Repo) -> list[str]:
    """Rule 1, direct imports and what our module-level imports drag in."""
    out = []
    by_module: dict[str, list[Import]] = {}
    for imp in repo.imports:
        if imp.module_level:
            by_module.setdefault(imp.importer, []).append(imp)
    for imp in repo.imports:
        if not _is_within(imp.importer, "runtime") or imp.importer in TORCH_BACKEND or not imp.module_level:
            continue
        for t in imp.targets:
            if _is_torch(t):
                out.append(f"{imp.where()}  (runtime imports torch at module level; import it inside a function)")
            elif t in TORCH_BACKEND:
                out.append(f"{imp.where()}  ({t} is the optional torch backend: import it lazily)")
    # Transitively: our modules that runtime imports at module level must not import torch there either.
    reached: dict[str, str] = {}  # one message per torch import, with the first chain found
    for start in sorted(m for m in repo.modules if _is_within(m, "runtime") and m not in TORCH_BACKEND):
        chain = _reaches_torch(repo, by_module, start)
        if chain is not None:
            path, imp = chain
            reached.setdefault(imp.where(), f"{imp.where()}  (torch reached at module level from {' -> '.join(path)})")
    return out + sorted(reached.values())


def _reaches_torch(repo: Repo, by_module: dict[str, list[Import]], start: str) -> tuple[list[str], Import] | None:
    """The first module-level torch import reachable from ``start`` through our modules (BFS, the path)."""
    seen, queue = {start}, [[start]]
    while queue:
        path = queue.pop(0)
        for imp in by_module.get(path[-1], []):
            if path[-1] != start and any(_is_torch(t) for t in imp.targets):
                return path, imp
            for nxt in _loaded_modules(repo, imp):
                if nxt not in seen and nxt not in TORCH_BACKEND:  # rule 1 reports importing those directly
                    seen.add(nxt)
                    queue.append([*path, nxt])
    return None


def _loaded_modules(repo: Repo, imp: Import) -> list[str]:
    """Our modules an import runs: each target and the packages above it, except those of the importer
    (they are already being imported when it runs)."""
    out = []
    for t in imp.targets:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in repo.modules and not _is_within(imp.importer, mod) and mod not in out:
                out.append(mod)
    return out


def trt_plugins_violations(repo: Repo) -> list[str]:
    """Rule 2."""
    ours = [p for p in OURS if p != "trt_plugins"]
    return [
        f"{imp.where()}  (trt_plugins imports nothing of ours)"
        for imp in repo.imports
        if _is_within(imp.importer, "trt_plugins") and any(_is_within(t, p) for t in imp.targets for p in ours)
    ]


def models_nn_violations(repo: Repo) -> list[str]:
    """Rule 3."""
    return [
        f"{imp.where()}  (models and nn never import compression; move what a model needs to gtcompress.nn)"
        for imp in repo.imports
        if (_is_within(imp.importer, "gtcompress.models") or _is_within(imp.importer, "gtcompress.nn"))
        and any(_is_within(t, "gtcompress.compress") for t in imp.targets)
    ]


def preprocess_violations(repo: Repo) -> list[str]:
    """Rule 4."""
    out = []
    for imp in repo.imports:
        if not _is_within(imp.importer, "gtcompress.preprocess") or not imp.module_level:
            continue
        for t in imp.targets:
            if _is_torch(t):
                out.append(f"{imp.where()}  (gtcompress.preprocess runs without torch)")
            elif _is_within(t, "gtcompress") and not any(_is_within(t, ok) for ok in PREPROCESS_MAY_IMPORT):
                out.append(f"{imp.where()}  (gtcompress.preprocess imports only {', '.join(PREPROCESS_MAY_IMPORT)})")
    return out


def cli_violations(repo: Repo) -> list[str]:
    """Rule 5."""
    return [
        f"{imp.where()}  (nothing imports cli)"
        for imp in repo.imports
        if not _is_within(imp.importer, "cli") and any(_is_within(t, "cli") for t in imp.targets)
    ]


def import_graph(repo: Repo, package: str, count_lazy: bool = False) -> dict[str, dict[str, str]]:
    """``graph[a][b]``: where module ``a`` of ``package`` imports module ``b`` of it at module level
    (importing ``x.y.z`` runs ``x.y`` too, unless the importer lies inside it). With ``count_lazy``,
    every ``_LAZY`` table counts as if it imported its modules."""
    graph: dict[str, dict[str, str]] = {m: {} for m in repo.modules if _is_within(m, package)}
    for imp in repo.imports:
        if imp.module_level and imp.importer in graph:
            for mod in _loaded_modules(repo, imp):
                if mod in graph and mod != imp.importer:
                    graph[imp.importer].setdefault(mod, imp.where())
    if count_lazy:
        for importer, table in repo.lazy.items():
            if importer not in graph:
                continue
            rel = repo.modules[importer].relative_to(repo.root).as_posix()
            for mod, line in table:
                if mod in graph and not _is_within(importer, mod):
                    graph[importer].setdefault(mod, f"{rel}:{line}: _LAZY entry {mod!r} (counted as an import)")
    return graph


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle ``[a, b, …, a]`` per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:  # the shortest way back to the component's first module
        members, first = set(comp), comp[0]
        prev: dict[str, str] = {}
        queue = [first]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w == first:
                    path = [v]
                    while path[-1] != first:
                        path.append(prev[path[-1]])
                    cycles.append([first, *reversed(path[:-1]), first] if v != first else [first, first])
                    queue = []
                    break
                if w in members and w not in prev:
                    prev[w] = v
                    queue.append(w)
    return cycles


def cycle_violations(repo: Repo, package: str = "gtcompress", count_lazy: bool = False) -> list[str]:
    """Rule 6."""
    graph = import_graph(repo, package, count_lazy)
    out = []
    for cycle in find_cycles(graph):
        steps = "\n".join(f"    {a} -> {b}: {graph[a][b]}" for a, b in itertools.pairwise(cycle))
        out.append(f"import cycle {cycle}:\n{steps}")
    return out


# --------------------------------------------------------------------------------------------- tests
def _check(violations: list[str]) -> None:
    assert not violations, "\n" + "\n".join(violations)


def test_the_scan_sees_our_packages() -> None:
    repo = _repo()
    assert {"gtcompress.nn.attention", "runtime.session", "trt_plugins.kernels", "cli.main"} <= set(repo.modules)
    assert any(imp.targets == ("torch",) for imp in repo.imports)


def test_runtime_imports_torch_only_in_its_torch_backend() -> None:
    _check(runtime_torch_violations(_repo()))


def test_trt_plugins_import_nothing_of_ours() -> None:
    _check(trt_plugins_violations(_repo()))


def test_models_and_nn_never_import_compress() -> None:
    _check(models_nn_violations(_repo()))


def test_preprocess_is_torch_free_and_self_contained() -> None:
    _check(preprocess_violations(_repo()))


def test_nothing_imports_cli() -> None:
    _check(cli_violations(_repo()))


def test_no_import_cycle_in_gtcompress() -> None:
    _check(cycle_violations(_repo()))


def test_lazy_reexports_are_for_import_cost_not_a_loop() -> None:
    _check(cycle_violations(_repo(), count_lazy=True))


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def documented_order(text: str) -> list[list[str]]:
    """The ranks of architecture.md's "Inside `gtcompress` the order is `a`, `b` → `c` → …:" sentence."""
    start = text.index("Inside `gtcompress` the order is")
    sentence = text[start : text.index(":", start)]
    body = sentence.removeprefix("Inside `gtcompress` the order is").split("(")[0]
    return [[n.strip("` \n") for n in rank.split(",")] for rank in body.split("→")]


def order_violations(repo: Repo, order: list[list[str]]) -> list[str]:
    """Every top-level module of ``gtcompress`` (but ``pipeline``, which has its own row) is named in
    the documented order, and no module-level import points to a later rank."""
    tops = {m.split(".")[1] for m in repo.modules if m.startswith("gtcompress.")} - {"pipeline"}
    rank = {name: i for i, names in enumerate(order) for name in names}
    out = [f"gtcompress.{t} is missing from docs/architecture.md's order" for t in sorted(tops - set(rank))]
    out += [f"docs/architecture.md names gtcompress.{n}, which does not exist" for n in sorted(set(rank) - tops)]
    for imp in repo.imports:
        parts = imp.importer.split(".")
        if parts[0] != "gtcompress" or len(parts) < 2 or not imp.module_level or parts[1] not in rank:
            continue
        for t in imp.targets:
            tp = t.split(".")
            if tp[0] == "gtcompress" and len(tp) > 1 and tp[1] in rank and rank[tp[1]] > rank[parts[1]]:
                out.append(f"{imp.where()}  (gtcompress.{parts[1]} imports gtcompress.{tp[1]}, later in the order)")
    return out


def test_the_documented_order_names_every_module_and_holds() -> None:
    """architecture.md's order of ``gtcompress`` lacked ``checkpoint_data``, which ``checkpoint`` imports."""
    order = documented_order(ARCHITECTURE.read_text(encoding="utf-8"))
    assert order[0] == ["errors", "io", "machine"] and order[-1] == ["compress"]
    _check(order_violations(_repo(), order))


def test_the_package_table_names_every_package() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    packages = (*OURS, "gtcompress/preprocess", "gtcompress/pipeline")
    missing = [pkg for pkg in packages if f"| `{pkg}/` |" not in text]
    assert not missing, f"docs/architecture.md's package table lacks {missing}"


# ---------------------------------------------------------------------------- the checker, on a fake tree
FAKE = {
    "runtime/__init__.py": "",
    "runtime/session.py": "import torch\nfrom runtime.torch_backend import X\nfrom runtime import helper\n",
    "runtime/helper.py": "from gtcompress.heavy import Y\n",
    "runtime/torch_backend.py": "import torch\n",
    "trt_plugins/__init__.py": "",
    "trt_plugins/k.py": "def f():\n    from exporters import onnx\n",
    "gtcompress/__init__.py": "",
    "gtcompress/heavy.py": "import torch\n",
    "gtcompress/nn/__init__.py": "",
    "gtcompress/nn/a.py": "from . import b\n",
    "gtcompress/nn/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gtcompress.nn.a import A\n",
    "gtcompress/nn/c.py": "def g():\n    from gtcompress.compress import tokens\n",
    "gtcompress/compress/__init__.py": "_LAZY = {'M': 'mat'}\n",
    "gtcompress/compress/mat.py": "import gtcompress.other\n",
    "gtcompress/other.py": "from gtcompress.compress import M\n",
    "gtcompress/preprocess/__init__.py": "",
    "gtcompress/preprocess/p.py": "from gtcompress.errors import E\nfrom gtcompress.graph import G\n",
    "exporters/__init__.py": "",
    "exporters/x.py": "def h():\n    import cli.main\n",
}


@pytest.fixture
def fake(tmp_path: Path) -> Repo:
    for rel, text in FAKE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return scan(tmp_path)


def test_each_rule_names_the_file_the_line_and_the_import(fake: Repo) -> None:
    runtime = runtime_torch_violations(fake)
    assert any(v.startswith("runtime/session.py:1: import torch ") for v in runtime)
    assert any(v.startswith("runtime/session.py:2: from runtime.torch_backend import X ") for v in runtime)
    assert any(
        v.startswith("gtcompress/heavy.py:1: import torch ") and "runtime.helper -> gtcompress.heavy" in v
        for v in runtime
    )
    assert not any(v.startswith("runtime/torch_backend.py") for v in runtime)
    assert trt_plugins_violations(fake) == [
        "trt_plugins/k.py:2: from exporters import onnx  (trt_plugins imports nothing of ours)"
    ]
    assert [v.split("  (")[0] for v in models_nn_violations(fake)] == [
        "gtcompress/nn/c.py:2: from gtcompress.compress import tokens"
    ]
    assert [v.split("  (")[0] for v in preprocess_violations(fake)] == [
        "gtcompress/preprocess/p.py:2: from gtcompress.graph import G"
    ]
    assert [v.split("  (")[0] for v in cli_violations(fake)] == ["exporters/x.py:2: import cli.main"]
    (cycle,) = cycle_violations(fake)
    assert cycle.startswith("import cycle ['gtcompress.nn.a', 'gtcompress.nn.b', 'gtcompress.nn.a']")
    assert "gtcompress/nn/b.py:3: from gtcompress.nn.a import A" in cycle
    assert "gtcompress/nn/a.py:1: from . import b" in cycle
    (lazy,) = (v for v in cycle_violations(fake, count_lazy=True) if v not in cycle_violations(fake))
    assert lazy.startswith("import cycle ['gtcompress.compress', 'gtcompress.compress.mat', 'gtcompress.other',")
    assert "gtcompress/compress/__init__.py:1: _LAZY entry 'gtcompress.compress.mat' (counted as an import)" in lazy
