"""Sustained load against a fake sysfs tree: per-interval latency beside temperature and frequency, throttling where
vcgencmd tells, and the flag when the last interval is slower than the first."""

from __future__ import annotations

import stat
import time

from edgepack.ondevice.thermal import frequencies_mhz, parse_throttled, sustained_run, temperatures_c


def fake_sysfs(root, temps_mc, freqs_khz):
    for i, (name, value) in enumerate(temps_mc.items()):
        zone = root / "sys/class/thermal" / f"thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(name + "\n")
        (zone / "temp").write_text(f"{value}\n")
    for i, value in enumerate(freqs_khz):
        cpu = root / "sys/devices/system/cpu" / f"cpu{i}" / "cpufreq"
        cpu.mkdir(parents=True)
        (cpu / "scaling_cur_freq").write_text(f"{value}\n")


def test_temperatures_and_frequencies_are_read_from_the_sysfs_root(tmp_path):
    fake_sysfs(tmp_path, {"cpu-thermal": 61234, "gpu-thermal": 55000}, [1500000, 1800000])
    assert temperatures_c(str(tmp_path)) == {"cpu-thermal": 61.234, "gpu-thermal": 55.0}
    assert frequencies_mhz(str(tmp_path)) == {"cpu0": 1500.0, "cpu1": 1800.0}


def test_vcgencmd_throttled_word_names_its_conditions():
    found = parse_throttled("throttled=0x50005\n")
    assert found["word"] == "0x50005"
    assert found["conditions"] == ["under-voltage now", "throttled now", "under-voltage has occurred", "throttling has occurred"]
    assert parse_throttled("error") is None


def test_a_device_that_slows_down_is_flagged_with_its_temperature(tmp_path):
    fake_sysfs(tmp_path, {"cpu-thermal": 50000}, [1500000])
    zone = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    calls = []

    def infer():  # each call slower than the last, and the zone warmer: a device heating up
        calls.append(1)
        time.sleep(0.001 * (1 + len(calls) / 20))
        zone.write_text(f"{50000 + 100 * len(calls)}\n")

    vcgencmd = tmp_path / "bin" / "vcgencmd"
    vcgencmd.parent.mkdir()
    vcgencmd.write_text("#!/bin/sh\necho throttled=0x20002\n")
    vcgencmd.chmod(vcgencmd.stat().st_mode | stat.S_IEXEC)
    found = sustained_run(infer, 0.6, 0.2, root=str(tmp_path), path_env=str(vcgencmd.parent))
    rows = found["intervals"]
    assert len(rows) >= 3 and all(r["runs"] > 0 and r["p90_ms"] >= r["p50_ms"] for r in rows)
    assert rows[-1]["temp_c"] > rows[0]["temp_c"] >= 50.0 and rows[0]["freq_mhz"] == 1500.0
    assert found["slowdown"] and found["slowdown_ratio"] > 1.1 and "slows under sustained load" in found["notes"][0]
    assert found["throttled_end"]["conditions"] == ["ARM frequency capped now", "ARM frequency capping has occurred"]


def test_a_steady_device_is_not_flagged_and_missing_sysfs_is_said(tmp_path):
    found = sustained_run(lambda: time.sleep(0.001), 0.4, 0.2, root=str(tmp_path), path_env=str(tmp_path))
    assert not found["slowdown"] and found["throttled_start"] is None
    assert any("no readable thermal zone" in n for n in found["notes"]) and found["intervals"][0]["temp_c"] is None
