"""Read the YAML files users edit (target profiles, the device inventory): round-trip, bounded, one error style.

YAML aliases are refused before anything is built from the text: a few lines of nested aliases
(a "billion laughs" document) expand to gigabytes in whatever walks the result. Profiles share
settings through `extends:`, so no edgepack file needs an alias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.reader import ReaderError

from edgepack.errors import EdgepackError

MAX_DEPTH = 32  # profiles and inventories are a few levels deep; a deeper file is refused as it is read, in milliseconds


def load_roundtrip(text: str, path: Path, error: type[EdgepackError], what: str, alias_hint: str) -> Any:
    """Parse TEXT, read from PATH (WHAT it is, for messages), with comments and line numbers kept.

    Raises:
        ERROR: a syntax error or a character YAML forbids (with the line and column), or an alias
            (with ALIAS_HINT).
    """
    deep = _too_deep(text)
    if deep is not None:  # flow brackets counted on the text: the parser takes seconds over [[[[...]]]] before it errs
        line, col = deep
        raise error(f"{path}:{line}:{col}: the YAML nests deeper than {MAX_DEPTH} levels", hint=f"flatten it: {what} needs a few levels at most")
    try:
        depth = 0
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise error(f"{path}:{mark.line + 1}:{mark.column + 1}: the YAML nests deeper than {MAX_DEPTH} levels",
                                hint=f"flatten it: {what} needs a few levels at most")
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            if isinstance(event, AliasEvent):
                mark = event.start_mark
                raise error(f"{path}:{mark.line + 1}:{mark.column + 1}: YAML aliases (*{event.anchor}) are not allowed in {what}", hint=alias_hint)
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise error(f"{where}: YAML syntax error: {problem}", hint="fix the YAML syntax at that line") from None
    except ReaderError as exc:  # a control character YAML does not allow
        before = text[: exc.position]
        where = f"{path}:{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise error(f"{where}: character {char} is not allowed in YAML ({exc.reason})", hint="remove that character from the file") from None
    except YAMLError as exc:
        raise error(f"{path}: cannot read {what}: {exc}", hint="fix the YAML") from None
    except RecursionError:
        raise error(f"{path}: cannot read {what}: its YAML nests too deep", hint=f"flatten it: {what} needs a few levels at most") from None


def _too_deep(text: str) -> tuple[int, int] | None:
    """Where TEXT's flow brackets ([ and { outside quotes and comments) first nest past MAX_DEPTH, or None."""
    depth, line, col, quote, comment, prev = 0, 1, 0, "", False, "\n"
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, comment = line + 1, 0, False  # a quoted scalar may span lines: QUOTE stays
        elif comment:
            pass
        elif quote:
            if ch == quote and not (quote == '"' and prev == "\\"):
                quote = ""
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, col
        elif ch in "]}":
            depth = max(depth - 1, 0)
        prev = ch
    return None
