"""Device groups in the inventory (`groups:` in devices.yaml) and `edgepack devices group`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.errors import DeviceError

runner = CliRunner()


@pytest.fixture
def path(tmp_path):
    path = tmp_path / "devices.yaml"
    for name in ("pi4", "pi5", "orin"):
        inv.add_device(inv.make_device(name=name, host=f"{name}.lan"), path)
    return path


def test_a_group_is_written_on_one_line_and_expands_to_its_devices(path):
    inv.load_inventory(path).set_group("lab", ["pi4", "orin", "pi4"])
    assert "groups:\n  lab: [pi4, orin]\n" in path.read_text()
    store = inv.load_inventory(path)
    assert store.groups() == {"lab": ["pi4", "orin"]}
    assert store.resolve(["pi5", "lab", "local", "pi4"]) == ["pi5", "pi4", "orin", "local"]


def test_an_inventory_without_groups_still_loads(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("# mine\ndevices:\n  pi4:\n    host: 10.0.0.2\n")
    assert inv.load_inventory(path).groups() == {}
    assert inv.resolve_devices(["pi4"], path) == ["pi4"]


def test_unknown_names_suggest_devices_and_groups(path):
    inv.load_inventory(path).set_group("lab", ["pi4"])
    with pytest.raises(DeviceError, match="unknown device 'labb'") as exc:
        inv.resolve_devices(["labb"], path)
    assert "lab" in exc.value.hint


@pytest.mark.parametrize(
    "groups, message",
    [
        ("groups:\n  lab: [pi4, pi6]\n", r":4:3: groups.lab: unknown device 'pi6' \(did you mean 'pi4'\?\)"),
        ("groups:\n  pi4: [pi4]\n", r":4:3: groups.pi4: 'pi4' is already a device's name"),
        ("groups:\n  lab: pi4\n", r":4:3: groups.lab: must be a list of device names"),
        ("groups: [pi4]\n", r":3:1: groups: must be a mapping"),
        ("gruops:\n  lab: [pi4]\n", r":3:1: unknown key 'gruops' \(did you mean 'groups'\?\)"),
    ],
)
def test_bad_groups_point_at_the_line(tmp_path, groups, message):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  pi4: {host: 10.0.0.2}\n" + groups)
    with pytest.raises(DeviceError, match=message):
        inv.load_inventory(path)


def test_removing_a_device_takes_it_out_of_its_groups(path):
    store = inv.load_inventory(path)
    store.set_group("lab", ["pi4", "orin"])
    store.set_group("solo", ["pi5"])
    inv.remove_device("orin", path)
    inv.remove_device("pi5", path)
    assert inv.load_inventory(path).groups() == {"lab": ["pi4"]}


def test_devices_group_command_sets_shows_and_deletes(path):
    result = runner.invoke(app, ["devices", "group", "lab", "pi4", "pi5", "--inventory", str(path)])
    assert result.exit_code == 0 and "group lab: pi4, pi5" in result.output
    assert "lab: pi4, pi5" in runner.invoke(app, ["devices", "group", "lab", "--inventory", str(path)]).output
    assert "group lab: pi4, pi5" in runner.invoke(app, ["devices", "list", "--inventory", str(path)]).output
    result = runner.invoke(app, ["devices", "group", "lab", "pi4", "nope", "--inventory", str(path)])
    assert result.exit_code == 2 and "unknown device 'nope'" in result.output
    result = runner.invoke(app, ["devices", "group", "lab", "--delete", "--inventory", str(path)])
    assert result.exit_code == 0 and "deleted group lab" in result.output
    assert "groups" not in path.read_text()
    result = runner.invoke(app, ["devices", "group", "lab", "--inventory", str(path)])
    assert result.exit_code == 2 and "no group 'lab'" in result.output
