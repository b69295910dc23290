"""What a device is and can run: `probe` runs one small program there with the device's Python."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepack.device.transport import Transport, json_answer

# Run on the device with its own Python: what it is and which runtimes import there.
PROBE_SNIPPET = r"""
import json, os, platform, shutil, subprocess, sys
RUNTIMES = ["ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "numpy"]
code = ("import importlib, sys; m = importlib.import_module(sys.argv[1]); "
        "v = getattr(m, '__version__', None)\n"
        "if v is None:\n"
        "    try:\n"
        "        from importlib.metadata import version; v = version(sys.argv[1].replace('_', '-'))\n"
        "    except Exception: v = '?'\n"
        "print(v)")
runtimes = {}
for name in RUNTIMES:
    try:
        # One process per import: a broken wheel may crash its importer (illegal instruction).
        p = subprocess.run([sys.executable, "-c", code, name], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=300)
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        if p.returncode == 0:
            runtimes[name] = {"ok": True, "version": p.stdout.decode().strip().splitlines()[-1]}
        else:
            runtimes[name] = {"ok": False, "error": err[-1] if err else "exit %d" % p.returncode}
    except Exception as e:
        runtimes[name] = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
mem = {}
try:
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0]) * 1024
except (IOError, OSError, ValueError):
    pass
du = shutil.disk_usage(".")
print(json.dumps({
    "arch": platform.machine(),
    "system": platform.system(),
    "release": platform.release(),
    "python": platform.python_version(),
    "python_path": sys.executable,
    "workdir": os.getcwd(),
    "cpu_count": os.cpu_count(),
    "disk_free_bytes": du.free,
    "memory_total_bytes": mem.get("MemTotal"),
    "memory_available_bytes": mem.get("MemAvailable", mem.get("MemFree")),
    "runtimes": runtimes,
}))
"""


@dataclass
class RuntimeStatus:
    """Whether one runtime imports on the device, and its version or the import error."""

    name: str
    ok: bool
    version: str | None = None
    error: str | None = None


@dataclass
class DeviceInfo:
    """What `probe` found on a device."""

    device: str
    arch: str
    system: str
    release: str
    python: str
    python_path: str
    workdir: str
    cpu_count: int | None
    disk_free_bytes: int
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    runtimes: list[RuntimeStatus] = field(default_factory=list)
    seconds: float = 0.0
    push_method: str = "copy"  # how files reach it: "copy" (this machine), "sftp", "exec" (no SFTP there)
    way: str = "this machine"  # "direct", or "via" the jump hosts on the way


def probe(transport: Transport, timeout: float = 600.0) -> DeviceInfo:
    """Run one small Python program on the device: arch, Python, runtimes, free disk and memory.

    Raises:
        DeviceError: the program could not run or did not answer with its report.
    """
    result = transport.run([transport.python, "-c", PROBE_SNIPPET], timeout=timeout)
    data = json_answer(transport, result, "the device check")
    runtimes = [RuntimeStatus(name=k, **v) for k, v in data.pop("runtimes").items()]
    return DeviceInfo(
        device=transport.name, runtimes=runtimes, seconds=result.seconds,
        push_method=transport.push_method, way=transport.way, **data,
    )
