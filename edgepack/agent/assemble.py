"""Assemble the one-file programs that run on devices from the modules of edgepack/ondevice/.

The device side is written as a package (small modules importing each other relatively) and
shipped as single files: the agent pushed to a device (`edgepack_agent.py`, run as
``python edgepack_agent.py BUNDLE``) and the loader copied into every bundle (`edgepack_runtime.py`,
imported by apps as ``import edgepack_runtime``). One plain .py file rather than a zipapp, because
the loader must import from the bundle directory on Python 3.8+ exactly as before, and the agent's
name, its push (sha256, hash-skip) and its probes (which run ``python <this file>``) stay as they
were.

The file is the entry module's closure under relative imports, in dependency order, with those
imports and each module's docstring removed: the same sources give the same bytes (no time stamp,
fixed order), so its sha256 is stable and a second push sends nothing. Two modules of one closure
that define the same top-level name are refused, since one would silently replace the other.
"""

from __future__ import annotations

import ast
import atexit
import shutil
import tempfile
import threading
from pathlib import Path

ONDEVICE = Path(__file__).resolve().parent.parent / "ondevice"
AGENT_NAME = "edgepack_agent.py"
LOADER_NAME = "edgepack_runtime.py"
ENTRIES = {AGENT_NAME: "cli", LOADER_NAME: "loader"}

_written: dict = {}
_lock = threading.Lock()


class AssemblyError(RuntimeError):
    """The ondevice modules cannot be joined into one file (a name defined twice, an import cycle)."""


def _relative_imports(tree: ast.Module) -> list:
    return [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1]


def closure(entry: str) -> list:
    """The modules ENTRY needs, itself last, each after the modules it imports."""
    order, visiting = [], []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise AssemblyError("ondevice modules import each other in a cycle: %s" % " -> ".join(visiting + [name]))
        visiting.append(name)
        tree = ast.parse((ONDEVICE / f"{name}.py").read_text(encoding="utf-8"))
        for node in _relative_imports(tree):
            visit(node.module)
        visiting.pop()
        order.append(name)

    visit(entry)
    return order


def _defined(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def assemble(entry: str) -> bytes:
    """Join ENTRY's closure into one Python source file; return its bytes (the same for the same sources)."""
    modules = closure(entry)
    entry_doc = ast.get_docstring(ast.parse((ONDEVICE / f"{entry}.py").read_text(encoding="utf-8")), clean=False)
    parts = ['"""%s"""' % entry_doc if entry_doc else "",
             "# Assembled by edgepack from edgepack/ondevice/: %s. Edit those modules, not this file."
             % ", ".join(f"{m}.py" for m in modules),
             "from __future__ import annotations"]
    owners: dict = {}
    for name in modules:
        text = (ONDEVICE / f"{name}.py").read_text(encoding="utf-8")
        tree = ast.parse(text)
        for symbol in _defined(tree):
            if symbol in owners:
                raise AssemblyError(f"{symbol} is defined in both ondevice/{owners[symbol]}.py and ondevice/{name}.py")
            owners[symbol] = name
        drop = set()
        for node in tree.body:
            docstring = node is tree.body[0] and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            if docstring or future or (isinstance(node, ast.ImportFrom) and node.level == 1):
                drop.update(range(node.lineno, node.end_lineno + 1))
        lines = [line for k, line in enumerate(text.splitlines(), 1) if k not in drop]
        parts.append(f"# ---------------------------------------------------------------- ondevice/{name}.py\n"
                     + "\n".join(lines).strip("\n"))
    return ("\n\n\n".join(p for p in parts if p) + "\n").encode("utf-8")


def assembled_file(name: str) -> Path:
    """The assembled NAME (AGENT_NAME or LOADER_NAME), written once per process to a private temporary directory."""
    with _lock:
        path = _written.get(name)
        if path is None or not path.is_file():
            data = assemble(ENTRIES[name])
            folder = Path(tempfile.mkdtemp(prefix="edgepack-ondevice-"))
            atexit.register(shutil.rmtree, folder, True)
            path = folder / name
            path.write_bytes(data)
            _written[name] = path
        return path


def agent_file() -> Path:
    """The agent to push: ``edgepack_agent.py`` assembled from edgepack/ondevice/."""
    return assembled_file(AGENT_NAME)


def loader_file() -> Path:
    """The loader for bundles: ``edgepack_runtime.py`` assembled from edgepack/ondevice/."""
    return assembled_file(LOADER_NAME)

