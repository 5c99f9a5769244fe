"""Import rules of the layout (ARCHITECTURE.md), checked on the source with ``ast``.

- ``services/`` (``vlmguard``) never imports the training distribution (``vlmguard_training``).
- The ground layer (domain, errors, config, logs, metrics, tracing, imaging) imports nothing
  above it.
- ``vlmguard.queue`` imports only the ground layer and itself.
- The request-path stages (``analyzer``, ``policy``, ``rewriter``, ``target``, ``pipeline``,
  ``stages``) import no gRPC, Ray or Triton client at module level.
- ``vlmguard.rewriter`` and ``vlmguard.target`` do not import each other.
- No import cycles between modules (function-level imports count too: a cycle hidden in a
  function is still two modules that cannot be understood apart).
- No private name (``_x``) is imported from another package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"vlmguard": ROOT / "services" / "vlmguard",
           "vlmguard_training": ROOT / "training" / "vlmguard_training"}
GROUND = {"vlmguard.domain", "vlmguard.errors", "vlmguard.config", "vlmguard.logs",
          "vlmguard.tracing",
          "vlmguard.metrics", "vlmguard.imaging"}
STAGE_PREFIXES = ("vlmguard.analyzer", "vlmguard.policy", "vlmguard.rewriter",
                  "vlmguard.target", "vlmguard.pipeline", "vlmguard.stages")
HOSTING_CLIENTS = ("grpc", "grpc_health", "grpc_reflection", "ray", "tritonclient")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of ours when it is one)
    names: tuple[str, ...]
    top_level: bool
    line: int


def _module_name(path: Path, package: str) -> str:
    rel = path.relative_to(SOURCES[package]).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root)
            if rel.parts[0] == "v1" or "target_vlm" in rel.parts:  # generated / Triton's own
                continue
            found[_module_name(path, package)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is one of our modules (else ``name``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return name


def _imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            is_top = id(node) in top
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, _resolve(alias.name), (), is_top, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if path.name != "__init__.py":
                        base = base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    name = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    name = node.module or ""
                names = tuple(a.name for a in node.names)
                # `from pkg import module` imports the module itself
                subs = [f"{name}.{n}" for n in names if f"{name}.{n}" in MODULES]
                for sub in subs:
                    yield Import(module, sub, (), is_top, node.lineno)
                rest = tuple(n for n in names if f"{name}.{n}" not in MODULES)
                if rest or not subs:
                    yield Import(module, _resolve(name), rest, is_top, node.lineno)


IMPORTS = list(_imports())


def _fmt(i: Import) -> str:
    return f"{i.source}:{i.line} imports {i.target}"


def _ours(i: Import) -> bool:
    return i.target in MODULES


def test_the_checker_sees_the_packages() -> None:
    assert "vlmguard.pipeline" in MODULES and "vlmguard_training.cli" in MODULES
    assert any(i.target == "vlmguard.domain" for i in IMPORTS)


def test_serving_never_imports_training() -> None:
    bad = [_fmt(i) for i in IMPORTS if i.source.startswith("vlmguard.")
           and i.target.split(".")[0] == "vlmguard_training"]
    assert not bad, bad


def test_ground_layer_imports_nothing_above_it() -> None:
    bad = [_fmt(i) for i in IMPORTS if i.source in GROUND and _ours(i)
           and i.target not in GROUND]
    assert not bad, bad


def test_queue_imports_only_the_ground_layer() -> None:
    bad = [_fmt(i) for i in IMPORTS if i.source.startswith("vlmguard.queue") and _ours(i)
           and i.target not in GROUND and not i.target.startswith("vlmguard.queue")]
    assert not bad, bad


def test_stages_import_no_hosting_client_at_module_level() -> None:
    bad = [_fmt(i) for i in IMPORTS if i.top_level
           and any(i.source == p or i.source.startswith(p + ".") for p in STAGE_PREFIXES)
           and i.target.split(".")[0] in HOSTING_CLIENTS]
    assert not bad, bad


def test_rewriter_and_target_do_not_import_each_other() -> None:
    pairs = (("vlmguard.rewriter", "vlmguard.target"), ("vlmguard.target", "vlmguard.rewriter"))
    bad = [_fmt(i) for i in IMPORTS for a, b in pairs
           if i.source.startswith(a + ".") and (i.target == b or i.target.startswith(b + "."))]
    assert not bad, bad


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if _ours(i) and i.target != i.source:
            graph[i.source].add(i.target)
    # Tarjan's strongly connected components: any component of 2+ modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def _package(module: str) -> str:
    path = MODULES.get(module)
    if path is not None and path.name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def test_no_private_name_is_imported_across_packages() -> None:
    bad = [f"{_fmt(i)} ({', '.join(n for n in i.names if n.startswith('_'))})"
           for i in IMPORTS if _ours(i) and _package(i.source) != _package(i.target)
           and any(n.startswith("_") and not n.startswith("__") for n in i.names)]
    assert not bad, bad
