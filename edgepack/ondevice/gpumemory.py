"""GPU memory of the measuring process, each figure saying how it was read.

CUDA devices: NVML through nvidia-ml-py (`import pynvml`) where it is installed:
nvmlDeviceGetComputeRunningProcesses gives each compute process's usedGpuMemory, this process's
among them (ONNX Runtime's CUDA arena keeps what it took, so after the timed runs that is its
peak); nvmlDeviceGetMemoryInfo gives the whole device's use beside it. Jetson: the GPU shares the
system's RAM, so the figure is the unified memory as tegrastats reports it ("RAM used/totalMB"),
else /proc/meminfo (MemTotal - MemAvailable), said to be the whole system's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

TEGRA_MARKERS = ("etc/nv_tegra_release", "proc/device-tree/model")
TEGRASTATS_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
TEGRASTATS_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
TEGRASTATS_TEMP = re.compile(r"\b([A-Za-z0-9_]+)@(-?[\d.]+)C\b")
MB = 1024.0 * 1024.0


def is_jetson(root: str = "/") -> bool:
    """True on an NVIDIA Jetson (L4T's release file, or the device tree's model naming a Jetson)."""
    if os.path.isfile(os.path.join(root, TEGRA_MARKERS[0])):
        return True
    try:
        with open(os.path.join(root, TEGRA_MARKERS[1]), "rb") as f:
            return b"jetson" in f.read().lower()
    except OSError:
        return False


def nvml_memory(pid=None) -> dict:
    """This process's device memory (and each device's use) from NVML; a figure of None says why not."""
    try:
        import pynvml
    except Exception as exc:
        return {"process_mb": None, "source": None,
                "method": "NVML not importable (%s): GPU memory not measured; pip install nvidia-ml-py on the device" % exc}
    pid = os.getpid() if pid is None else pid
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"process_mb": None, "source": None, "method": "NVML did not start (%s): GPU memory not measured" % exc}
    try:
        devices, mine = [], None
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append({"index": index, "used_mb": round(info.used / MB, 3), "total_mb": round(info.total / MB, 3)})
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = getattr(proc, "usedGpuMemory", None)
                if proc.pid == pid and used is not None:
                    mine = (mine or 0.0) + used / MB
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    if mine is None:
        how = ("this process (pid %d) is not among NVML's compute processes (no CUDA context, a container's own PID "
               "namespace, or a driver that does not report it): only the devices' use is given" % pid)
    else:
        how = ("NVML nvmlDeviceGetComputeRunningProcesses: usedGpuMemory of this process summed over the GPUs, read after "
               "the timed runs (the CUDA arena keeps what it took, so this is its peak); device use from nvmlDeviceGetMemoryInfo")
    return {"process_mb": round(mine, 3) if mine is not None else None, "devices": devices, "source": "nvml", "unified": False, "method": how}


def parse_tegrastats(line: str) -> dict:
    """Read one tegrastats line: RAM used/total MB, GPU load %, temperatures by sensor."""
    ram = TEGRASTATS_RAM.search(line or "")
    gpu = TEGRASTATS_GPU.search(line or "")
    return {
        "ram_used_mb": float(ram.group(1)) if ram else None,
        "ram_total_mb": float(ram.group(2)) if ram else None,
        "gpu_load_pct": float(gpu.group(1)) if gpu else None,
        "temps_c": dict((name, float(value)) for name, value in TEGRASTATS_TEMP.findall(line or "")),
    }


def tegrastats_line(path_env=None, timeout_s: float = 5.0):
    """One line from `tegrastats` where it is on PATH; else None."""
    binary = shutil.which("tegrastats", path=path_env)
    if binary is None:
        return None
    try:
        proc = subprocess.Popen([binary, "--interval", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    except OSError:
        return None
    try:
        return proc.stdout.readline().strip() or None
    finally:
        proc.kill()
        proc.wait(timeout=timeout_s)


def meminfo_used_mb(root: str = "/"):
    """MemTotal - MemAvailable in MB from /proc/meminfo under ROOT; None where unreadable."""
    values = {}
    try:
        with open(os.path.join(root, "proc/meminfo"), "r") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    values[key] = float(parts[0]) / 1024.0
    except OSError:
        return None
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return round(values["MemTotal"] - values["MemAvailable"], 3)


def jetson_memory(baseline_used_mb, root: str = "/", path_env=None) -> dict:
    """Unified memory on a Jetson, against BASELINE_USED_MB (the same reading before the load)."""
    line = tegrastats_line(path_env)
    stats = parse_tegrastats(line) if line else None
    if stats and stats["ram_used_mb"] is not None:
        used, source = stats["ram_used_mb"], "tegrastats"
        how = "tegrastats 'RAM used/total' (unified memory: CPU and GPU share it; the whole system's use)"
    else:
        used, source = meminfo_used_mb(root), "meminfo"
        how = "/proc/meminfo MemTotal - MemAvailable (unified memory: CPU and GPU share it; the whole system's use; tegrastats not on PATH)"
    grew = round(used - baseline_used_mb, 3) if used is not None and baseline_used_mb is not None else None
    return {"process_mb": grew, "system_used_mb": used, "gpu_load_pct": stats["gpu_load_pct"] if stats else None,
            "source": source, "unified": True,
            "method": how + "; process_mb: the growth over the reading before the load (other processes' changes included)"}


def baseline_used_mb(root: str = "/", path_env=None):
    """The unified-memory reading before the load, the way `jetson_memory` reads it after."""
    line = tegrastats_line(path_env)
    stats = parse_tegrastats(line) if line else None
    if stats and stats["ram_used_mb"] is not None:
        return stats["ram_used_mb"]
    return meminfo_used_mb(root)


def gpu_memory(providers: list, delegates: list, baseline=None, root: str = "/", path_env=None):
    """The GPU memory figure that fits this device and runtime; None where nothing runs on a GPU."""
    on_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers) or "gpu" in delegates
    if not on_gpu:
        return None
    if is_jetson(root):
        return jetson_memory(baseline, root, path_env)
    return nvml_memory()
