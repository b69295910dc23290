"""Load a PyTorch model: a `torch.export` program saved as .pt2, or `pkg.module:factory` returning an nn.Module.

The model is exported once, at load time, to ONNX with `torch.onnx.export(..., dynamo=True)`: every
target family builds from that graph (the ONNX targets directly, the TFLite and microcontroller
targets through `edgepack.model.onnx_tflite`). PyTorch itself stays the reference: the
fidelity gate compares each artifact against the module's own answers, so a fault of the export is
caught like a fault of quantization. Each ONNX node keeps the module path it came from
(`source_names`), which the per-layer explanation prints. PyTorch is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepack.errors import ModelError, first_line
from edgepack.ondevice.common import sha256_file

PIP_HINT = "pip install 'edgepack[torch]'"
FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
BATCH = 64


def is_factory(model: str | Path) -> bool:
    """True for `pkg.module:function` (a model factory) rather than a path on disk."""
    text = str(model)
    return bool(FACTORY.fullmatch(text)) and not Path(text).exists()


def is_torch(model: str | Path) -> bool:
    return is_factory(model) or Path(str(model)).suffix.lower() == ".pt2"


def require_torch():
    """Import torch, or raise the one-line error that names the pip command."""
    try:
        import torch
    except ImportError:
        raise ModelError("building a PyTorch model needs PyTorch, which is not installed", hint=PIP_HINT) from None
    return torch


@dataclass
class TorchModel:
    """What the loader found: the exported program, its ONNX graph, the io specs and a reference runner."""

    program: Any  # torch.export.ExportedProgram
    onnx_model: Any  # onnx.ModelProto
    inputs: list[tuple[str, tuple[Optional[int], ...], str]]
    outputs: list[tuple[str, tuple[Optional[int], ...], str]]
    sha256: str
    params: int
    notes: list[str] = field(default_factory=list)
    runner: Any = None


def load_torch(model: str | Path, data: Path | None = None) -> TorchModel:
    """Load a .pt2 file or a factory and export it to ONNX.

    Raises:
        ModelError: PyTorch missing, a file or factory that does not load, a factory without --data
            to take the input's shape from, or an export that fails (the op and the module named).
    """
    torch = require_torch()
    notes: list[str] = []
    if is_factory(model):
        module, digest = _call_factory(str(model), torch)
        example = example_input(data, str(model))
        program, dynamic = _export(module, example, torch, str(model))
        if not dynamic:
            notes.append(f"the batch dimension could not be kept dynamic: fixed at {example.shape[0]} from --data")
    else:
        path = Path(model)
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: cannot load it as a torch.export program: {first_line(exc)}", hint="save it with torch.export.save(torch.export.export(model, args), 'model.pt2')") from None
        digest = sha256_file(path)
        fixed = _fixed_batch(program)
        if fixed is not None:
            notes.append(
                f"{path.name} was exported at a fixed batch of {fixed}: the ONNX artifact keeps it "
                "(export with dynamic_shapes={0: torch.export.Dim('batch')} to vary it)"
            )
    proto = to_onnx(program, str(model), torch)
    inputs, outputs = _specs(proto)
    params = int(sum(p.numel() for p in program.state_dict.values()))
    return TorchModel(program, proto, inputs, outputs, digest, params, notes, TorchRunner(program))


def factory_sha256(spec: str) -> str:
    """The identity of a factory's model: its spec and the bytes of its weights."""
    return _call_factory(spec, require_torch())[1]


def _call_factory(spec: str, torch):
    module_name, func_name = spec.split(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `edgepack build my_pkg.models:make_model` from the project's root
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"{spec}: cannot import the model factory: {first_line(exc)}", hint="name it as package.module:function, importable from here") from None
    try:
        module = factory()
    except Exception as exc:
        raise ModelError(f"{spec}: the factory raised {type(exc).__name__}: {first_line(exc)}", hint="call it in Python to see the whole error") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{spec}: the factory returned a {type(module).__name__}, not a torch.nn.Module", hint="return the model, e.g. `return Net().eval()`")
    module.eval()
    h = hashlib.sha256(spec.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return module, h.hexdigest()


def example_input(data: Path | None, spec: str) -> np.ndarray:
    """One sample of --data, batch first: the example input a factory's model is exported with."""
    if data is None:
        raise ModelError(f"{spec}: a model factory needs --data to know its input's shape and dtype", hint="pass --data FILE (.npz with x, or .npy)")
    data = Path(data)
    try:
        if data.suffix == ".npz":
            with np.load(data, allow_pickle=False) as z:
                key = "x" if "x" in z.files else "x_0"
                x = z[key][:1]
        elif data.suffix == ".npy":
            x = np.load(data, allow_pickle=False, mmap_mode="r")[:1]
        else:
            raise ModelError(f"{data}: a model factory takes its input's shape from an .npz or .npy file", hint="save the inputs as .npz (x, y), shaped as the model takes them (N, C, H, W)")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{data}: cannot read an example input: {first_line(exc)}", hint="save the inputs as .npz (x, y)") from None
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float64 else np.ascontiguousarray(x)


def _export(module, example: np.ndarray, torch, spec: str):
    """torch.export the module with a dynamic batch where it allows one, else at the example's shape."""
    args = (torch.from_numpy(np.ascontiguousarray(example)),)
    try:  # traced at batch 2: an example of batch 1 would pin the batch to 1
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        two = (torch.from_numpy(np.ascontiguousarray(np.concatenate([example, example]))),)
        return torch.export.export(module, two, dynamic_shapes=({0: batch},)), True
    except Exception:
        pass
    try:
        return torch.export.export(module, args), False
    except Exception as exc:
        raise ModelError(f"{spec}: torch.export cannot trace the model: {first_line(exc)[:300]}", hint="make forward() traceable by torch.export (see torch.export's error above)") from None


def to_onnx(program, what: str, torch):
    """The ExportedProgram as an ONNX ModelProto (dynamo exporter, onnxscript).

    Raises:
        ModelError: an op the exporter cannot lower: the op, the module it is in, and that no target
            takes the model (every target builds from the ONNX export).
    """
    import warnings

    from edgepack.quiet import quiet

    try:
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, dynamo=True, verbose=False, optimize=True)
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        op = failed_op(text)
        module = module_of(program, op) if op else None
        where = f" in module {module}" if module else ""
        raise ModelError(
            f"{what}: PyTorch's ONNX exporter cannot lower op {op or '?'}{where}, so no edgepack target can take the model "
            "(every target builds from the ONNX export)",
            hint="replace the op in forward() with ops ONNX has, or register an ONNX function for it (torch.onnx docs: custom operators)",
        ) from None
    return onnx_program.model_proto


def failed_op(message: str) -> str | None:
    """The op named in the exporter's error: `No ONNX function found for <OpOverload(op='prims.erf_inv', ...)>`."""
    for pattern in (r"OpOverload\(op='([\w.]+)'", r"target=torch\.ops\.([\w.]+?)\.default", r"((?:aten|prims)[.:]+[\w]+)"):
        found = re.search(pattern, message)
        if found:
            return found.group(1)
    return None


def module_of(program, op: str) -> str | None:
    """The module path (and class) of the first call of OP in the program: `pre.1 (Odd)`."""
    want = op.split(".")[-1].replace("_", "")
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        parts = str(node.target).split(".")
        name = parts[1] if len(parts) > 1 else parts[0]
        if name.replace("_", "") == want:
            stack = node.meta.get("nn_module_stack") or {}
            if not stack:
                return None
            path, cls = list(stack.values())[-1]
            return f"{path or '(top)'} ({str(getattr(cls, '__name__', cls)).rsplit('.', 1)[-1]})"
    return None


def _specs(proto):
    from edgepack.model.onnx_graph import graph_inputs, value_spec

    inputs = [value_spec(v) for v in graph_inputs(proto)]
    outputs = [value_spec(v) for v in proto.graph.output]
    return [(n, s, d) for n, s, _, d in inputs], [(n, s, d) for n, s, _, d in outputs]


def source_names(proto) -> dict[str, str]:
    """ONNX node name -> the PyTorch module path it came from (`backbone.layer3.0.conv2`), where the exporter recorded it."""
    names = {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if scopes:
            path = [s.strip(" '\"") for s in scopes.strip("[]").split(",")]
            module = path[-2] if len(path) >= 2 else ""  # the last scope is the op itself (conv2d, view)
            if module:
                names[node.name] = module
    return names


class TorchRunner:
    """Run the exported program in PyTorch on the CPU: float inputs in, float outputs out (the build's reference)."""

    def __init__(self, program):
        self.module = program.module()
        self.fixed = _fixed_batch(program)

    def predict(self, xs: list[np.ndarray], input_names=None, output_names=None) -> list[np.ndarray]:
        import torch

        n = len(xs[0])
        step = self.fixed or BATCH
        chunks = []
        with torch.no_grad():
            for start in range(0, n, step):
                out = self.module(*[torch.from_numpy(np.ascontiguousarray(x[start : start + step])) for x in xs])
                out = out if isinstance(out, (list, tuple)) else [out]
                chunks.append([o.detach().cpu().numpy() for o in out])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _fixed_batch(program) -> int | None:
    """The batch size an ExportedProgram was traced at, where its first input's batch is not symbolic."""
    user = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if val is not None and len(val.shape) and isinstance(val.shape[0], int):
                return int(val.shape[0])
            return None
    return None
