"""Open the transport for a device: `LocalTransport` for ``local``, `SshTransport` for the others."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgepack.device.cancel import check_stop

if TYPE_CHECKING:
    from edgepack.device.spec import Device
    from edgepack.device.transport import Transport


def open_transport(
    device: Device | str,
    *,
    inventory: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Transport:
    """Connect to DEVICE (a Device, or a name looked up in the inventory) and return its transport.

    The built-in ``local`` device gives an `edgepack.device.local.LocalTransport`; every other
    device an `edgepack.device.ssh.SshTransport`, already connected.

    Raises:
        DeviceError: unknown device, or the device cannot be reached or trusted.
    """
    from edgepack.device.inventory import get_device
    from edgepack.device.spec import LOCAL

    if isinstance(device, str):
        device = get_device(device, inventory) if device != LOCAL else get_device(LOCAL)
    if device.is_local:
        from edgepack.device.local import LocalTransport

        return LocalTransport(name=device.name, python=device.python, workdir=device.workdir)
    from edgepack.device.ssh import SshTransport

    check_stop(device.name)
    if progress:
        progress(f"connecting to {device.name} ({device.describe()})")
    transport = SshTransport(device)
    try:
        transport.connect()
    except BaseException:
        transport.close()
        raise
    return transport
