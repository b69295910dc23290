"""The device side as a package: what it may import, the Python it must parse on, and the one files assembled from it."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.agent.assemble import AGENT_NAME, LOADER_NAME, ONDEVICE, AssemblyError, assemble, closure

MODULES = sorted(p.stem for p in ONDEVICE.glob("*.py") if p.stem != "__init__")

# A device: TensorFlow, keras and every host module of edgepack refuse to import; edgepack.ondevice is there.
BLOCKED = """
import importlib, importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        host = name.startswith("edgepack.") and not (name == "edgepack.ondevice" or name.startswith("edgepack.ondevice."))
        if top in ("tensorflow", "keras", "tf_keras") or host:
            raise ImportError("not on this device: " + name)
        return None
sys.meta_path.insert(0, Refuse())
# edgepack's own __init__ is host code too: the package stands there as a bare folder, its __init__ never run.
import types
package = types.ModuleType("edgepack")
package.__path__ = [sys.argv[1]]
sys.modules["edgepack"] = package
for name in sys.argv[2:]:
    importlib.import_module("edgepack.ondevice." + name)
host = sorted(m for m in sys.modules if m.startswith("edgepack.") and not m.startswith("edgepack.ondevice"))
print(json.dumps({"host": host, "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules}))
"""


def test_every_ondevice_module_imports_with_tensorflow_keras_and_host_modules_blocked():
    proc = subprocess.run([sys.executable, "-c", "import json\n" + BLOCKED, str(ONDEVICE.parent), *MODULES], capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"host": [], "tensorflow": False}


def test_the_blocking_finder_refuses_a_host_module():
    script = "import json\n" + BLOCKED.replace('"edgepack.ondevice." + name', '"edgepack." + name')
    proc = subprocess.run([sys.executable, "-c", script, str(ONDEVICE.parent), "bundle"], capture_output=True, text=True, timeout=60)

    assert proc.returncode != 0 and "not on this device: edgepack.bundle" in proc.stderr


@pytest.mark.parametrize("name", MODULES)
def test_every_ondevice_module_parses_as_python_38_and_stays_under_400_lines(name):
    text = (ONDEVICE / f"{name}.py").read_text(encoding="utf-8")

    ast.parse(text, feature_version=(3, 8))
    assert len(text.splitlines()) <= 400


def test_ondevice_modules_import_each_other_only_relatively():
    for name in MODULES:
        tree = ast.parse((ONDEVICE / f"{name}.py").read_text(encoding="utf-8"))
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("edgepack")]
        absolute += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("edgepack")]
        assert absolute == [], name


@pytest.mark.parametrize("entry", ["cli", "loader"])
def test_the_assembled_file_is_the_same_bytes_every_time_and_parses_as_python_38(entry):
    first, second = assemble(entry), assemble(entry)

    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    tree = ast.parse(first.decode("utf-8"), feature_version=(3, 8))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]  # it stands alone


def test_the_loader_carries_none_of_the_agent():
    assert "loader" in closure("loader") and not {"agentbase", "cli", "measure", "probes", "tensorrt"} & set(closure("loader"))
    assert {"common", "runtimes"} <= set(closure("loader")) & set(closure("cli"))  # the code they share, once


def test_a_name_defined_in_two_modules_of_one_file_is_refused(tmp_path, monkeypatch):
    import edgepack.agent.assemble as assemble_module

    (tmp_path / "a.py").write_text('"""A."""\n\ndef clash():\n    return 1\n')
    (tmp_path / "b.py").write_text('"""B."""\n\nfrom .a import clash as other\n\n\ndef clash():\n    return 2\n')
    monkeypatch.setattr(assemble_module, "ONDEVICE", tmp_path)

    with pytest.raises(AssemblyError, match="clash is defined in both ondevice/a.py and ondevice/b.py"):
        assemble_module.assemble("b")


def test_the_agent_assembled_runs_alone_and_prints_one_report(tmp_path):
    agent = tmp_path / AGENT_NAME
    agent.write_bytes(assemble("cli"))

    proc = subprocess.run([sys.executable, str(agent), str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)

    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False and report["errors"] == [f"no such bundle directory: {tmp_path / 'missing'}"]
    assert LOADER_NAME != AGENT_NAME and Path(agent).read_bytes() == assemble("cli")
