"""The package's import graph between files, read with `ast`: cycles and function-local imports.

Every `import` of a keras_alexnet module counts, at the top of a file or inside a function.
`from package import name` is an edge to the submodule when `name` is one, else to the
package's `__init__`; the implicit import of a package's `__init__` before its submodules
is not counted (every package with submodules would be a cycle). Run it to print the
graph's cycles and each function-local import with why it is local:

    python tests/import_graph.py
"""

import ast
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "keras_alexnet"
# Third-party packages the package keeps out of `import keras_alexnet` and of the server:
# a function-local import of a module that loads one of these at its top is lazy on purpose.
HEAVY = (
    "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "torch", "jax", "PIL", "h5py",
    "uvicorn", "h11", "fastapi", "starlette", "prometheus_client", "matplotlib", "safetensors",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement's edge: `source` imports `target`, inside `function` or at the top."""

    source: str
    target: str
    function: str | None
    line: int


def module_name(path):
    """`keras_alexnet/data/sources.py` -> `keras_alexnet.data.sources` (a package: its name)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    """{module name: path} of every file of the package."""
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _imported(node, name, is_package):
    """The dotted names one import statement names (module, or module.attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" for alias in node.names]


def lazy_exports(known):
    """{package.name: module} of the packages whose `__init__` exports names lazily (`API`)."""
    found = {}
    for name, path in known.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = [getattr(t, "id", None) for t in getattr(node, "targets", ())]
            if isinstance(node, ast.Assign) and targets == ["API"]:
                for key, value in ast.literal_eval(node.value).items():
                    found[f"{name}.{key}"] = value.partition(":")[0]
    return found


def _resolve(dotted, known, lazy):
    """The package module a dotted name lives in: a lazy export's module, else the longest
    prefix that is a module."""
    if dotted in lazy:
        return lazy[dotted]
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports():
    """Every edge between the package's modules, with the function it sits in, if any."""
    known = modules()
    lazy = lazy_exports(known)
    edges = set()
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for function, node in _walk(tree, None):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for dotted in _imported(node, name, path.name == "__init__.py"):
                target = _resolve(dotted, known, lazy) if dotted.startswith(PACKAGE) else None
                if target and target != name:
                    edges.add(Import(name, target, function, node.lineno))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def _walk(node, function):
    """(enclosing function name or None, node) for every node under `node`."""
    for child in ast.iter_child_nodes(node):
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else None
        yield function, child
        yield from _walk(child, inner or function)


def cycles(edges):
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def heavy_at_top(edges):
    """{module: the HEAVY packages it imports at its top, directly or through the package}."""
    known = modules()
    direct = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                for dotted in _imported(node, name, False):
                    if dotted.split(".")[0] in HEAVY:
                        direct[name].add(dotted.split(".")[0])
    top = {}
    for edge in edges:
        if edge.function is None:
            top.setdefault(edge.source, set()).add(edge.target)

    def reach(name, seen):
        if name in seen:
            return set()
        seen.add(name)
        found = set(direct.get(name, ()))
        for target in top.get(name, ()):
            found |= reach(target, seen)
        return found

    return {name: reach(name, set()) for name in known}


def why_local(edge, edges, heavy):
    """Why `edge` is function-local: the cycle it would close, or the heavy imports it defers."""
    top = [e for e in edges if e.function is None or e is edge]
    moved = [dataclasses.replace(e, function=None) if e is edge else e for e in top]
    if any(edge.source in group for group in cycles(moved)):
        return f"at the top it would close an import cycle with {edge.target}"
    deferred = heavy[edge.target] - heavy[edge.source]
    if deferred:
        return f"defers {', '.join(sorted(deferred))} until {edge.function}() runs"
    return None


def main():
    """Print the cycles and each function-local import with its reason."""
    edges = imports()
    heavy = heavy_at_top(edges)
    print(f"{len(modules())} modules, {len(edges)} imports between them")
    for group in cycles(edges):
        print("cycle:", " <-> ".join(group))
    for edge in (e for e in edges if e.function):
        reason = why_local(edge, edges, heavy) or "no reason found: could move to the top"
        print(f"{edge.source}:{edge.line} {edge.function}() -> {edge.target}: {reason}")


if __name__ == "__main__":
    main()
