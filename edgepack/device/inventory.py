"""The device inventory: named devices kept in a YAML file (``devices.yaml``).

The default file is ``<user config dir>/devices.yaml``; every function also takes an explicit
file. A device named ``local`` always exists without being stored: it means "this machine, a
subprocess". The file looks like::

    devices:
      pi4:                      # the device name
        host: 192.168.1.20      # an address, a host name, or a ~/.ssh/config alias
        user: pi
        key: ~/.ssh/id_ed25519
        target: raspberry-pi-4
    groups:                     # optional: named sets of devices, for `bench --device lab`
      lab: [pi4, orin]

Edits keep the file's comments (ruamel.yaml round-trip) and are written atomically.
"""

from __future__ import annotations

import difflib
import io
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from edgepack.atomic import write_atomic
from edgepack.errors import DeviceError

LOCAL = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = ("devices", "groups")


def config_dir() -> Path:
    """Return edgepack's user configuration directory (it may not exist yet)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("edgepack"))


def default_inventory_path() -> Path:
    """Return the default inventory file, ``<user config dir>/devices.yaml``."""
    return config_dir() / "devices.yaml"


def local_workdir() -> Path:
    """Return the working directory of the built-in ``local`` device."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgepack")) / "local-device"


class Device(BaseModel):
    """One device edgepack can push to and run on."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name used on the command line.")
    host: str = Field(description="Address, host name, or a ~/.ssh/config alias.")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port; ~/.ssh/config's or 22 when unset.")
    user: str | None = Field(None, description="Login user; ~/.ssh/config's or the local user when unset.")
    key: str | None = Field(None, description="Private key file; ssh-agent and default keys when unset.")
    python: str = Field("python3", description="The Python interpreter on the device.")
    workdir: str = Field(".cache/edgepack", description="Working directory on the device, relative to the login home.")
    target: str | None = Field(None, description="Default target profile for this device.")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds to wait for connect, banner and auth.")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a device name is letters, digits, '.', '_' and '-', starting with a letter or digit")
        return value

    @field_validator("host", "python", "workdir")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def is_local(self) -> bool:
        """True for the built-in ``local`` device (this machine, a subprocess)."""
        return self.name == LOCAL

    def describe(self) -> str:
        """Return ``user@host:port`` as far as the inventory knows it."""
        if self.is_local:
            return "this machine"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def local_device() -> Device:
    """Return the built-in ``local`` device."""
    return Device(name=LOCAL, host="localhost", python=sys.executable, workdir=str(local_workdir()))


def make_device(**fields: Any) -> Device:
    """Build a Device from user input, turning validation errors into one clear DeviceError.

    Raises:
        DeviceError: a field has a bad value.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    if isinstance(fields.get("key"), Path):
        fields["key"] = str(fields["key"])
    try:
        return Device.model_validate(fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'device'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise DeviceError(
            f"invalid device '{fields.get('name', '?')}': {problems[0]}",
            hint="fix the value and run the command again",
            details=problems[1:],
        ) from None


class Inventory:
    """The devices in one inventory file (plus the built-in ``local`` device)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_inventory_path()
        self._doc = self._read()
        self._devices = self._validate(self._doc)
        self._groups = self._validate_groups(self._doc, self._devices)

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> CommentedMap:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return CommentedMap()
        except OSError as exc:
            raise DeviceError(f"{self.path}: cannot read the device inventory: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DeviceError(
                f"{self.path}:{line}: the device inventory is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                hint="save the file as UTF-8, or move it away and add the devices again with `edgepack devices add`",
            ) from None
        try:
            doc = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{self.path}:{mark.line + 1}:{mark.column + 1}" if mark else str(self.path)
            problem = exc.problem or exc.context or "invalid YAML"
            raise DeviceError(f"{where}: YAML syntax error: {problem}", hint="fix the YAML syntax at that line") from None
        except ReaderError as exc:  # a control character YAML does not allow
            before = text[: exc.position]
            where = f"{self.path}:{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"
            char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
            raise DeviceError(
                f"{where}: character {char} is not allowed in YAML ({exc.reason})",
                hint="remove that character from the file",
            ) from None
        except YAMLError as exc:
            raise DeviceError(f"{self.path}: cannot read the device inventory: {exc}", hint="fix the YAML") from None
        if doc is None:
            return CommentedMap()
        if not isinstance(doc, CommentedMap):
            raise DeviceError(
                f"{self.path}:1:1: the device inventory must be a mapping with a 'devices' key",
                hint="start the file with `devices:`",
            )
        return doc

    def _validate(self, doc: CommentedMap) -> dict[str, Device]:
        for key in doc:
            if key not in _TOP_KEYS:
                line, col = _position(doc, key)
                close = difflib.get_close_matches(str(key), list(_TOP_KEYS), n=1, cutoff=0.6)
                raise DeviceError(
                    f"{self.path}:{line}:{col}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                    hint="the inventory has two top-level keys, `devices` and (optional) `groups`",
                )
        entries = doc.get("devices")
        if entries is None:
            return {}
        if not isinstance(entries, CommentedMap):
            line, col = _position(doc, "devices")
            raise DeviceError(f"{self.path}:{line}:{col}: devices: must be a mapping of device names to settings")
        devices: dict[str, Device] = {}
        for name, fields in entries.items():
            line, col = _position(entries, name)
            if fields is None:
                fields = {}
            if not isinstance(fields, dict):
                raise DeviceError(f"{self.path}:{line}:{col}: devices.{name}: must be a mapping of settings")
            if "name" in fields:
                raise DeviceError(
                    f"{self.path}:{line}:{col}: devices.{name}: the device's name is its key; remove `name:`"
                )
            if str(name) == LOCAL:
                raise DeviceError(
                    f"{self.path}:{line}:{col}: devices.{LOCAL}: '{LOCAL}' is the built-in device and cannot be redefined",
                    hint="rename this device",
                )
            try:
                devices[str(name)] = Device.model_validate({"name": str(name), **dict(fields)})
            except ValidationError as exc:
                err = exc.errors()[0]
                field = str(err["loc"][0]) if err["loc"] else ""
                fline, fcol = _position(fields, field) if field in fields else (line, col)
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(field, list(Device.model_fields), n=1, cutoff=0.6)
                    message = f"unknown key '{field}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                raise DeviceError(
                    f"{self.path}:{fline}:{fcol}: devices.{name}.{field}: {message}".replace(f".{name}.:", f".{name}:"),
                    hint="fix the device entry; `edgepack devices add --help` lists every setting",
                ) from None
        return devices

    def _validate_groups(self, doc: CommentedMap, devices: dict[str, Device]) -> dict[str, list[str]]:
        entries = doc.get("groups")
        if entries is None:
            return {}
        if not isinstance(entries, CommentedMap):
            line, col = _position(doc, "groups")
            raise DeviceError(f"{self.path}:{line}:{col}: groups: must be a mapping of group names to lists of devices")
        known = [LOCAL, *devices]
        groups: dict[str, list[str]] = {}
        for name, members in entries.items():
            line, col = _position(entries, name)
            where = f"{self.path}:{line}:{col}: groups.{name}"
            if not _NAME.match(str(name)):
                raise DeviceError(f"{where}: a group name is letters, digits, '.', '_' and '-', starting with a letter or digit")
            if str(name) in known:
                raise DeviceError(f"{where}: '{name}' is already a device's name", hint="give the group another name")
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise DeviceError(f"{where}: must be a list of device names, such as [pi4, orin]")
            for member in members:
                if member not in known:
                    close = difflib.get_close_matches(member, known, n=1, cutoff=0.5)
                    raise DeviceError(
                        f"{where}: unknown device '{member}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                        hint="a group lists devices defined under `devices:`",
                    )
            groups[str(name)] = list(dict.fromkeys(members))
        return groups

    # -- queries ---------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        """Return every device, the built-in ``local`` first, then the stored ones by name."""
        return [local_device()] + [self._devices[n] for n in sorted(self._devices)]

    def names(self) -> list[str]:
        """Return every device name, ``local`` included."""
        return [LOCAL] + sorted(self._devices)

    def get(self, name: str) -> Device:
        """Return the device NAME.

        Raises:
            DeviceError: no device has that name (with the closest names as a hint).
        """
        if name == LOCAL:
            return local_device()
        try:
            return self._devices[name]
        except KeyError:
            raise self._unknown(name) from None

    def __contains__(self, name: object) -> bool:
        return name == LOCAL or name in self._devices

    def groups(self) -> dict[str, list[str]]:
        """Return every group: its name and its device names, in the file's order."""
        return {name: list(members) for name, members in self._groups.items()}

    def resolve(self, names: list[str]) -> list[str]:
        """Expand NAMES (devices or groups) into device names, each once, in the order given.

        Raises:
            DeviceError: a name is neither a device nor a group (with the closest names as a hint).
        """
        out: list[str] = []
        for name in names:
            if name in self._groups:
                out.extend(self._groups[name])
            elif name in self:
                out.append(name)
            else:
                raise self._unknown(name)
        return list(dict.fromkeys(out))

    def _unknown(self, name: str) -> DeviceError:
        close = difflib.get_close_matches(name, self.names() + list(self._groups), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgepack devices list` to see the devices"
        return DeviceError(f"unknown device '{name}' (in {self.path})", hint=hint)

    # -- edits -----------------------------------------------------------------------------

    def add(self, device: Device) -> None:
        """Store DEVICE and write the file.

        Raises:
            DeviceError: the name is ``local`` or already taken.
        """
        if device.is_local:
            raise DeviceError(
                f"'{LOCAL}' is the built-in device (this machine) and cannot be added",
                hint="choose another name",
            )
        if device.name in self._devices:
            raise DeviceError(
                f"a device named '{device.name}' already exists ({self._devices[device.name].describe()})",
                hint=f"remove it first with `edgepack devices remove {device.name}`, or choose another name",
            )
        entries = self._doc.get("devices")
        if not isinstance(entries, CommentedMap):
            entries = CommentedMap()
            self._doc["devices"] = entries
        fields = device.model_dump(mode="json", exclude={"name"}, exclude_defaults=True)
        entries[device.name] = CommentedMap(fields)
        self._write()
        self._devices[device.name] = device

    def remove(self, name: str) -> Device:
        """Remove the device NAME, write the file, and return the removed device.

        Raises:
            DeviceError: NAME is ``local`` or unknown (with "did you mean").
        """
        if name == LOCAL:
            raise DeviceError(f"'{LOCAL}' is the built-in device and cannot be removed")
        if name not in self._devices:
            raise self._unknown(name)
        del self._doc["devices"][name]
        for group, members in list(self._groups.items()):  # a group may not name a device that is gone
            if name in members:
                members.remove(name)
                if members:
                    self._doc["groups"][group] = _flow(members)
                else:
                    del self._doc["groups"][group], self._groups[group]
        if "groups" in self._doc and not self._doc["groups"]:
            del self._doc["groups"]
        self._write()
        return self._devices.pop(name)

    def set_group(self, name: str, members: list[str]) -> list[str]:
        """Make group NAME the devices MEMBERS (replacing it if it exists), write the file, return the members.

        Raises:
            DeviceError: a bad group name, a name taken by a device, an unknown member, or no members.
        """
        if not _NAME.match(name):
            raise DeviceError(f"bad group name '{name}': use letters, digits, '.', '_' and '-', starting with a letter or digit")
        if name in self:
            raise DeviceError(f"'{name}' is already a device's name", hint="give the group another name")
        if not members:
            raise DeviceError(f"group '{name}' needs at least one device", hint=f"to delete it: edgepack devices group {name} --delete")
        for member in members:
            if member in self._groups:
                raise DeviceError(f"'{member}' is a group; a group lists devices", hint=f"list its devices instead: {' '.join(self._groups[member])}")
            if member not in self:
                raise self._unknown(member)
        members = list(dict.fromkeys(members))
        groups = self._doc.get("groups")
        if not isinstance(groups, CommentedMap):
            groups = CommentedMap()
            self._doc["groups"] = groups
        groups[name] = _flow(members)
        self._write()
        self._groups[name] = members
        return members

    def remove_group(self, name: str) -> list[str]:
        """Delete group NAME (its devices stay), write the file, and return its members.

        Raises:
            DeviceError: no such group.
        """
        if name not in self._groups:
            close = difflib.get_close_matches(name, list(self._groups), n=3, cutoff=0.5)
            raise DeviceError(
                f"no group '{name}' (in {self.path})",
                hint=f"did you mean {', '.join(close)}?" if close else "`edgepack devices list` shows the groups",
            )
        del self._doc["groups"][name]
        if not self._doc["groups"]:
            del self._doc["groups"]
        self._write()
        return self._groups.pop(name)

    def _write(self) -> None:
        """Write the document atomically (a temporary file beside it, then a rename).

        Raises:
            DeviceError: the file or its directory cannot be written (with the reason).
        """
        buf = io.StringIO()
        yaml = YAML(typ="rt")
        yaml.indent(mapping=2, sequence=4, offset=2)
        yaml.dump(self._doc, buf)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, buf.getvalue())  # keeps the file's mode; a new one gets 0666 less the umask
        except OSError as exc:
            raise DeviceError(
                f"{self.path}: cannot write the device inventory: {exc.strerror or exc}",
                hint="check that its directory exists and is writable, or give another file with --inventory FILE",
            ) from None


def _flow(items: list[str]) -> CommentedSeq:
    """A YAML list written on one line: ``[pi4, orin]``."""
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _position(doc: Any, key: Any) -> tuple[int, int]:
    try:
        line, col = doc.lc.key(key)
        return line + 1, col + 1
    except (KeyError, AttributeError, TypeError):
        return 1, 1


def load_inventory(path: Path | None = None) -> Inventory:
    """Read the inventory at PATH (default ``<user config dir>/devices.yaml``; a missing file is empty).

    Raises:
        DeviceError: the file is unreadable, not valid YAML, or has an invalid entry (file:line).
    """
    return Inventory(path)


def get_device(name: str, path: Path | None = None) -> Device:
    """Return the device NAME from the inventory at PATH.

    Raises:
        DeviceError: unknown name or a bad inventory.
    """
    return load_inventory(path).get(name)


def resolve_devices(names: list[str], path: Path | None = None) -> list[str]:
    """Expand NAMES (device names and group names) from the inventory at PATH into device names, each once.

    Raises:
        DeviceError: a name is neither a device nor a group, or a bad inventory.
    """
    return load_inventory(path).resolve(names)


def add_device(device: Device, path: Path | None = None) -> Inventory:
    """Add DEVICE to the inventory at PATH and return the inventory.

    Raises:
        DeviceError: duplicate name, the reserved name ``local``, or a bad inventory.
    """
    inventory = load_inventory(path)
    inventory.add(device)
    return inventory


def remove_device(name: str, path: Path | None = None) -> Device:
    """Remove the device NAME from the inventory at PATH and return it.

    Raises:
        DeviceError: unknown name (with "did you mean"), ``local``, or a bad inventory.
    """
    return load_inventory(path).remove(name)
