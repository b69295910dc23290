"""What edgepack knows about one device (`Device`), and the built-in ``local`` device.

The inventory (`edgepack.device.inventory`) stores devices; the transports read their settings.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOCAL = "local"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def config_dir() -> Path:
    """Return edgepack's user configuration directory (it may not exist yet)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("edgepack"))


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
    jump: str | None = Field(
        None,
        description="Jump hosts on the way, as ssh -J takes them: [user@]host[:port] or ~/.ssh/config aliases, "
        "comma-separated, the first connected first; 'none' ignores ProxyJump/ProxyCommand in ~/.ssh/config. "
        "Unset: ~/.ssh/config's ProxyJump or ProxyCommand, if any.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("a device name is letters, digits, '.', '_' and '-', starting with a letter or digit")
        return value

    @field_validator("host", "python", "workdir")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("jump")
    @classmethod
    def _jump_hosts_parse(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.lower() == "none":
            return "none"
        parse_jumps(value)
        return ",".join(part.strip() for part in value.split(","))

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
        via = f" via {self.jump}" if self.jump and self.jump != "none" else ""
        return f"{user}{self.host}{port}{via}"


@dataclass(frozen=True)
class JumpHost:
    """One jump host as written in ProxyJump or --jump: ``[user@]host[:port]``."""

    text: str  # as written
    host: str
    user: str | None = None
    port: int | None = None


# A jump host's name and user: nothing a shell (a ProxyCommand's, a gateway's) would read as syntax.
_JUMP_HOST = re.compile(r"^[A-Za-z0-9._:%-]+$")
_JUMP_USER = re.compile(r"^[A-Za-z0-9._-]+$")


def parse_jumps(text: str) -> list[JumpHost]:
    """Parse a ProxyJump value (``gw``, ``pi@gw:2222,inner``, ``ssh://gw:22``) into jump hosts, first connected first.

    Raises:
        ValueError: an empty entry, a bad port, a host with spaces or starting with '-'.
    """
    hosts = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty jump host in '{text}': expected [user@]host[:port], comma-separated for a chain")
        rest = item[len("ssh://"):] if item.startswith("ssh://") else item
        user, at, hostport = rest.rpartition("@")
        host, port = hostport, None
        if hostport.startswith("["):  # [IPv6]:port
            host, _, after = hostport[1:].partition("]")
            if after and not after.startswith(":"):
                raise ValueError(f"bad jump host '{item}': expected [address]:port")
            port = after[1:] or None
        elif hostport.count(":") == 1:
            host, port = hostport.split(":")
        if not host or (at and not user) or host.startswith("-") or not _JUMP_HOST.match(host) or (user and not _JUMP_USER.match(user)):
            raise ValueError(f"bad jump host '{item}': expected [user@]host[:port], comma-separated for a chain")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"bad jump host '{item}': the port must be a number from 1 to 65535")
        hosts.append(JumpHost(item, host, user or None, int(port) if port else None))
    return hosts


def local_device() -> Device:
    """Return the built-in ``local`` device."""
    return Device(name=LOCAL, host="localhost", python=sys.executable, workdir=str(local_workdir()))
