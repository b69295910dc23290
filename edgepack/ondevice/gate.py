"""The build's gate, applied on the device to the answers the device's runtime gave on the reference inputs.

Each output is judged by the kind the build gave it (the manifest's fidelity.outputs) and the
profile's thresholds (verify.min_sqnr_db / min_cosine for dense outputs; budgets.max_accuracy_drop
for class scores), with the same formulas as edgepack.builder.verify: SQNR the worse of the
output's variation and each sample's variation around its own mean, capped at 150 dB; cosine per
sample on values centred per sample. The reference holds a few samples, so a class output may
disagree on as many samples as the build's own agreement (measured on the whole evaluation set)
predicts for that many, and on no more.
"""

from __future__ import annotations

import math

from .common import np

GATE_SQNR_CAP_DB = 150.0
GATE_DEFAULT_SQNR_DB = 20.0  # edgepack.profile.schema.DEFAULT_MIN_SQNR_DB
GATE_DEFAULT_COSINE = 0.99  # edgepack.profile.schema.DEFAULT_MIN_COSINE


def gate_sqnr(signal: float, noise: float, scale: float) -> float:
    if noise == 0:
        return GATE_SQNR_CAP_DB
    if not math.isfinite(noise):
        return -GATE_SQNR_CAP_DB
    if signal <= (1e-6 * scale) ** 2:
        signal = scale ** 2
    return float(np.clip(10 * np.log10(signal / noise), -GATE_SQNR_CAP_DB, GATE_SQNR_CAP_DB)) if signal > 0 else 0.0


def dense_figures(want, got) -> tuple:
    """(SQNR dB, mean cosine) of GOT against WANT, samples on the first axis."""
    ref = np.asarray(want, dtype=np.float64).reshape(len(want), -1)
    cand = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    err = np.abs(ref - cand)
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    scale = scale or 1.0
    sqnr = gate_sqnr(float(np.var(ref)), float(np.mean(err ** 2)), scale)
    if ref.shape[1] > 1:
        ref_c = ref - ref.mean(axis=1, keepdims=True)
        cand_c = cand - cand.mean(axis=1, keepdims=True)
        within = float(np.mean(ref_c ** 2))
        if within > (1e-6 * scale) ** 2:
            sqnr = min(sqnr, gate_sqnr(within, float(np.mean((ref_c - cand_c) ** 2)), scale))
    else:
        ref_c, cand_c = ref, cand
    norms = np.linalg.norm(ref_c, axis=1) * np.linalg.norm(cand_c, axis=1)
    flat = np.linalg.norm(ref_c, axis=1) <= 1e-6 * scale * np.sqrt(ref.shape[1])
    close = err.max(axis=1) <= 1e-3 * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(flat, close.astype(np.float64), np.sum(ref_c * cand_c, axis=1) / np.where(norms > 0, norms, 1))
    return sqnr, (float(np.mean(cos)) if np.isfinite(cos).all() else 0.0)


def gate_settings(manifest: dict):
    """The build's gate as the manifest records it: kinds by output, thresholds, the build's agreement by output.

    None where the manifest records no output's kind (a bundle from before per-output fidelity): the
    device then reports its figures without judging them, as before.
    """
    profile = manifest.get("profile") or {}
    verify = profile.get("verify") or {}
    budgets = profile.get("budgets") or {}
    fidelity = manifest.get("fidelity") or {}
    outputs = [o for o in fidelity.get("outputs") or [] if isinstance(o, dict)]
    if not outputs:
        return None
    return {
        "kinds": [o.get("kind") for o in outputs],
        "built_agreement": [o.get("top1_agreement") for o in outputs],
        "names": [o.get("name") for o in outputs],
        "min_sqnr_db": float(verify.get("min_sqnr_db", GATE_DEFAULT_SQNR_DB)),
        "min_cosine": float(verify.get("min_cosine", GATE_DEFAULT_COSINE)),
        "max_accuracy_drop": float(budgets.get("max_accuracy_drop", 0.01)),
    }


def allowed_flips(n: int, max_drop: float, built_agreement) -> int:
    """How many of N reference samples a class output may answer differently from the original."""
    by_budget = int(math.floor(n * max_drop + 1e-9))
    by_build = int(math.ceil(n * (1.0 - built_agreement) - 1e-9)) if built_agreement is not None else 0
    return max(by_budget, by_build)


def judge_outputs(wants: list, gots: list, settings: dict, indices=None) -> dict:
    """Judge each output GOT against the original's WANT by the build's gate (SETTINGS from `gate_settings`).

    INDICES gives each pair's output position where some outputs have no reference (default 0, 1, ...).
    """
    judged, failures = [], []
    for k, want, got in zip(indices if indices is not None else range(len(wants)), wants, gots):
        kinds, names = settings["kinds"], settings["names"]
        kind = kinds[k] if k < len(kinds) and kinds[k] else ("classes" if want.ndim == 2 and want.shape[-1] > 1 else "dense")
        name = names[k] if k < len(names) and names[k] else "output_%d" % k
        row = {"name": name, "kind": kind, "sqnr_db": None, "cosine": None, "top1_agreement": None, "passed": True}
        if not np.all(np.isfinite(got)):
            row["passed"] = False
            failures.append("%s holds NaN or infinite values on the device" % name)
            judged.append(row)
            continue
        row["sqnr_db"], row["cosine"] = dense_figures(want, got)
        if kind == "classes":
            same = np.argmax(got, axis=-1) == np.argmax(want, axis=-1)
            n, flips = int(same.size), int(same.size - np.sum(same))
            row["top1_agreement"] = float(np.mean(same)) if n else None
            built = settings["built_agreement"][k] if k < len(settings["built_agreement"]) else None
            allowed = allowed_flips(n, settings["max_accuracy_drop"], built)
            if flips > allowed:
                row["passed"] = False
                failures.append(
                    "%s: top-1 agreement %d/%d on the device; the build's gate (%s) allows %d disagreement%s in %d"
                    % (name, n - flips, n, "agreement %.2f%% at build" % (100 * built) if built is not None else
                       "max_accuracy_drop %.2f%%" % (100 * settings["max_accuracy_drop"]), allowed, "" if allowed == 1 else "s", n))
        elif row["sqnr_db"] < settings["min_sqnr_db"] or row["cosine"] < settings["min_cosine"]:
            row["passed"] = False
            failures.append("%s differs from the original's on the device: SQNR %.1f dB (budget %g), cosine %.4f (budget %g)"
                            % (name, row["sqnr_db"], settings["min_sqnr_db"], row["cosine"], settings["min_cosine"]))
        judged.append(row)
    return {
        "outputs": judged,
        "passed": not failures,
        "failures": failures,
        "gate": "the build's gate: dense outputs by SQNR >= %g dB and cosine >= %g, class scores by top-1 agreement "
                "(max_accuracy_drop %g), each output by the kind the build gave it"
                % (settings["min_sqnr_db"], settings["min_cosine"], settings["max_accuracy_drop"]),
    }
