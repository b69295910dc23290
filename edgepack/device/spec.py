"""What edgepack knows about one device (`Device`), and the built-in ``local`` device.

The inventory (`edgepack.device.inventory`) stores devices; the transports read their settings.
"""

from __future__ import annotations

import re
import sys
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
