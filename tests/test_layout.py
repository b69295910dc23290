"""The house rules that keep edgepack easy to change: no import cycles, no private names across modules, small device modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgepack"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """Every edgepack module NAME imports (function-level imports too, TYPE_CHECKING blocks not), and the private names it takes."""
    edges, private = set(), []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                edges.update(filter(None, (owner(a.name) for a in child.names)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    edges.add(owner(full if full in known else base))
                    if base.startswith("edgepack") and alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{name} imports {base}.{alias.name}")
            walk(child)

    walk(ast.parse(path.read_text()))
    edges.discard(None)
    edges.discard(name)
    return edges, private


def test_no_import_cycles_and_no_private_names_across_modules():
    known = modules()
    graph, private = {}, []
    for name, path in known.items():
        graph[name], taken = imports(name, path, known)
        private += taken
    assert private == []
    # Depth-first search for a cycle; report the first one found.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


def test_device_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "device").glob("*.py")}
    assert max(sizes.values()) < 400, sizes
