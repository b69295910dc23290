"""GPU memory, each figure saying how it was read: NVML absent says so; Jetson's unified memory from tegrastats,
else /proc/meminfo."""

from __future__ import annotations

import stat
import sys

from edgepack.ondevice.gpumemory import gpu_memory, is_jetson, jetson_memory, meminfo_used_mb, nvml_memory, parse_tegrastats

# A tegrastats line in the format JetPack 5 prints on an Orin Nano.
TEGRASTATS = ("12-04-2026 16:00:00 RAM 2848/7451MB (lfb 2x4MB) SWAP 0/3725MB (cached 0MB) CPU [1%@729,0%@729,2%@729,0%@729,off,off] "
              "EMC_FREQ 0%@2133 GR3D_FREQ 37%@[624] cpu@46.281C soc2@44.968C soc0@45.218C gpu@44.75C tj@46.281C")


def test_without_nvml_the_figure_is_none_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    found = nvml_memory()
    assert found["process_mb"] is None and "NVML not importable" in found["method"] and "nvidia-ml-py" in found["method"]


def test_a_tegrastats_line_gives_the_unified_memory_gpu_load_and_temperatures():
    found = parse_tegrastats(TEGRASTATS)
    assert (found["ram_used_mb"], found["ram_total_mb"], found["gpu_load_pct"]) == (2848.0, 7451.0, 37.0)
    assert found["temps_c"]["gpu"] == 44.75 and found["temps_c"]["cpu"] == 46.281


def fake_jetson(root):
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\n")
    (root / "proc").mkdir()
    (root / "proc/meminfo").write_text("MemTotal:        7629672 kB\nMemFree:  1000000 kB\nMemAvailable:    5000000 kB\n")


def test_on_a_jetson_tegrastats_gives_the_growth_over_the_baseline(tmp_path):
    fake_jetson(tmp_path)
    tool = tmp_path / "bin" / "tegrastats"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\necho '{TEGRASTATS}'\nsleep 5\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    assert is_jetson(str(tmp_path)) and not is_jetson(str(tmp_path / "bin"))
    found = jetson_memory(2700.0, root=str(tmp_path), path_env=str(tool.parent))
    assert found["source"] == "tegrastats" and found["unified"] and found["process_mb"] == 148.0 and found["gpu_load_pct"] == 37.0


def test_on_a_jetson_without_tegrastats_meminfo_is_read_and_named(tmp_path):
    fake_jetson(tmp_path)
    assert meminfo_used_mb(str(tmp_path)) == round((7629672 - 5000000) / 1024, 3)
    found = gpu_memory(["CUDAExecutionProvider", "CPUExecutionProvider"], [], baseline=2500.0, root=str(tmp_path), path_env=str(tmp_path))
    assert found["source"] == "meminfo" and "tegrastats not on PATH" in found["method"]
    assert gpu_memory(["CPUExecutionProvider"], ["xnnpack"], root=str(tmp_path)) is None  # nothing on a GPU: no figure


def fake_nvml(processes, used=512 * 2**20, total=16 * 2**30):
    """An NVML binding with nvidia-ml-py's names, answering for one GPU (no GPU on the machines these tests run on)."""
    import types

    info = types.SimpleNamespace(used=used, total=total, free=total - used)
    return types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: ("gpu", index), nvmlDeviceGetMemoryInfo=lambda handle: info,
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in processes],
    )


def test_nvml_gives_this_processs_device_memory_and_each_gpus_use(monkeypatch):
    import os

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(os.getpid(), 300 * 2**20), (1, 900 * 2**20)]))
    found = nvml_memory()
    assert found["process_mb"] == 300.0 and found["source"] == "nvml" and found["devices"] == [{"index": 0, "used_mb": 512.0, "total_mb": 16384.0}]
    assert "usedGpuMemory" in found["method"]


def test_a_process_nvml_does_not_list_gets_no_figure_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(1, 900 * 2**20), (2, None)]))
    found = nvml_memory()
    assert found["process_mb"] is None and "not among NVML's compute processes" in found["method"] and found["devices"]
