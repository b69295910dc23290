"""Find target profiles, resolve `extends`, and validate them with errors that point at the YAML.

Search order: ``./targets/``, then the user config directory, then the built-ins shipped with
edgepack. The first file with a name wins; later ones are shadowed.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap

from edgepack.errors import ProfileError
from edgepack.profile.schema import Conflict, Profile
from edgepack.yamlfile import load_roundtrip

PACKAGE_DIR = Path(__file__).resolve().parent.parent
Location = tuple[Path, int, int]  # file, 1-based line, 1-based column


def builtin_dir() -> Path:
    """Return the directory of the built-in profiles (inside the wheel, or the source tree)."""
    shipped = PACKAGE_DIR / "_builtin_targets"
    return shipped if shipped.is_dir() else PACKAGE_DIR.parent / "targets"


def user_dir() -> Path:
    """Return the user's own profile directory (``<user config dir>/targets``)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("edgepack")) / "targets"


def own_profile_dir() -> Path:
    """Return where a new profile of the user's goes: ``./targets/``, or the user directory where
    ``./targets/`` is the built-in folder (run from a source checkout), so a user's profiles
    never land among the shipped ones."""
    project = Path.cwd() / "targets"
    if project.resolve() == builtin_dir().resolve():
        return user_dir()
    return project


def is_builtin_dir(path: Path) -> bool:
    """Whether PATH is the folder of the built-in profiles."""
    return Path(path).resolve() == builtin_dir().resolve()


def is_profile_path(name: str) -> bool:
    """Whether NAME is written as a file path (``./lab/pi.yaml``, ``targets/pi-tuned.yaml``) rather than a profile's name."""
    return "/" in name or "\\" in name or name.endswith((".yaml", ".yml"))


@dataclass(frozen=True)
class SearchDir:
    origin: str  # "project", "user" or "builtin"
    path: Path


def default_search_dirs() -> list[SearchDir]:
    """Return the profile directories in search order, without duplicates."""
    dirs = [
        SearchDir("project", Path.cwd() / "targets"),
        SearchDir("user", user_dir()),
        SearchDir("builtin", builtin_dir()),
    ]
    seen: set[Path] = set()
    unique = []
    for d in reversed(dirs):  # the built-in origin wins when ./targets *is* the built-in dir
        real = d.path.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(d)
    return list(reversed(unique))


@dataclass(frozen=True)
class ProfileSource:
    name: str
    path: Path
    origin: str

    @property
    def builtin(self) -> bool:
        return self.origin == "builtin"


@dataclass
class LoadedProfile:
    profile: Profile
    source: ProfileSource
    chain: list[Path] = field(default_factory=list)  # the file, then its bases


def read_yaml(path: Path) -> CommentedMap:
    """Read one profile file as a round-trip mapping (comments and line numbers kept)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file", hint="check the path") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text file (not UTF-8)", hint="a target profile is YAML text") from None
    doc = load_roundtrip(text, path, ProfileError, "a target profile", "write the value out; profiles share settings with `extends: BASE`")
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ProfileError(f"{path}:1:1: a target profile must be a mapping of keys to values")
    return doc


class Catalog:
    """The profiles visible from a list of search directories."""

    def __init__(self, dirs: list[SearchDir] | None = None):
        self.dirs = default_search_dirs() if dirs is None else dirs
        # Documents to use instead of what is on disk: lets an edit be validated before it is written.
        self.overlay: dict[Path, CommentedMap] = {}

    def read(self, path: Path) -> CommentedMap:
        return self.overlay[path] if path in self.overlay else read_yaml(path)

    def candidates(self) -> dict[str, list[ProfileSource]]:
        """Return every profile file by name, in search order (the first one wins)."""
        found: dict[str, list[ProfileSource]] = {}
        for d in self.dirs:
            if not d.path.is_dir():
                continue
            for path in sorted(d.path.glob("*.yaml")):
                found.setdefault(path.stem, []).append(ProfileSource(path.stem, path, d.origin))
        return found

    def sources(self) -> dict[str, ProfileSource]:
        """Return the winning file for every profile name, sorted by name."""
        return {name: srcs[0] for name, srcs in sorted(self.candidates().items())}

    def find(self, name: str, below: Path | None = None) -> ProfileSource:
        """Return the file for NAME (a profile's name, or the path of a profile file); with ``below``,
        only files that come after that one in the search."""
        if is_profile_path(name):
            return self.file_source(Path(name))
        candidates = self.candidates()
        options = candidates.get(name, [])
        if below is not None:
            paths = [s.path for s in options]
            options = options[paths.index(below) + 1 :] if below in paths else options
        if options:
            return options[0]
        close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgepack targets list` to see the targets"
        raise ProfileError(f"unknown target '{name}'", hint=hint)

    def load(self, name: str) -> LoadedProfile:
        """Find, resolve and validate the profile NAME (a name, or the path of a profile file)."""
        if is_profile_path(name):
            return self.load_path(Path(name))
        return self._load(self.find(name))

    def file_source(self, path: Path) -> ProfileSource:
        """The profile file at PATH, as a source (built-in where it lies among the built-ins).

        Raises:
            ProfileError: no such file."""
        if path.is_dir():
            raise ProfileError(f"{path}: a directory, not a profile file", hint="give the path of a .yaml file, or a target's name")
        if not path.is_file():
            raise ProfileError(f"{path}: no such file", hint="check the path, or give a target's name (`edgepack targets list`)")
        real = path.resolve()
        return ProfileSource(path.stem, real, "builtin" if real.parent == builtin_dir().resolve() else "project")

    def load_path(self, path: Path) -> LoadedProfile:
        """Resolve and validate the profile file at PATH; its bases are looked up next to it first."""
        source = self.file_source(Path(path))
        local = SearchDir(source.origin, source.path.parent)
        catalog = Catalog([local] + [d for d in self.dirs if d.path.resolve() != local.path])
        catalog.overlay = self.overlay  # an edit being validated applies here too
        return catalog._load(source)

    def resolved_data(self, source: ProfileSource) -> tuple[dict[str, Any], dict[tuple, Location], list[Path]]:
        """Merge SOURCE over its chain of bases; return the data, where each key came from, and the chain."""
        chain: list[ProfileSource] = []
        current: ProfileSource | None = source
        docs: list[CommentedMap] = []
        while current is not None:
            if current.path in [s.path for s in chain]:
                names = " -> ".join(str(s.path) for s in chain + [current])
                raise ProfileError(f"extends cycle: {names}", hint="remove `extends` from one of these files")
            chain.append(current)
            doc = self.read(current.path)
            docs.append(doc)
            base = doc.get("extends")
            if base is None:
                current = None
            elif not isinstance(base, str):
                line, col = _key_position(doc, "extends") or (1, 1)
                raise ProfileError(f"{current.path}:{line}:{col}: extends: must be the name of a profile")
            else:
                try:
                    current = self.find(base, below=current.path if base == current.name else None)
                except ProfileError as exc:
                    line, col = _key_position(doc, "extends") or (1, 1)
                    if base == current.name:
                        raise ProfileError(
                            f"{current.path}:{line}:{col}: extends: the profile extends itself, and no other '{base}' comes after it",
                            hint="extend another profile; a file may extend its own name only where it shadows one (a built-in, say)",
                        ) from None
                    raise ProfileError(
                        f"{current.path}:{line}:{col}: extends: base profile '{base}' not found", hint=exc.hint
                    ) from None

        merged: dict[str, Any] = {}
        where: dict[tuple, Location] = {}
        for src, doc in zip(reversed(chain), reversed(docs)):
            _merge(merged, doc, where, src.path, ())
        merged["name"] = source.name
        return merged, where, [s.path for s in chain]

    def _load(self, source: ProfileSource) -> LoadedProfile:
        data, where, chain = self.resolved_data(source)
        # The file name is the profile's name; a `name:` key, where written, must agree with it.
        own_doc = self.read(source.path)
        own = own_doc.get("name", source.name)
        if own != source.name:
            line, col = _key_position(own_doc, "name") or (1, 1)
            raise ProfileError(
                f"{source.path}:{line}:{col}: name: '{own}' does not match the file name '{source.name}'",
                hint=f"rename the file to {own}.yaml or set name: {source.name}",
            )
        data["name"] = source.name
        try:
            profile = Profile.model_validate(data)
        except ValidationError as exc:
            problems = [_describe(err, where, source.path) for err in exc.errors()]
            head = problems[0] if len(problems) == 1 else f"{source.path}: {len(problems)} problems in target profile '{source.name}'"
            raise ProfileError(
                head,
                hint="fix the profile; `edgepack targets schema` prints every key it may have",
                details=problems if len(problems) > 1 else [],
            ) from None
        return LoadedProfile(profile, source, chain)


def _key_position(doc: CommentedMap, key: str) -> tuple[int, int] | None:
    """Return the 1-based line and column of KEY in DOC; None for a key not read from a file."""
    try:
        line, col = doc.lc.key(key)
        return line + 1, col + 1
    except (KeyError, AttributeError, TypeError):
        return None


def _merge(into: dict, doc: Any, where: dict[tuple, Location], path: Path, prefix: tuple, parent: tuple[int, int] = (1, 1)) -> None:
    """Deep-merge DOC into INTO (mappings merge, everything else replaces), recording key locations.

    A key with no position of its own (set by `targets set`, not yet written) takes its parent's,
    so that an error about it points into the file being edited."""
    for key, value in doc.items():
        loc = prefix + (key,)
        pos = _key_position(doc, key) or parent
        where[loc] = (path, *pos)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, where, path, loc, pos)
        elif isinstance(value, dict):
            into[key] = {}
            _merge(into[key], value, where, path, loc, pos)
        else:
            into[key] = _plain(value)
            if isinstance(value, list):
                for i in range(len(value)):
                    try:
                        line, col = value.lc.item(i)
                        where[loc + (i,)] = (path, line + 1, col + 1)
                    except (AttributeError, KeyError, TypeError):
                        pass


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _describe(err: dict, where: dict[tuple, Location], top: Path) -> str:
    """Turn one pydantic error into `file:line:col: key.path: message (did you mean ...)`."""
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, Conflict):
        loc = loc + cause.at
    key = ".".join(str(p) for p in loc) or "(top level)"
    message = str(cause) if cause is not None else err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        message = f"unknown key '{loc[-1]}'"
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(Profile, loc[:-1]), n=1, cutoff=0.6)
        message += f" (did you mean '{close[0]}'?)" if close else f"; allowed keys: {', '.join(_fields_at(Profile, loc[:-1]))}"
    elif kind == "enum":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        close = difflib.get_close_matches(str(err.get("input")), choices, n=1, cutoff=0.5)
        message = f"unknown value '{err.get('input')}'"
        message += f" (did you mean '{close[0]}'?)" if close else ""
        message += f"; expected one of: {', '.join(choices)}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    file, line, col = _nearest(loc, where, top)
    return f"{file}:{line}:{col}: {key}: {message}"


def _nearest(loc: tuple, where: dict[tuple, Location], top: Path) -> Location:
    for n in range(len(loc), 0, -1):
        if loc[:n] in where:
            return where[loc[:n]]
    return (top, 1, 1)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Return the keys allowed at LOC inside MODEL (empty when LOC leaves the models)."""
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        nested = [a for a in (info.annotation, *typing.get_args(info.annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def load_target(name: str) -> Profile:
    """Find, resolve and validate the target profile NAME.

    Raises:
        ProfileError: unknown name, unreadable or invalid profile.
    """
    return Catalog().load(name).profile
