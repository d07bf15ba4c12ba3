"""The library's imports run one way: read with `ast` (every import statement, those inside
functions and under TYPE_CHECKING too), no module of voxtral_mlx, the serving package's
included, imports a module that imports it back, directly or through others."""

import ast
from pathlib import Path

import voxtral_mlx

PACKAGE = Path(voxtral_mlx.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(package: Path) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of the package it imports."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""
                source = ".".join(p for p in (base, node.module) if p)
                found.add(source)
                found |= {f"{source}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph (its modules in import order, the first repeated), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target, path + [node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start, []):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_serving_package_is_read():
    graph = imports(PACKAGE)
    assert "voxtral_mlx.serve.openai" in graph["voxtral_mlx.serve.realtime"]
    assert "voxtral_mlx.serve.openai.dialect" in graph["voxtral_mlx.serve.openai"]
    assert "voxtral_mlx.serve.connection" in graph["voxtral_mlx.serve.openai.dialect"]
    assert "voxtral_mlx.session" in graph["voxtral_mlx.serve.scheduler"]


def test_no_module_imports_itself_back():
    cycle = find_cycle(imports(PACKAGE))
    assert cycle is None, " -> ".join(cycle)
