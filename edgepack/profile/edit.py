"""Create and edit the user's profile files, keeping their comments and key order."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from edgepack.atomic import cannot_write, write_atomic
from edgepack.errors import ProfileError
from edgepack.profile.store import Catalog, LoadedProfile, is_builtin_dir, own_profile_dir, read_yaml

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def parse_assignment(text: str) -> tuple[tuple[str, ...], Any]:
    """Split `a.b.c=VALUE` into a key path and a YAML-typed value (`20` -> 20, `[a, b]` -> list)."""
    key, sep, raw = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise ProfileError(f"'{text}' is not KEY=VALUE", hint="write dotted keys, e.g. build.precision=fp16")
    try:
        value = YAML(typ="safe").load(raw) if raw.strip() else None
    except YAMLError:
        raise ProfileError(f"'{text}': the value is not valid YAML", hint="quote it, e.g. description='my board'") from None
    return path, value


def set_values(catalog: Catalog, name: str, assignments: list[str]) -> LoadedProfile:
    """Apply KEY=VALUE assignments to the user's profile NAME in place.

    The result is validated before anything is written; an invalid result leaves the file as it was.

    Raises:
        ProfileError: unknown profile, a built-in profile, a malformed assignment or an invalid result.
    """
    source = catalog.find(name)
    if source.builtin:
        raise ProfileError(
            f"'{name}' is a built-in profile and is not edited in place",
            hint=f"make your own copy: edgepack targets new my-{name} --from {name}",
        )
    doc = read_yaml(source.path)
    for path, value in map(parse_assignment, assignments):
        node = doc
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = CommentedMap()
                node[part] = child
            node = child
        node[path[-1]] = value
    catalog.overlay[source.path] = doc
    try:
        loaded = catalog.load(name)
    except ProfileError as exc:
        exc.hint = f"{source.path} was not changed; fix the value and run the command again"
        raise
    finally:
        catalog.overlay.pop(source.path, None)
    buf = io.StringIO()
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never re-wrap the user's lines
    yaml.dump(doc, buf)
    target = source.path.resolve()  # a linked profile is written through its link, the link kept
    try:
        write_atomic(target, buf.getvalue())
    except OSError as exc:
        raise cannot_write(source.path, exc, "the profile") from None
    return loaded


def new_profile(catalog: Catalog, name: str, base: str, directory: Path | None = None) -> Path:
    """Write DIRECTORY/NAME.yaml: a commented profile that extends BASE.

    DIRECTORY defaults to ``./targets/``, or the user's profile directory where ``./targets/`` is
    the built-in folder.

    Raises:
        ProfileError: a bad name, an unknown base, a file that already exists, or DIRECTORY is the built-in folder.
    """
    if not NAME_PATTERN.match(name):
        raise ProfileError(f"'{name}' is not a valid profile name", hint="use lower-case letters, digits, '-', '_' and '.'")
    if directory is None:
        directory = own_profile_dir()
    elif is_builtin_dir(directory):
        raise ProfileError(
            f"{directory} is the folder of edgepack's built-in profiles; a profile of yours is not written there",
            hint=f"leave out --dir (it writes to {own_profile_dir()}) or name another folder",
        )
    parent = catalog.load(base)
    path = Path(directory) / f"{name}.yaml"
    if path.exists():
        raise ProfileError(f"{path} already exists", hint=f"edit it, or use `edgepack targets set {name} KEY=VALUE`")
    resolved = parent.profile.model_dump(mode="json", exclude_none=True, exclude={"name", "extends", "family", "description"})
    commented = "".join(f"# {line}\n" for line in block_yaml(resolved).splitlines())
    head = {"name": name, "extends": base, "description": f"{parent.profile.description or base} (customised)"}
    text = (
        f"# {name}: a target profile that extends {base}.\n"
        "# Keys written here override the base; everything else comes from it.\n"
        f"#   edgepack targets show {name} --resolved    the profile in full\n"
        f"#   edgepack targets set {name} KEY=VALUE     edit this file, keeping its comments\n"
        f"{block_yaml(head)}\n"
        f"# The values {base} gives; uncomment a key and change it to override:\n"
        f"{commented}"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, exclusive=True)
    except OSError as exc:
        raise cannot_write(path, exc, "the profile") from None
    return path


def block_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML in its own key order, with no line wrapping."""
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()
