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
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from edgepack.device.inventory_file import flow, position, read_document, write_document
from edgepack.device.spec import LOCAL, NAME_RE, Device, config_dir, local_device
from edgepack.errors import DeviceError

_TOP_KEYS = ("devices", "groups")


def default_inventory_path() -> Path:
    """Return the default inventory file, ``<user config dir>/devices.yaml``."""
    return config_dir() / "devices.yaml"


KEY_HEADERS = (b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----BEGIN RSA PRIVATE KEY-----", b"-----BEGIN EC PRIVATE KEY-----",
               b"-----BEGIN DSA PRIVATE KEY-----", b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def check_private_key(path: Path) -> None:
    """Check that PATH is a readable private key file (OpenSSH or PEM), as `--key` must name.

    Raises:
        DeviceError: no such file, unreadable, or not a private key (a public key, say).
    """
    shown = Path(path).expanduser()
    try:
        head = shown.read_bytes()[:4096].lstrip()
    except FileNotFoundError:
        raise DeviceError(f"--key {path}: no such file", hint="give the private key's path, e.g. --key ~/.ssh/id_ed25519") from None
    except IsADirectoryError:
        raise DeviceError(f"--key {path}: a directory, not a key file", hint="give the private key's path, e.g. --key ~/.ssh/id_ed25519") from None
    except OSError as exc:
        raise DeviceError(f"--key {path}: cannot read it: {exc.strerror}", hint="check the file's permissions") from None
    if not head.startswith(KEY_HEADERS):
        public = head.startswith((b"ssh-", b"ecdsa-")) or shown.suffix == ".pub"
        raise DeviceError(
            f"--key {path}: " + ("a public key: --key takes the private one" if public else "not a private key file (OpenSSH or PEM)"),
            hint="give the private key's path, e.g. --key ~/.ssh/id_ed25519" + (" (without .pub)" if public else ""),
        )


def make_device(**fields: Any) -> Device:
    """Build a Device from user input, turning validation errors into one clear DeviceError.

    Raises:
        DeviceError: a field has a bad value.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("key") is not None:
        key = str(fields["key"])
        # Stored as typed where it is anchored (~/.ssh/id, /keys/id); a relative path only worked from
        # the directory it was typed in, so it is stored absolute.
        fields["key"] = key if key.startswith("~") or Path(key).is_absolute() else str(Path(key).absolute())
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
        self._doc = read_document(self.path)
        self._devices = self._validate(self._doc)
        self._groups = self._validate_groups(self._doc, self._devices)

    # -- reading ---------------------------------------------------------------------------

    def _validate(self, doc: CommentedMap) -> dict[str, Device]:
        for key in doc:
            if key not in _TOP_KEYS:
                line, col = position(doc, key)
                close = difflib.get_close_matches(str(key), list(_TOP_KEYS), n=1, cutoff=0.6)
                raise DeviceError(
                    f"{self.path}:{line}:{col}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                    hint="the inventory has two top-level keys, `devices` and (optional) `groups`",
                )
        entries = doc.get("devices")
        if entries is None:
            return {}
        if not isinstance(entries, CommentedMap):
            line, col = position(doc, "devices")
            raise DeviceError(f"{self.path}:{line}:{col}: devices: must be a mapping of device names to settings")
        devices: dict[str, Device] = {}
        for name, fields in entries.items():
            line, col = position(entries, name)
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
                fline, fcol = position(fields, field) if field in fields else (line, col)
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
            line, col = position(doc, "groups")
            raise DeviceError(f"{self.path}:{line}:{col}: groups: must be a mapping of group names to lists of devices")
        known = [LOCAL, *devices]
        groups: dict[str, list[str]] = {}
        for name, members in entries.items():
            line, col = position(entries, name)
            where = f"{self.path}:{line}:{col}: groups.{name}"
            if not NAME_RE.match(str(name)):
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
        write_document(self.path, self._doc)
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
                    self._doc["groups"][group] = flow(members)
                else:
                    del self._doc["groups"][group], self._groups[group]
        if "groups" in self._doc and not self._doc["groups"]:
            del self._doc["groups"]
        write_document(self.path, self._doc)
        return self._devices.pop(name)

    def set_group(self, name: str, members: list[str]) -> list[str]:
        """Make group NAME the devices MEMBERS (replacing it if it exists), write the file, return the members.

        Raises:
            DeviceError: a bad group name, a name taken by a device, an unknown member, or no members.
        """
        if not NAME_RE.match(name):
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
        groups[name] = flow(members)
        write_document(self.path, self._doc)
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
        write_document(self.path, self._doc)
        return self._groups.pop(name)

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
