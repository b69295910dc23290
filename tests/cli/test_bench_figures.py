"""The bench table says what each load figure is, and flags a cold load faster than a warm one as noise."""

from __future__ import annotations

from types import SimpleNamespace

from edgepack.cli import render


def bench_table(capsys, cold, warm, optimized_warm) -> str:
    from edgepack.cli.bench import render_bench

    optimized = SimpleNamespace(form="xnnpack-weight-cache", cold_ms=[2.0], warm_ms=optimized_warm, import_ms=None, check=None,
                                used_by_loader=False, phases_ms=None)
    load = SimpleNamespace(cold_ms=cold, warm_ms=warm, cold_evicted=True, phases_ms={"read_file": 0.5, "first_inference": 0.54},
                           import_ms=None, optimized=optimized, first_answer=None)
    report = SimpleNamespace(system=None, runtime=None, notes=[], load=load, first_inference_ms=1.0, latency_ms=None,
                             throughput_per_s=None, memory=None, check=None)
    result = SimpleNamespace(
        report=report,
        manifest=SimpleNamespace(profile=SimpleNamespace(budgets=SimpleNamespace(max_p90_latency_ms=None, max_peak_memory_mb=None)),
                                 format=SimpleNamespace(value="tflite"), precision=SimpleNamespace(value="int8")),
        bundle=SimpleNamespace(name="pi-int8"), device="pi4",
        push=SimpleNamespace(files_sent=1, bytes_sent=1024, files_skipped=0), report_path=None,
    )
    render_bench(result)
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def test_a_cold_load_below_the_warm_one_is_flagged_as_noise(capsys, monkeypatch):
    monkeypatch.setattr(render.console, "_width", 200)
    out = bench_table(capsys, cold=[1.0, 1.1, 1.2], warm=[5.0, 5.03, 5.1], optimized_warm=[25.0])
    line = next(part for part in out.split("│ load, cold")[1:])
    assert "1.10 ms" in line and "below the warm load: noise" in line
    assert "fresh process, file evicted (median of 3)" in out and "fresh process, file cached (median of 3)" in out
    assert "5.0x slower than the plain warm load" in out and "0.2x" not in out
    assert "warm load by phase" in out and "load phases (warm, median)" not in out


def test_a_cold_load_above_the_warm_one_is_printed_plainly(capsys, monkeypatch):
    monkeypatch.setattr(render.console, "_width", 200)
    out = bench_table(capsys, cold=[9.0], warm=[5.0], optimized_warm=[2.5])
    assert "noise" not in out and "2.0x faster than the plain warm load" in out
