"""`edgepack devices`: keep the device inventory, trust hosts, and check what a device can run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgepack.cli.options import Inventory, Json
from edgepack.cli.render import console, plain

app = typer.Typer(help="Manage the devices edgepack deploys to and measures on.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Device name.", show_default=False)]


@app.command("add")
def add(
    name: NameArg,
    host: Annotated[str, typer.Option("--host", help="Address, host name or ~/.ssh/config alias.", show_default=False)],
    port: Annotated[Optional[int], typer.Option("--port", help="SSH port (default: ~/.ssh/config's, else 22).")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Login user (default: ~/.ssh/config's, else yours).")] = None,
    key: Annotated[Optional[Path], typer.Option("--key", metavar="FILE", help="Private key file (default: ssh-agent, ~/.ssh keys).")] = None,
    python: Annotated[Optional[str], typer.Option("--python", metavar="PATH", help="Python on the device [default: python3].")] = None,
    workdir: Annotated[Optional[str], typer.Option("--workdir", metavar="DIR", help="Working directory on the device, relative to the login home [default: .cache/edgepack].")] = None,
    target: Annotated[Optional[str], typer.Option("--target", metavar="T", help="Default target profile for this device.")] = None,
    connect_timeout: Annotated[Optional[float], typer.Option("--connect-timeout", metavar="S", help="Seconds to wait when connecting [default: 10].")] = None,
    jump: Annotated[Optional[str], typer.Option("--jump", "-J", metavar="HOST", help="Jump host(s) on the way, as ssh -J: [user@]host[:port] or a ~/.ssh/config alias, comma-separated for a chain; 'none' ignores ProxyJump/ProxyCommand in ~/.ssh/config [default: ~/.ssh/config's].")] = None,
    inventory: Inventory = None,
) -> None:
    """Add a device to the inventory."""
    from edgepack.device import inventory as inv
    from edgepack.device.ssh import check_route

    if key is not None:
        inv.check_private_key(key)
    device = inv.make_device(
        name=name, host=host, port=port, user=user, key=key, python=python,
        workdir=workdir, target=target, connect_timeout_s=connect_timeout, jump=jump,
    )
    check_route(device)
    store = inv.add_device(device, inventory)
    console.print(f"added device [bold]{plain(device.name)}[/] ({plain(device.describe())}) to {plain(store.path)}", highlight=False)
    console.print(f"next: `edgepack devices trust {plain(device.name)}`, then `edgepack devices check {plain(device.name)}`", highlight=False)


@app.command("list")
def list_(
    as_json: Json = False,
    inventory: Inventory = None,
) -> None:
    """List the devices, the built-in `local` one included."""
    from edgepack.device import inventory as inv


    store = inv.load_inventory(inventory)
    devices = store.devices()
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in devices], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"devices ({plain(store.path)})", title_justify="left")
    for col in ("name", "host", "port", "user"):
        table.add_column(col, no_wrap=True)
    table.add_column("jump", overflow="fold")
    for col in ("key", "python", "workdir", "target"):
        table.add_column(col, overflow="fold")
    for d in devices:
        table.add_row(
            plain(d.name),
            "this machine" if d.is_local else plain(d.host),
            "-" if d.is_local else str(d.port or "default"),
            plain(d.user or "-"),
            plain(d.jump or "-"),
            plain(d.key or "-"),
            plain(d.python),
            plain(d.workdir),
            plain(d.target or "-"),
        )
    console.print(table)
    for name, members in store.groups().items():
        console.print(f"group [bold]{plain(name)}[/]: {plain(', '.join(members))}", highlight=False)


@app.command("group")
def group(
    name: Annotated[str, typer.Argument(help="Group name.", show_default=False)],
    devices: Annotated[Optional[list[str]], typer.Argument(help="Its devices (replacing the group's list); none: show the group.", show_default=False)] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete the group (its devices stay).")] = False,
    inventory: Inventory = None,
) -> None:
    """Name a set of devices, to measure them all with `edgepack bench BUNDLE --device NAME`."""
    from edgepack.device import inventory as inv
    from edgepack.errors import DeviceError

    store = inv.load_inventory(inventory)
    if delete:
        if devices:
            raise DeviceError("--delete takes no device names", hint=f"edgepack devices group {name} --delete")
        members = store.remove_group(name)
        console.print(f"deleted group [bold]{plain(name)}[/] ({plain(', '.join(members))})", highlight=False)
    elif devices:
        members = store.set_group(name, devices)
        console.print(f"group [bold]{plain(name)}[/]: {plain(', '.join(members))} (in {plain(store.path)})", highlight=False)
    else:
        groups = store.groups()
        if name not in groups:
            store.remove_group(name)  # raises the "no group" error with its suggestions
        console.print(f"{plain(name)}: {plain(', '.join(groups[name]))}", highlight=False)


@app.command("remove")
def remove(name: NameArg, inventory: Inventory = None) -> None:
    """Remove a device from the inventory."""
    from edgepack.device import inventory as inv


    device = inv.remove_device(name, inventory)
    console.print(f"removed device [bold]{plain(device.name)}[/] ({plain(device.describe())})", highlight=False)


@app.command("trust")
def trust(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Trust the key without asking.")] = False,
    inventory: Inventory = None,
) -> None:
    """Fetch a device's SSH host key (and each jump host's on the way), show the fingerprint, and trust it."""
    from edgepack.device import inventory as inv
    from edgepack.device.ssh import HostKey, trust_route
    from edgepack.errors import DeviceError

    device = inv.get_device(name, inventory)
    if device.is_local:
        raise DeviceError("the local device needs no trust: it is this machine")

    def confirm(hk: HostKey) -> bool:
        console.print(f"{plain(hk.host)} ({plain(hk.role)}) offers {plain(hk.key_type)} key [bold]{plain(hk.fingerprint)}[/]", highlight=False)
        try:
            return typer.confirm("Trust this key?", default=False)
        except (typer.Abort, EOFError):  # no terminal to answer on (CI, a pipe), or Ctrl-D
            raise DeviceError(
                f"not trusting {hk.host}: no answer to 'Trust this key?' (is there a terminal?)",
                hint=f"check the fingerprint above on the device, then run `edgepack devices trust {name} --yes`",
            ) from None

    for hk in trust_route(device, yes=yes, confirm=confirm):
        role = "" if hk.via is None else f" ({plain(hk.role)})"
        if hk.status == "known":
            console.print(f"{plain(hk.host)}{role} is already trusted ({plain(hk.key_type)} {plain(hk.fingerprint)}, in {plain(hk.known_in)})", highlight=False)
        else:
            console.print(f"trusted {plain(hk.host)}{role}: {plain(hk.key_type)} {plain(hk.fingerprint)} (added to {plain(hk.known_in)})", highlight=False)


@app.command("check")
def check(
    name: NameArg,
    as_json: Json = False,
    inventory: Inventory = None,
) -> None:
    """Connect to a device and report its arch, Python, runtimes, free disk and memory."""
    import dataclasses

    from edgepack.device import inventory as inv
    from edgepack.device.connect import open_transport
    from edgepack.device.probe import probe

    device = inv.get_device(name, inventory)
    with open_transport(device) as transport:
        info = probe(transport)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(info), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{plain(device.name)} ({plain(device.describe())})", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("system", plain(f"{info.system} {info.release} ({info.arch}, {info.cpu_count or '?'} CPUs)"))
    table.add_row("python", plain(f"{info.python} ({info.python_path})"))
    table.add_row("workdir", plain(info.workdir))
    table.add_row("reached", plain(info.way))
    table.add_row("push", _PUSH_METHODS.get(info.push_method, plain(info.push_method)))
    table.add_row("free disk", _size(info.disk_free_bytes))
    table.add_row("free memory", f"{_size(info.memory_available_bytes)} of {_size(info.memory_total_bytes)}")
    for rt in info.runtimes:
        value = f"[green]{plain(rt.version)}[/]" if rt.ok else f"[red]not usable[/] ({plain(rt.error)})"
        table.add_row(plain(rt.name), value)
    console.print(table)


_PUSH_METHODS = {
    "copy": "copy (this machine)",
    "sftp": "sftp",
    "exec": "exec (no SFTP on the device: files go through its shell, checked with sha256)",
}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
