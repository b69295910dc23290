"""The device: CPU, cores, memory, this process's RSS, and the page cache of a file."""

from __future__ import annotations

import os
import platform
import sys

from .common import usable_cores


def system_info() -> dict:
    info = {
        "arch": platform.machine() or None,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "memory_total_mb": memory_total_mb(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    return info


def cpu_model():
    fields = {}
    try:
        with open("/proc/cpuinfo", "r", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        value = fields.get(key)
        if value and not value.isdigit():
            return value
    try:  # boards without a model line (Jetson, some Pis) name themselves in the device tree
        with open("/sys/firmware/devicetree/base/model", "rb") as f:
            return f.read().rstrip(b"\0").decode("utf-8", "replace").strip() or None
    except OSError:
        pass
    return platform.processor() or None


def memory_total_mb():
    value = proc_kb("/proc/meminfo", "MemTotal")
    if value is not None:
        return round(value / 1024.0, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1048576.0, 1)
    except (ValueError, OSError, AttributeError):
        return None


def proc_kb(path: str, key: str):
    try:
        with open(path, "r") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb(key: str):
    """Return (MB, how it was read) for VmRSS or VmHWM, falling back to ru_maxrss."""
    kb = proc_kb("/proc/self/status", key)
    if kb is not None:
        return round(kb / 1024.0, 3), "%s from /proc/self/status" % key
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1048576.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB elsewhere
        return round(maxrss / scale, 3), "ru_maxrss from resource.getrusage (peak so far)"
    except (ImportError, OSError):
        return None, "unavailable"


def evict_page_cache(path: str):
    """Drop the file's pages from the page cache; return (evicted, note)."""
    if not hasattr(os, "posix_fadvise"):
        return False, "posix_fadvise is not available on this OS; cold loads read a warm page cache"
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
        except OSError:
            pass
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            return False, "posix_fadvise(POSIX_FADV_DONTNEED) failed: %s" % exc
        resident = resident_pages(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if resident is None:
        return True, None
    if resident[0]:
        return False, (
            "%d of %d model pages stayed in the page cache after POSIX_FADV_DONTNEED "
            "(file mapped by another process, or on tmpfs)" % resident
        )
    return True, None


def resident_pages(fd: int, size: int):
    """Return (resident, total) pages of the file via mmap + mincore, or None where unsupported."""
    if size <= 0 or not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util
        import mmap

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return sum(1 for v in vec if v & 1), pages
        finally:
            libc.munmap(addr, size)
    except Exception:
        return None


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: /proc/self/clear_refs, value 5); True where that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except (OSError, IOError):
        return False
