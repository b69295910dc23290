"""The `edgepack` command starts light, prints its version, and completes in the shell."""

from __future__ import annotations

import os
import subprocess
import sys

from edgepack._version import __version__

HEAVY = ("numpy", "pydantic", "ruamel.yaml", "paramiko", "tensorflow", "onnxruntime", "rich.live")
RUN = "import sys; from edgepack.cli.app import main; sys.argv[0] = 'edgepack'; main()"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    probe = "import atexit, sys\natexit.register(lambda: print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr))\n" + RUN
    return subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def modules(result: subprocess.CompletedProcess) -> set[str]:
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_version_import_no_heavy_library():
    for args in (["--help"], ["--version"]):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        heavy = [m for m in HEAVY if m in modules(result)]
        assert heavy == [], (args, heavy)


def test_a_commands_help_imports_no_ml_library():
    # typer itself reads a command's parameters through pydantic, so only our own imports are checked here.
    for args in (["build", "--help"], ["bench", "--help"], ["deploy", "--help"], ["devices", "add", "--help"]):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        heavy = [m for m in HEAVY if m != "pydantic" and m in modules(result)]
        assert heavy == [], (args, heavy)


def test_version_prints_the_package_version():
    result = run("--version")
    assert result.stdout.strip() == __version__


def test_the_shell_completes_commands_and_options():
    result = run(env={"_EDGEPACK_COMPLETE": "complete_bash", "COMP_WORDS": "edgepack ta", "COMP_CWORD": "1"})
    assert result.stdout.split() == ["targets"], result.stdout
    result = run(env={"_EDGEPACK_COMPLETE": "complete_bash", "COMP_WORDS": "edgepack bench b --ba", "COMP_CWORD": "3"})
    assert "--baseline" in result.stdout.split(), result.stdout
    script = run("--show-completion", "bash")
    assert script.returncode == 0 and "_edgepack_completion" in script.stdout


# The command runs in a child that its parent leaves at once: no shell among its parent processes,
# as under `nohup ... &` after the terminal has gone.
DETACHED = (
    "import os, sys, time\n"
    "parent = os.getpid()\n"
    "if os.fork():\n    os._exit(0)\n"
    "while os.getppid() == parent:\n    time.sleep(0.01)\n"
    "from edgepack.cli.app import main\nsys.argv = ['edgepack', *sys.argv[1:]]\nmain()\n"
)


def test_a_named_shell_gets_its_completion_script_with_no_shell_among_the_parents():
    for shell, mark in (("bash", "_edgepack_completion()"), ("zsh", "#compdef edgepack")):
        result = subprocess.run([sys.executable, "-c", DETACHED, "--show-completion", shell], capture_output=True, text=True, timeout=60)
        assert mark in result.stdout, (shell, result.stdout, result.stderr)


def test_help_reads_as_written_no_bool_types_no_braces_no_lost_defaults():
    import re

    for args in (["build", "--help"], ["bench", "--help"], ["deploy", "--help"], ["targets", "set", "--help"], ["--help"]):
        result = run(*args, env={"COLUMNS": "200"})
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "<bool>" not in out, args
        assert not re.search(r"\{\w+\}", out), args  # "{model}" in a usage line
        assert not re.search(r"\w \.(\s|$)", out, re.M), args  # "Timed runs ." where "[default: ...]" was swallowed
    build = run("build", "--help", env={"COLUMNS": "200"}).stdout
    assert "Usage: edgepack build [OPTIONS] MODEL" in build and "Bundle directory [default: build/<model>-<target>]." in build
    bench = run("bench", "--help", env={"COLUMNS": "200"}).stdout
    assert "Timed runs [default: the profile's bench.runs]." in bench
