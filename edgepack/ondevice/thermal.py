"""Sustained load: latency per interval beside CPU temperature, frequency and throttling, read from sysfs.

Temperatures come from /sys/class/thermal/thermal_zone*/temp (millidegrees C, named by each zone's
`type`), frequencies from /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq (kHz), and a
Raspberry Pi's own throttling word from `vcgencmd get_throttled`. The sysfs root is a parameter so
that a test can point it at a tree of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time

from .common import np

SLOWDOWN = 1.10  # the last interval's p50 over the first's by more than this is flagged
# vcgencmd get_throttled bits (Raspberry Pi documentation): now (0-3) and since boot (16-19).
THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage has occurred", 17: "ARM frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def read_number(path: str):
    try:
        with open(path, "r") as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def temperatures_c(root: str = "/") -> dict:
    """Zone type -> degrees C for every readable thermal zone under ROOT."""
    found = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        value = read_number(os.path.join(zone, "temp"))
        if value is None:
            continue
        try:
            with open(os.path.join(zone, "type"), "r") as f:
                name = f.read().strip() or os.path.basename(zone)
        except OSError:
            name = os.path.basename(zone)
        if name in found:
            name = "%s/%s" % (name, os.path.basename(zone))
        found[name] = value / 1000.0
    return found


def frequencies_mhz(root: str = "/") -> dict:
    """CPU name -> current frequency in MHz under ROOT."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))):
        value = read_number(path)
        if value is not None:
            found[path.split(os.sep)[-3]] = value / 1000.0
    return found


def parse_throttled(text: str):
    """Read `vcgencmd get_throttled` ('throttled=0x50005'): the word and the conditions its bits name."""
    text = (text or "").strip()
    if "=" not in text:
        return None
    try:
        word = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    return {"word": hex(word), "conditions": [name for bit, name in sorted(THROTTLE_BITS.items()) if word & (1 << bit)]}


def throttled(path_env=None):
    """The device's own throttling word where `vcgencmd` is on PATH (a Raspberry Pi); else None."""
    binary = shutil.which("vcgencmd", path=path_env)
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "get_throttled"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10, universal_newlines=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_throttled(done.stdout)


def thermal_sample(root: str = "/") -> dict:
    temps, freqs = temperatures_c(root), frequencies_mhz(root)
    return {
        "temp_c": max(temps.values()) if temps else None,
        "temps_c": temps,
        "freq_mhz": float(np.mean(list(freqs.values()))) if freqs else None,
        "freq_min_mhz": min(freqs.values()) if freqs else None,
    }


def sustained_run(infer, duration_s: float, interval_s: float, root: str = "/", path_env=None, clock=time.perf_counter_ns) -> dict:
    """Call INFER without pause for DURATION_S; per INTERVAL_S: p50/p90 latency, temperature, frequency."""
    start_throttle = throttled(path_env)
    before = thermal_sample(root)
    intervals = []
    begin = clock()
    end = begin + int(duration_s * 1e9)
    while clock() < end:
        samples = []
        stop = min(clock() + int(interval_s * 1e9), end)
        while clock() < stop or not samples:
            t0 = clock()
            infer()
            samples.append((clock() - t0) / 1e6)
        p50, p90 = (float(v) for v in np.percentile(np.asarray(samples), [50, 90]))
        row = {"t_s": round((clock() - begin) / 1e9, 3), "runs": len(samples), "p50_ms": p50, "p90_ms": p90}
        row.update(thermal_sample(root))
        intervals.append(row)
    end_throttle = throttled(path_env)
    first, last = intervals[0]["p50_ms"], intervals[-1]["p50_ms"]
    slowed = len(intervals) > 1 and first > 0 and last > SLOWDOWN * first
    notes = []
    if slowed:
        notes.append("the last interval's p50 (%.3f ms) is %.0f%% above the first's (%.3f ms): the device slows under sustained load"
                     % (last, 100 * (last / first - 1), first))
    if not before["temps_c"]:
        notes.append("no readable thermal zone under %s: temperature not measured" % os.path.join(root, "sys/class/thermal"))
    if before["freq_mhz"] is None:
        notes.append("no readable cpufreq under %s: frequency not measured" % os.path.join(root, "sys/devices/system/cpu"))
    return {
        "duration_s": duration_s,
        "interval_s": interval_s,
        "intervals": intervals,
        "start": before,
        "slowdown": slowed,
        "slowdown_ratio": last / first if first > 0 else None,
        "throttled_start": start_throttle,
        "throttled_end": end_throttle,
        "notes": notes,
        "method": "inference without pause; per interval p50/p90 of perf_counter_ns samples, then the hottest thermal zone "
                  "(sysfs thermal_zone*/temp) and the mean CPU frequency (cpufreq/scaling_cur_freq); throttling from "
                  "vcgencmd get_throttled where present; flagged when the last p50 is more than %d%% over the first"
                  % round(100 * (SLOWDOWN - 1)),
    }
