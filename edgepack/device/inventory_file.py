"""The inventory file on disk: YAML read and written round-trip, so its comments are kept.

Reading errors name the file, line and column; writes are atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from edgepack.atomic import write_atomic
from edgepack.errors import DeviceError
from edgepack.yamlfile import load_roundtrip


def read_document(path: Path) -> CommentedMap:
    """Return the inventory document at PATH, comments kept; an empty one when the file is missing.

    Raises:
        DeviceError: the file is unreadable, not UTF-8, not valid YAML, or not a mapping (file:line:col).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return CommentedMap()
    except OSError as exc:
        raise DeviceError(f"{path}: cannot read the device inventory: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DeviceError(
            f"{path}:{line}: the device inventory is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            hint="save the file as UTF-8, or move it away and add the devices again with `edgepack devices add`",
        ) from None
    doc = load_roundtrip(text, path, DeviceError, "the device inventory", "write the value out under each device")
    if doc is None:
        return CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise DeviceError(
            f"{path}:1:1: the device inventory must be a mapping with a 'devices' key",
            hint="start the file with `devices:`",
        )
    return doc


def write_document(path: Path, doc: CommentedMap) -> None:
    """Write DOC to PATH atomically (a temporary file beside it, then a rename).

    Raises:
        DeviceError: the file or its directory cannot be written (with the reason).
    """
    buf = io.StringIO()
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.dump(doc, buf)
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)  # a linked inventory is written through its link
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())  # keeps the file's mode; a new one gets 0666 less the umask
    except OSError as exc:
        raise DeviceError(
            f"{path}: cannot write the device inventory: {exc.strerror or exc}",
            hint="check that its directory exists and is writable, or give another file with --inventory FILE",
        ) from None


def flow(items: list[str]) -> CommentedSeq:
    """Return a YAML list written on one line: ``[pi4, orin]``."""
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def position(doc: Any, key: Any) -> tuple[int, int]:
    """Return the 1-based (line, column) of KEY in the YAML mapping DOC, (1, 1) when it is not known."""
    try:
        line, col = doc.lc.key(key)
        return line + 1, col + 1
    except (KeyError, AttributeError, TypeError):
        return 1, 1
