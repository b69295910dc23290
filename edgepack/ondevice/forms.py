"""The load-optimised form measured beside the plain load, whether the loader should use it, and the time to first answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .agentbase import FIRST_ANSWER_MARK, LOADER, PROBE_TIMEOUT_S, STARTUP_WORK_MS
from .common import np
from .loadcache import write_meta
from .probes import median_of, median_phases, probe_command, probe_loads, run_probe


def measure_optimized(args, entry: str, meta: dict, created: bool, notes: list):
    """Time cold and warm loads of the entry's form (fresh processes), with its phases and a check of its answers."""
    form = meta["form"]
    extra = ["--form", form, "--form-dir", entry]
    cold, cold_evicted, cold_notes, error = probe_loads(args, args.cold_loads, True, *extra)
    warm, warm_error = [], error
    if error is None:
        warm, _, _, warm_error = probe_loads(args, max(args.cold_loads, 1), False, "--phases", *extra)
    checked = run_probe(probe_command(args, "--check", *extra)) if warm_error is None else {"ok": False, "error": warm_error}
    for note in cold_notes:
        if note not in notes:
            notes.append(note)
    if warm_error is not None or not checked.get("ok"):
        notes.append("the %s form in %s failed: %s; not used" % (form, entry, warm_error or checked.get("error")))
        meta["use"], meta["why"] = False, "it failed on the device: %s" % (warm_error or checked.get("error"))
        meta["answers_ok"] = False
        write_meta(entry, meta)
        return None
    # Checked against the reference on this device: the loader may load it when asked by name
    # (the time to first answer does); whether it is as good as plain, and faster, is decided after.
    meta["answers_ok"] = True
    write_meta(entry, meta)
    tried = dict((k, v) for k, v in (meta.get("tried_warm_ms") or {}).items() if k != form and v is not None)
    return {
        "form": form,
        "cold_ms": [r["load_ms"] for r in cold],
        "warm_ms": [r["load_ms"] for r in warm],
        "cold_evicted": cold_evicted if args.cold_loads else None,
        "phases_ms": median_phases(warm),
        "import_ms": median_of(warm, "import_ms"),
        "check": checked.get("check"),
        "path": entry,
        "created": created,
        "alternatives_warm_ms": tried or None,
        "used_by_loader": False,
        "method": FORM_METHODS[form],
    }


FORM_METHODS = {
    "onnx-optimized": "InferenceSession creation from the graph ONNX Runtime optimised once on this device (ORT_ENABLE_ALL, "
    "saved with optimized_model_filepath, weights in an external file it maps), loaded with graph optimisation disabled",
    "ort-format": "InferenceSession creation from the graph ONNX Runtime optimised once on this device, saved in ORT format "
    "(session.load_model_format=ORT), loaded with graph optimisation disabled",
    "xnnpack-weight-cache": "LiteRT CompiledModel.from_file with CpuOptions(xnnpack_weight_cache_path=...) on the weights "
    "XNNPACK packed once on this device, plus its input and output buffers",
}


def decide_use(load: dict, plain_check) -> tuple:
    """Whether the loader should use the optimised form: its answers as good as the plain load's, and it is faster.

    Faster means less time from import to first answer: the runtime's import (an API with a slow
    import loses what its load saves), the load and the first inference (a mapped form moves work
    there), each the median over the warm loads. The end-to-end first-answer figures hold a few
    hundred ms of Python start-up that both forms share, whose noise would decide a close call.
    """
    optimized = load["optimized"]
    check = optimized.get("check")
    if check is None:
        return False, "its answers were not checked (no reference.npz)"
    if plain_check is not None:
        tolerance = 1e-5 + 0.05 * (plain_check.get("max_abs_error") or 0.0)
        if (check.get("max_abs_error") or 0.0) > (plain_check.get("max_abs_error") or 0.0) + tolerance:
            return False, "its answers differ more from the reference (max |err| %.3g) than the plain load's (%.3g)" % (
                check.get("max_abs_error"), plain_check.get("max_abs_error"))
        if (check.get("top1_agreement") or 0.0) < (plain_check.get("top1_agreement") or 0.0):
            return False, "its top-1 agreement with the reference is lower than the plain load's"

    def cost(figures):
        if figures.get("import_ms") is None or not figures.get("warm_ms"):
            return None
        return figures["import_ms"] + float(np.median(figures["warm_ms"])) + (figures.get("phases_ms") or {}).get("first_inference", 0.0)

    a, b = cost(load), cost(optimized)
    if a is None or b is None:
        return False, "no warm loads of both forms to compare; " + ANSWERS_OK
    return b < a, "runtime import + load + first inference %.1f ms against %.1f ms plain (medians over the warm loads); %s" % (b, a, ANSWERS_OK)


ANSWERS_OK = "its answers are as good as the plain load's"  # in `why`: the form may be asked for by name (load(form=...))


FIRST_ANSWER_SCRIPT = r"""
import sys, time
t0 = time.perf_counter_ns()
sys.path.insert(0, sys.argv[1])
import json
import edgepack_runtime
code = edgepack_runtime.load.__code__  # a loader from before providers= takes the profile's
takes = "providers" in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
providers = {"providers": sys.argv[9].split(",")} if sys.argv[9] and takes else {}  # the bench's, for an ONNX artifact
model = edgepack_runtime.load(sys.argv[2], background=sys.argv[4] == "1", form=sys.argv[3], cache_dir=sys.argv[5] or None,
                              threads=int(sys.argv[6]) if sys.argv[6] else None, **providers)
time.sleep(float(sys.argv[7]) / 1000.0)  # the app's other start-up work
import numpy as np
inputs = [np.zeros([d if d is not None else 1 for d in spec.get("shape") or []], dtype="float32") for spec in model.inputs]
model.predict(*inputs)
ms = (time.perf_counter_ns() - t0) / 1e6
print("%s%s" % (sys.argv[8], json.dumps({"ms": ms, "form": model.form, "load_ms": model.load_ms, "providers": bool(providers)})))
"""


def find_loader(bundle: str):
    """The loader an app would import: the bundle's own, else the one pushed beside this agent."""
    for folder in (bundle, os.path.dirname(os.path.abspath(__file__))):
        if os.path.isfile(os.path.join(folder, LOADER)):
            return folder
    return None


def first_answers(args, optimized, notes: list, engine: str = "tflite"):
    """Time import-to-first-answer with the loader in fresh processes: plain and optimised, foreground and background.

    An ONNX model is loaded with the bench's execution providers (--providers, else the CPU, as the bench ran),
    not the profile's: the figure belongs beside the bench's other figures.
    """
    folder = find_loader(args.bundle)
    if folder is None:
        notes.append("no %s in the bundle or beside the agent: time to first answer not measured" % LOADER)
        return None
    providers = ",".join(args.providers or ["CPUExecutionProvider"]) if engine != "tflite" else ""
    older = "time to first answer: the bundle's %s predates load(providers=...), so it loaded with the profile's providers" % LOADER
    variants = [("plain", "plain", False), ("plain", "plain", True)]
    if optimized is not None:
        variants += [(optimized["form"], "optimized", False), (optimized["form"], "optimized", True)]
    runs = []
    for name, form, background in variants:
        samples = []
        for _ in range(max(args.cold_loads, 1)):
            # -B: importing the loader leaves no __pycache__ in the bundle.
            cmd = [sys.executable, "-B", "-c", FIRST_ANSWER_SCRIPT, folder, os.path.abspath(args.bundle), form, "1" if background else "0",
                   args.load_cache_dir or "", str(args.threads or ""), "%g" % STARTUP_WORK_MS, FIRST_ANSWER_MARK, providers]
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                notes.append("time to first answer (%s): took longer than %d s" % (name, PROBE_TIMEOUT_S))
                return None
            found = [l for l in proc.stdout.decode("utf-8", "replace").splitlines() if l.startswith(FIRST_ANSWER_MARK)]
            if proc.returncode != 0 or not found:
                tail = [l for l in proc.stderr.decode("utf-8", "replace").splitlines() if l.strip()]
                notes.append("time to first answer (%s) not measured: the loader failed: %s" % (name, tail[-1] if tail else "exit %d" % proc.returncode))
                return None
            result = json.loads(found[-1][len(FIRST_ANSWER_MARK):])
            if result.get("form") != name:
                notes.append("time to first answer: the loader loaded %s, not %s" % (result.get("form"), name))
                return None
            samples.append(float(result["ms"]))
            if providers and not result.get("providers") and older not in notes:
                notes.append(older)
        runs.append({"form": name, "background": background, "ms": samples})
    return {
        "startup_work_ms": STARTUP_WORK_MS,
        "runs": runs,
        "method": (
            "perf_counter_ns in a fresh process from before `import edgepack_runtime` to the return of the first "
            "predict (runtime import, load, first inference), page cache warm; the app's other start-up work stood in "
            "for by %g ms of waiting, after load() in the foreground or while load(background=True) runs" % STARTUP_WORK_MS
        ),
    }
