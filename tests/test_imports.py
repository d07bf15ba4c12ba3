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


def members(cls: type) -> set[str]:
    """What a class defines or its instances get: the names of its body (and its bases'),
    and every `self.NAME = ...` of its methods (read from its source)."""
    import inspect
    import textwrap

    names = set()
    for klass in cls.__mro__[:-1]:  # (object's are no stream's)
        names |= set(vars(klass))
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            for target in targets:
                if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self":
                    names.add(target.attr)
    return names


def protocol_members(protocol: type) -> set[str]:
    """A Protocol's members: its annotated attributes and its methods, its bases' too."""
    names = set()
    for klass in protocol.__mro__:
        if klass.__dict__.get("_is_protocol") and klass.__name__ not in ("Protocol", "Generic"):
            names |= set(klass.__dict__.get("__annotations__", {}))
            names |= {
                n for n, v in vars(klass).items() if callable(v) or isinstance(v, staticmethod)
            }
    return {n for n in names if not n.startswith("_")}


def test_every_stream_kind_has_what_the_scheduler_and_connection_ask():
    """The declared interfaces, checked: every kind of stream (an upload, each dialect) has
    every member of scheduler.Stream, and each dialect every member of connection.Dialect."""
    from voxtral_mlx.serve.connection import Dialect
    from voxtral_mlx.serve.mistral import MistralDialect
    from voxtral_mlx.serve.openai import OpenAIDialect
    from voxtral_mlx.serve.scheduler import Stream
    from voxtral_mlx.serve.uploads import Upload
    from voxtral_mlx.serve.vllm import VllmDialect

    stream, dialect = protocol_members(Stream), protocol_members(Dialect)
    assert {"live", "session", "intake", "deliver", "failed"} <= stream < dialect
    assert {"speaks", "refusal", "start", "handle", "room", "busy", "undecided"} <= dialect
    assert not stream - members(Upload), stream - members(Upload)
    for kind in (VllmDialect, OpenAIDialect, MistralDialect):
        assert not dialect - members(kind), (kind.__name__, dialect - members(kind))
