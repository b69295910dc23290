"""The house rules that keep edgepack easy to change.

Layers point down only (the table below), no import cycles, no private names across modules,
small device modules. Every import counts as an arrow: module top, inside a function, and
annotation-only ones under ``if TYPE_CHECKING:`` alike.

``python tests/test_layout.py [PACKAGE_DIR]`` prints the counts these tests hold at zero.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgepack"

# Layers, top first. A module belongs to the group named by its first part below edgepack
# (`edgepack.device.ssh.jump` -> `device`; the package's own __init__ is `edgepack`). A group
# imports groups of lower layers only; inside a group anything goes (cycles are checked apart).
LAYERS: list[dict[str, str]] = [
    {"__main__": "python -m edgepack"},
    {"cli": "the command line: parse, call one library function, render"},
    {
        "edgepack": "the public API, bound lazily",
        "benchmark": "push -> run the agent -> parse -> store",
        "deployment": "targets x devices: cached builds, benches",
        "tuning": "a loop around build and bench (it calls benchmark.bench), as deployment is",
    },
    {
        "builder": "profile + model -> bundle",
        "device": "transports, inventory, fleets",
        "results": "the history, comparisons, reports",
        "micro": "TFLite Micro: fit, arena, C source",
    },
    {
        "bundle": "the bundle and its typed manifest",
        "profile": "target profiles",
        "model": "model sources and data",
        "agent": "the agent's report schema (host side) and the agent",
        "runtime": "the loader shipped inside bundles",
    },
    {
        "atomic": "atomic writes",
        "limits": "size and time limits",
        "quiet": "silencing noisy libraries",
        "yamlfile": "the one YAML loader",
        "examples": "the digits example",
        "markup": "escaping text for rich",
    },
    {
        "errors": "EdgepackError and its subclasses",
        "_version": "__version__",
        "ondevice": "what runs on the device: imports nothing of the host side",
    },
]

# Arrows between groups of one layer, each with its reason. Never both directions.
SIDEWAYS: dict[tuple[str, str], str] = {
    ("deployment", "benchmark"): "a deployment benches each bundle it builds",
    ("tuning", "benchmark"): "each trial is benched on the device",
    ("builder", "micro"): "the tflite-micro format fits, places and writes the model with micro/",
    ("bundle", "profile"): "the manifest carries the resolved profile",
    ("model", "bundle"): "model sources are hashed with bundle.sha256_file",
    ("examples", "quiet"): "training the example silences TensorFlow's chatter",
}
# Arrows refused on purpose, with what to do instead (shown when one appears).
REFUSED: dict[tuple[str, str], str] = {
    ("micro", "builder"): "builder/convert/micro.py uses micro/, so micro/ may not use builder/: "
    "micro/host.py's TfliteRunner (builder/convert/tflite.py) belongs in a module below both",
}

LEVEL = {group: depth for depth, layer in enumerate(LAYERS) for group in layer}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """Every edgepack module NAME imports (in functions and TYPE_CHECKING blocks too), and the private names it takes."""
    edges, private = set(), []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges.update(filter(None, (owner(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                edges.add(owner(full if full in known else base))
                if base.startswith("edgepack") and alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.append(f"{name} imports {base}.{alias.name}")
    edges.discard(None)
    edges.discard(name)
    return edges, private


def graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    known = modules(package)
    edges, private = {}, []
    for name, path in known.items():
        edges[name], taken = imports(name, path, known)
        private += taken
    return edges, private


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import that does not point down the table, as 'a -> b (why)'."""
    wrong = []
    for module, targets in sorted(edges.items()):
        a = group(module)
        for target in sorted(targets):
            b = group(target)
            if a == b:
                continue
            if a not in LEVEL or b not in LEVEL:
                wrong.append(f"{module} -> {target} ({a if a not in LEVEL else b}/ has no layer in LAYERS)")
            elif LEVEL[b] < LEVEL[a] or (LEVEL[b] == LEVEL[a] and (a, b) not in SIDEWAYS):
                wrong.append(f"{module} -> {target} ({REFUSED.get((a, b), f'{a} may not import {b}')})")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_even_counting_annotation_only_imports():
    edges, _ = graph()
    assert cycles(edges) == []


def test_no_private_names_across_modules():
    assert graph()[1] == []


def test_layers_point_down_only():
    wrong = upward(graph()[0])
    assert not wrong, "imports against the layer table in tests/test_layout.py:\n  " + "\n  ".join(wrong)


def test_the_layer_table_has_no_sideways_pair_both_ways():
    assert not [(a, b) for a, b in SIDEWAYS if (b, a) in SIDEWAYS]
    assert all(LEVEL[a] == LEVEL[b] for a, b in SIDEWAYS)


def test_nothing_outside_cli_imports_cli():
    edges, _ = graph()
    assert not [
        f"{m} -> {t}" for m, ts in edges.items() for t in ts if group(t) == "cli" and group(m) not in ("cli", "__main__")
    ]


def test_ssh_subpackage_is_used_through_its_front():
    edges, _ = graph()
    inner = [
        f"{m} -> {t}" for m, ts in edges.items() for t in ts
        if t.startswith("edgepack.device.ssh.") and not m.startswith("edgepack.device.ssh")
    ]
    assert inner == []


def test_device_modules_stay_small():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in (PACKAGE / "device").rglob("*.py")}
    assert max(sizes.values()) < 400, sizes


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    edges, private = graph(root)
    found, wrong = cycles(edges), upward(edges)
    mine = ("device", "results", "cli", "benchmark.py", "deployment.py")
    long = sorted(
        (n, p.relative_to(root).as_posix()) for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    )
    print(f"cycles (annotation-only imports counted): {len(found)}")
    for c in found:
        print("   ", " ".join(c))
    print(f"imports against the layer table: {len(wrong)}")
    for w in wrong:
        print("   ", w)
    print(f"private names across modules: {len(private)}")
    for p in private:
        print("   ", p)
    print(f"modules over 400 lines: {len(long)} ({sum(1 for _, p in long if p.startswith(mine))} in device/, results/, cli/, benchmark, deployment)")
    for n, p in long:
        print(f"    {n} {p}")
